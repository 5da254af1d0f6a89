"""Backends: where edit and animate jobs run. ``preview`` is the embedded CPU animatic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from videokit.backends.base import Backend, JobAttempt, JobContext, Stage
from videokit.config import Settings
from videokit.errors import ConfigError

if TYPE_CHECKING:
    from videokit.backends.runpod import Endpoint

__all__ = ["BACKENDS", "Backend", "JobAttempt", "JobContext", "Stage", "create_backend"]

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


def _runpod(settings: Settings) -> Backend:
    from videokit.backends.runpod import (
        DEFAULT_BASE_URL,
        Endpoint,
        RunPodBackend,
        RunPodConfig,
        is_runpod_hosted,
    )

    base_url = settings.base_url or DEFAULT_BASE_URL
    # The same cost model `plan` estimates with: GPU pools checked against the price table.
    costs = settings.cost_model()
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
