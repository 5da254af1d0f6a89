"""Backends: where edit and animate jobs run. ``preview`` is the embedded CPU animatic.

:func:`capabilities_for` says what a backend's endpoints can render without creating it (no
network, no key checks), so ``validate`` and ``plan`` can hold a story against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from videokit.backends.base import Backend, JobAttempt, JobContext, Stage
from videokit.capabilities import (
    AnimateCapabilities,
    Capabilities,
    EditCapabilities,
    intersect_animate,
    intersect_edit,
)
from videokit.config import Settings
from videokit.costs import CostModel
from videokit.errors import ConfigError

if TYPE_CHECKING:
    from videokit.backends.runpod import Endpoint

__all__ = [
    "BACKENDS",
    "Backend",
    "JobAttempt",
    "JobContext",
    "Stage",
    "capabilities_for",
    "capabilities_of",
    "create_backend",
]

BACKENDS = ("preview", "runpod")


def create_backend(name: str | None, settings: Settings) -> Backend:
    """The backend called ``name`` (default: the settings' choice, else ``preview``)."""
    name = name or settings.backend or "preview"
    if name == "preview":
        from videokit.backends.preview import PreviewBackend

        return PreviewBackend(concurrency=settings.concurrency)
    if name == "runpod":
        return _runpod(settings)
    raise ConfigError(
        f"unknown backend '{name}'",
        hint=f"choose one of: {', '.join(BACKENDS)} (set with --backend or VIDEOKIT_BACKEND)",
    )


def capabilities_for(name: str | None, settings: Settings) -> Capabilities:
    """What the backend called ``name`` (default: the settings' choice, else ``preview``) can
    render, from its configuration alone (no network, no key checks): on ``runpod``, what every
    endpoint of each stage's route can render (a Public Endpoint's, a worker's documented limits,
    a ComfyUI workflow's ``[limits]``); images travel by URL when some endpoint takes them so.
    Anything else renders what the wire protocol allows: ``Capabilities()``. A route that cannot
    be built (a workflow whose bindings are wrong) is a ConfigError here, before anything runs."""
    name = name or settings.backend or "preview"
    if name != "runpod":
        return Capabilities()
    from videokit.backends.kinds.fetch import ResultFetcher
    from videokit.backends.runpod.lanes import make_kind

    edit: list[EditCapabilities | None] = []
    animate: list[AnimateCapabilities | None] = []
    by_url = False
    fetcher = ResultFetcher()
    for stage, endpoint in _route_endpoints(settings, None):
        try:
            kind = make_kind(stage, endpoint, storage=None, fetcher=fetcher)
        except ConfigError as exc:
            if "worker-comfyui" in exc.message:
                raise  # a workflow that is wrong is refused at validate
            continue  # create_backend says what is wrong with the others
        caps = kind.capabilities
        by_url = by_url or kind.inputs_by_url
        if stage == "edit":
            edit.append(caps if isinstance(caps, EditCapabilities) else None)
        else:
            animate.append(caps if isinstance(caps, AnimateCapabilities) else None)
    return Capabilities(
        edit=intersect_edit(edit), animate=intersect_animate(animate), inputs_by_url=by_url
    )


def capabilities_of(backend: Backend) -> Capabilities:
    """What a backend object can render: from its ``capabilities(stage)`` method where it has one
    (:class:`~videokit.backends.runpod.RunPodBackend`), else ``Capabilities()``."""
    method = getattr(backend, "capabilities", None)
    if not callable(method):
        return Capabilities()
    edit, animate = method("edit"), method("animate")
    takes_urls = getattr(backend, "inputs_by_url", None)
    by_url = callable(takes_urls) and any(takes_urls(s) is True for s in ("edit", "animate"))
    return Capabilities(
        edit=edit if isinstance(edit, EditCapabilities) else None,
        animate=animate if isinstance(animate, AnimateCapabilities) else None,
        inputs_by_url=by_url,
    )


def _runpod(settings: Settings) -> Backend:
    from videokit.backends.runpod import (
        DEFAULT_BASE_URL,
        RunPodBackend,
        RunPodConfig,
        is_runpod_hosted,
    )

    base_url = settings.base_url or DEFAULT_BASE_URL
    # The same cost model `plan` estimates with: GPU pools checked against the price table, at
    # the catalog's prices when a recent `plan` cached them (no request here).
    from videokit.rest.catalog import cached_catalog

    catalog = cached_catalog(settings.environ)
    costs = settings.cost_model(catalog.prices() if catalog is not None else None)
    endpoints: dict[Stage, Endpoint] = {}
    fallbacks: dict[Stage, list[Endpoint]] = {}
    for stage, endpoint in _route_endpoints(settings, costs):
        if stage in endpoints:
            fallbacks.setdefault(stage, []).append(endpoint)
        else:
            endpoints[stage] = endpoint
    every = [*endpoints.items(), *((s, ep) for s, eps in fallbacks.items() for ep in eps)]
    # RUNPOD_API_KEY is sent to RunPod's own API only (see videokit.backends.runpod), so only
    # endpoints there need it; a self-hosted one takes VIDEOKIT_SERVE_API_KEY, if it wants one.
    on_runpod = list(
        dict.fromkeys(stage for stage, ep in every if is_runpod_hosted(ep.url(base_url)))
    )
    if settings.api_key is None and on_runpod:
        raise ConfigError(
            f"the runpod backend needs an API key for the {' and '.join(on_runpod)} endpoint(s) "
            "on RunPod, and RUNPOD_API_KEY is not set",
            hint="export RUNPOD_API_KEY=... (or put it in .env); endpoint ids go in "
            "VIDEOKIT_EDIT_ENDPOINT and VIDEOKIT_ANIMATE_ENDPOINT (or videokit.toml); a "
            "self-hosted `videokit serve` endpoint is a full URL (its key: VIDEOKIT_SERVE_API_KEY)",
        )
    # Deadlines and retry settings left unset keep RunPodConfig's defaults.
    overrides = {
        name: value
        for name, value in (
            ("queue_timeout_s", settings.queue_timeout_s),
            ("execution_timeout_s", settings.execution_timeout_s),
            ("ttl_s", settings.ttl_s),
            ("job_attempts", settings.job_attempts),
            ("warmup", settings.warmup),
        )
        if value is not None
    }
    config = RunPodConfig(
        api_key=settings.api_key,
        serve_api_key=settings.serve_api_key,
        story_hosts=_story_hosts(settings, every, base_url),
        endpoints=endpoints,
        fallbacks={stage: tuple(eps) for stage, eps in fallbacks.items()},
        base_url=base_url,
        **overrides,  # type: ignore[arg-type]
    )
    storage = None
    from videokit.storage import S3Storage, StorageConfig

    storage_config = StorageConfig.from_env(settings.environ)
    if storage_config is not None:
        storage = S3Storage(storage_config)
    return RunPodBackend(config, costs=costs, storage=storage, output_prices=settings.output_prices)


def _route_endpoints(settings: Settings, costs: CostModel | None) -> list[tuple[Stage, Endpoint]]:
    """Every stage's endpoints in order of preference, as the settings give them."""
    from videokit.backends.runpod import Endpoint

    found: list[tuple[Stage, Endpoint]] = []
    stages: tuple[Stage, ...] = ("edit", "animate")
    for stage in stages:
        for kind, endpoint_id in settings.route(stage):
            found.append(
                (
                    stage,
                    Endpoint(
                        id=endpoint_id,
                        kind=kind,
                        gpu=costs.pool(stage) if costs is not None else "ADA_80_PRO",
                        concurrency=settings.concurrency or 4,
                        bill_delay=costs.bill_delay.get(stage, False) if costs else False,
                        workflow=settings.workflows.get(stage),
                    ),
                )
            )
    return found


def _story_hosts(
    settings: Settings, endpoints: Sequence[tuple[Stage, Endpoint]], base_url: str
) -> frozenset[str]:
    """The origins only the story file named (it set the endpoint URL, or the base URL an endpoint
    id resolves against); any origin the user configured too is theirs, and keeps its key."""
    from videokit.backends.runpod import host_origin

    named: set[str] = set()
    configured: set[str] = set()
    for stage, endpoint in endpoints:
        url = endpoint.url(base_url)
        absolute = "://" in endpoint.path("")
        by_story = f"{stage}_endpoint" in settings.from_story or (
            not absolute and "base_url" in settings.from_story
        )
        (named if by_story else configured).add(host_origin(url))
    if settings.base_url and "base_url" not in settings.from_story:
        configured.add(host_origin(base_url))
    return frozenset(named - configured - {""})
