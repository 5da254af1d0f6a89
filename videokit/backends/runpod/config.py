"""Where RunPod-style endpoints are and which key each host gets: endpoints, deadlines, health.

Credentials are chosen per request from the host it goes to: ``RUNPOD_API_KEY`` is sent only to
RunPod's own API, ``https://api.runpod.ai``. Any other host you configured (a self-hosted
``videokit serve``) gets ``VIDEOKIT_SERVE_API_KEY`` when it is set, else no ``Authorization``
header. A host that only a story file names gets no key: a story may come from anyone. Redirects
are not followed, and RunPod's API over plain http is refused (ConfigError).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from videokit.backends.base import JobState, Stage
from videokit.backends.kinds import KindName, kind_name
from videokit.backends.runpod.wire import int_or_none
from videokit.config import Secret
from videokit.errors import ConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "RUNPOD_API_HOST",
    "RUNSYNC_PAYLOAD_LIMIT",
    "RUN_PAYLOAD_LIMIT",
    "Endpoint",
    "EndpointHealth",
    "RunPodConfig",
    "endpoint_variable",
    "host_origin",
    "is_https_host",
    "is_runpod_hosted",
    "state_in_queue",
]

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
RUNPOD_API_HOST = "api.runpod.ai"
# RunPod documents "10 MB" for /run and "20 MB" for /runsync without saying which megabyte; the
# decimal one is the smaller, so that is the limit we hold ourselves to.
RUN_PAYLOAD_LIMIT = 10_000_000
RUNSYNC_PAYLOAD_LIMIT = 20_000_000


def endpoint_variable(stage: Stage) -> str:
    return f"VIDEOKIT_{stage.upper()}_ENDPOINT"


@dataclass(frozen=True)
class Endpoint:
    """One serverless endpoint: its id, the GPU pool it bills at, and jobs to run at once.

    ``id`` is a RunPod endpoint id (yours, or a Public Endpoint's such as ``wan-2-2-i2v-720``), or
    the full URL of an endpoint root such as ``http://gpu-box:8001/v2/edit``. ``kind`` is its API
    (see :mod:`videokit.backends.kinds`); by default the id selects it. ``bill_delay``: the
    endpoint's ``delayTime`` (cold starts) is billed too, see :mod:`videokit.costs`. ``stream``:
    poll ``stream/{id}`` and surface a generator handler's progress chunks.
    """

    id: str
    gpu: str = "ADA_80_PRO"
    concurrency: int = 4
    model: str | None = None
    bill_delay: bool = False
    stream: bool = False
    kind: KindName | None = None
    #: The ComfyUI workflow's bindings file, for a ``worker-comfyui`` endpoint.
    workflow: Path | None = None

    @property
    def api(self) -> KindName:
        return self.kind or kind_name(self.id)

    def path(self, route: str) -> str:
        """``route`` (e.g. ``run``) under this endpoint, relative to the API base or absolute."""
        if self.id.startswith(("http://", "https://")):
            return f"{self.id.rstrip('/')}/{route}"
        return f"{self.id}/{route}"

    def url(self, base_url: str, route: str = "") -> str:
        """The absolute URL of ``route`` under this endpoint, an id resolved against
        ``base_url`` (as the backend's HTTP client resolves it)."""
        path = self.path(route)
        return path if "://" in path else f"{base_url.rstrip('/')}/{path}"

    @property
    def label(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1] if "://" in self.id else self.id

    @property
    def name(self) -> str:
        """What manifests and messages call it: the id, or the URL without credentials or query
        (two self-hosted endpoints may share a label, never a name)."""
        if "://" not in self.id:
            return self.id
        try:
            url = httpx.URL(self.id)
        except httpx.InvalidURL:
            return self.label
        return str(url.copy_with(username=None, password=None, query=None, fragment=None))


@dataclass(frozen=True)
class RunPodConfig:
    """Deadlines and retry settings; from the CLI they come from ``VIDEOKIT_*`` variables or
    ``videokit.toml`` (see :mod:`videokit.config`), whose names the error hints give."""

    api_key: Secret | None  # RUNPOD_API_KEY: sent to RunPod's API host only
    endpoints: Mapping[Stage, Endpoint]
    # Per stage, the endpoints a job moves to, in order, when the one before cannot take it (see
    # videokit.backends.runpod.routing).
    fallbacks: Mapping[Stage, tuple[Endpoint, ...]] = field(default_factory=dict)
    base_url: str = DEFAULT_BASE_URL
    # VIDEOKIT_SERVE_API_KEY: what `videokit serve --api-key` checks; sent to every other host
    # but those in story_hosts.
    serve_api_key: Secret | None = None
    # Origins (see host_origin) that only a story file named: they are sent no key at all.
    story_hosts: frozenset[str] = frozenset()
    queue_timeout_s: float = 600.0  # stuck IN_QUEUE this long: cancel and resubmit
    execution_timeout_s: float = 900.0  # sent as policy.executionTimeout, enforced here too
    ttl_s: float = 3600.0  # policy.ttl: the job (and its result) is deleted after this
    job_attempts: int = 3  # submissions per job, for transient failures
    request_timeout_s: float = 30.0
    poll_min_s: float = 0.025
    poll_max_s: float = 2.0
    # The polling budget per job (see videokit.backends.runpod.schedule).
    poll_rate_per_s: float = 2.0
    poll_late_rate_per_s: float = 1.0
    poll_burst: float = 20.0
    warmup: bool = True
    # Ctrl-C must reach every in-flight job within ~2 s, while our own task is being cancelled.
    cancel_timeout_s: float = 2.0
    # After a cancel, one status read to learn what the job cost; bounded the same way.
    final_read_timeout_s: float = 2.0
    # A warm-up job is not on anyone's critical path: poll it slowly.
    warmup_poll_s: float = 0.5
    warmup_poll_max_s: float = 5.0

    def __post_init__(self) -> None:
        timings = {
            "queue_timeout_s": ("VIDEOKIT_QUEUE_TIMEOUT", self.queue_timeout_s),
            "execution_timeout_s": ("VIDEOKIT_EXECUTION_TIMEOUT", self.execution_timeout_s),
            "ttl_s": ("VIDEOKIT_TTL", self.ttl_s),
        }
        for name, (variable, value) in timings.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"{name} must be a positive number of seconds, got {value!r}",
                    hint=f"set {variable} (or {name[:-2]} in videokit.toml)",
                )
        every = [(stage, ep) for stage in self.endpoints for ep in self.route(stage)]
        for stage, endpoint in every:
            try:
                url = httpx.URL(endpoint.url(self.base_url))
            except httpx.InvalidURL as exc:
                raise ConfigError(
                    f"the {stage} endpoint {endpoint.url(self.base_url)!r} is not a valid URL: "
                    f"{exc}",
                    hint=f"fix {endpoint_variable(stage)} or VIDEOKIT_RUNPOD_BASE_URL",
                ) from None
            if url.host == RUNPOD_API_HOST and url.scheme != "https":
                raise ConfigError(
                    f"the {stage} endpoint {endpoint.url(self.base_url)} is RunPod's API over "
                    f"{url.scheme}: RunPod serves it over https only, and the API key is never "
                    "sent in the clear",
                    hint=f"use https:// in {endpoint_variable(stage)} or "
                    "VIDEOKIT_RUNPOD_BASE_URL (or leave the base unset for RunPod's default)",
                )
        if self.job_attempts < 1:
            raise ConfigError(
                f"job_attempts must be at least 1, got {self.job_attempts}",
                hint="set VIDEOKIT_JOB_ATTEMPTS (or job_attempts in videokit.toml)",
            )
        if self.ttl_s < self.execution_timeout_s:
            raise ConfigError(
                f"the job ttl ({self.ttl_s:g} s) is shorter than the execution timeout "
                f"({self.execution_timeout_s:g} s): RunPod deletes a job when its ttl runs out, "
                "even while it runs",
                hint="raise VIDEOKIT_TTL or lower VIDEOKIT_EXECUTION_TIMEOUT (ttl / "
                "execution_timeout in videokit.toml)",
            )

    def route(self, stage: Stage) -> tuple[Endpoint, ...]:
        """``stage``'s endpoints in order of preference (empty when it has none)."""
        first = self.endpoints.get(stage)
        return (first, *self.fallbacks.get(stage, ())) if first is not None else ()

    def policy(self) -> dict[str, int]:
        """The ``policy`` object sent with every job."""
        return {
            "executionTimeout": int(self.execution_timeout_s * 1000),
            "ttl": int(self.ttl_s * 1000),
        }


@dataclass(frozen=True)
class EndpointHealth:
    """``GET health``: the endpoint's queue and workers right now."""

    in_queue: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    idle: int = 0
    running: int = 0
    # RunPod's own API also counts workers that are booting and workers ready for a job; a
    # `videokit serve` has neither (its workers are always up) and leaves them 0.
    initializing: int = 0
    ready: int = 0

    @property
    def workers(self) -> int:
        return self.idle + self.running

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> EndpointHealth:
        def table(name: str) -> Mapping[str, Any]:
            value = body.get(name)
            return value if isinstance(value, dict) else {}

        def _count(value: Any) -> int:
            return int_or_none(value) or 0

        jobs, workers = table("jobs"), table("workers")
        return cls(
            in_queue=_count(jobs.get("inQueue")),
            in_progress=_count(jobs.get("inProgress")),
            completed=_count(jobs.get("completed")),
            failed=_count(jobs.get("failed")),
            retried=_count(jobs.get("retried")),
            idle=_count(workers.get("idle")),
            running=_count(workers.get("running")),
            initializing=_count(workers.get("initializing")),
            ready=_count(workers.get("ready")),
        )


def state_in_queue(health: EndpointHealth | None) -> JobState:
    """What a job waiting IN_QUEUE waits for, from its endpoint's health.

    A worker idle or ready will take it: ``queued``. No worker idle or ready, and one booting or
    none up at all: ``cold_start`` (typically 45-90 s on RunPod). Every worker busy and none
    booting: ``queued`` behind other jobs. Unknown health (unreadable): ``queued``.
    """
    if health is None or health.idle or health.ready:
        return "queued"
    if health.initializing or not health.running:
        return "cold_start"
    return "queued"


def is_https_host(url: str | httpx.URL, host: str) -> bool:
    """Whether ``url`` is ``host`` over https on its standard port: RunPod's hosts get the API
    key only that way (the job API here, the REST API in :mod:`videokit.rest.client`)."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme == "https" and parsed.host == host and parsed.port in (None, 443)


def is_runpod_hosted(url: str | httpx.URL) -> bool:
    """Whether ``url`` is RunPod's own API (``https://api.runpod.ai``): the only place the RunPod
    API key is sent. A self-hosted ``videokit serve`` or any other host is not."""
    return is_https_host(url, RUNPOD_API_HOST)


def host_origin(url: str | httpx.URL) -> str:
    """``scheme://host:port`` of ``url`` (the port spelled out), or ``""`` if it is not a URL."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return ""
    if not parsed.scheme or not parsed.host:
        return ""
    port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme)
    return f"{parsed.scheme}://{parsed.host}:{port}"
