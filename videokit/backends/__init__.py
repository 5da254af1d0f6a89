"""Backends: where edit and animate jobs run. ``preview`` is the embedded CPU animatic.

:func:`capabilities_for` says what a backend's endpoints can render without creating it (no
network, no key checks), so ``validate`` and ``plan`` can hold a story against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from videokit.backends.base import Backend, JobAttempt, JobContext, Stage
from videokit.capabilities import AnimateCapabilities, Capabilities, EditCapabilities
from videokit.config import Settings
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
    render, from its configuration alone: on ``runpod``, each stage whose endpoint id is a known
    RunPod Public Endpoint of that stage brings that endpoint's capabilities (and images then
    travel by URL). Anything else renders what the wire protocol allows: ``Capabilities()``."""
    name = name or settings.backend or "preview"
    if name != "runpod":
        return Capabilities()
    from videokit.backends.kinds import kind_name, public_model

    found: dict[Stage, EditCapabilities | AnimateCapabilities] = {}
    pairs: tuple[tuple[Stage, str | None], ...] = (
        ("edit", settings.edit_endpoint),
        ("animate", settings.animate_endpoint),
    )
    for stage, endpoint_id in pairs:
        if not endpoint_id or kind_name(endpoint_id) != "runpod-public":
            continue
        model = public_model(endpoint_id)
        if model is not None and model.stage == stage:
            found[stage] = model.capabilities
    edit, animate = found.get("edit"), found.get("animate")
    return Capabilities(
        edit=edit if isinstance(edit, EditCapabilities) else None,
        animate=animate if isinstance(animate, AnimateCapabilities) else None,
        inputs_by_url=bool(found),
    )


def capabilities_of(backend: Backend) -> Capabilities:
    """What a backend object can render: from its ``capabilities(stage)`` method where it has one
    (:class:`~videokit.backends.runpod.RunPodBackend`), else ``Capabilities()``."""
    method = getattr(backend, "capabilities", None)
    if not callable(method):
        return Capabilities()
    edit, animate = method("edit"), method("animate")
    kinds = getattr(backend, "kinds", None)
    by_url = isinstance(kinds, Mapping) and any(
        getattr(kind, "inputs_by_url", False) is True for kind in kinds.values()
    )
    return Capabilities(
        edit=edit if isinstance(edit, EditCapabilities) else None,
        animate=animate if isinstance(animate, AnimateCapabilities) else None,
        inputs_by_url=by_url,
    )


def _runpod(settings: Settings) -> Backend:
    from videokit.backends.runpod import (
        DEFAULT_BASE_URL,
        Endpoint,
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
    pairs: tuple[tuple[Stage, str | None], ...] = (
        ("edit", settings.edit_endpoint),
        ("animate", settings.animate_endpoint),
    )
    for stage, endpoint_id in pairs:
        if endpoint_id:
            endpoints[stage] = Endpoint(
                id=endpoint_id,
                gpu=costs.pool(stage),
                concurrency=settings.concurrency or 4,
                bill_delay=costs.bill_delay.get(stage, False),
            )
    # RUNPOD_API_KEY is sent to RunPod's own API only (see videokit.backends.runpod), so only
    # endpoints there need it; a self-hosted one takes VIDEOKIT_SERVE_API_KEY, if it wants one.
    on_runpod = [
        stage for stage, endpoint in endpoints.items() if is_runpod_hosted(endpoint.url(base_url))
    ]
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
        story_hosts=_story_hosts(settings, endpoints, base_url),
        endpoints=endpoints,
        base_url=base_url,
        **overrides,  # type: ignore[arg-type]
    )
    storage = None
    from videokit.storage import S3Storage, StorageConfig

    storage_config = StorageConfig.from_env(settings.environ)
    if storage_config is not None:
        storage = S3Storage(storage_config)
    return RunPodBackend(config, costs=costs, storage=storage)


def _story_hosts(
    settings: Settings, endpoints: Mapping[Stage, Endpoint], base_url: str
) -> frozenset[str]:
    """The origins only the story file named (it set the endpoint URL, or the base URL an endpoint
    id resolves against); any origin the user configured too is theirs, and keeps its key."""
    from videokit.backends.runpod import host_origin

    named: set[str] = set()
    configured: set[str] = set()
    for stage, endpoint in endpoints.items():
        url = endpoint.url(base_url)
        absolute = "://" in endpoint.path("")
        by_story = f"{stage}_endpoint" in settings.from_story or (
            not absolute and "base_url" in settings.from_story
        )
        (named if by_story else configured).add(host_origin(url))
    if settings.base_url and "base_url" not in settings.from_story:
        configured.add(host_origin(base_url))
    return frozenset(named - configured - {""})
