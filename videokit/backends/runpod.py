"""The RunPod backend: jobs on RunPod serverless endpoints, or on anything speaking the same API
(``videokit serve`` on your own GPU).

One job, from the client's side: validate the request (the wire models), move large inputs to S3 and
ask for outputs by presigned URL when storage is configured, ``POST run``, report the job id to the
pipeline *before* waiting (the manifest records it, so a resumed render re-attaches instead of
paying again), then poll ``status`` until the job ends, within a queue deadline and an execution
deadline.

Transient failures are handled at two levels. Each HTTP request goes through
:class:`~videokit.backends.retry.RetryPolicy` (transport errors, 408/429/5xx, Retry-After): status
reads, which are safe to repeat, are retried until the job's own deadline; ``run``, which creates a
job each time it gets through, a bounded number of times. Each job is resubmitted a bounded number
of times when it failed for a reason another worker may not hit (CUDA out of memory, a lost worker,
a result that expired); a FAILED job is resubmitted with ``retry/{id}`` (same id, input not sent
again) where the endpoint allows it.

Credentials, chosen per request from the host it goes to: ``RUNPOD_API_KEY`` is sent only to
RunPod's own API, ``https://api.runpod.ai`` (the default base URL). A request to any other host you
configured (arguments, environment, ``videokit.toml``: a self-hosted ``videokit serve``) carries
``VIDEOKIT_SERVE_API_KEY`` when it is set, the key ``videokit serve --api-key`` checks, and
otherwise no ``Authorization`` header at all. A host that only a story file names (its
``endpoints:`` URL or ``base_url``) gets no key: a story may come from anyone. So a story cannot
send either key to a host it names, and a mixed setup (edit on RunPod, animate on your own GPU)
sends each host only its own key. Redirects are not followed. RunPod's API over plain
http is refused (ConfigError).

Whenever the client stops waiting on a job that has not ended (Ctrl-C, a deadline, a job stuck in
the queue, a status that cannot be read), it cancels the remote job first, within a short deadline
of its own, then reads the job's final status once to learn what it cost. Every attempt and its cost
is recorded in ``ctx.attempts``; where the endpoint never reported an execution time the cost is
the client's estimate from what it observed (``cost_estimated``). A job stuck in the queue is
submitted again only once its cancel is confirmed: otherwise both could run, so the job is left as
it was last seen (IN_QUEUE) and a JobTimeoutError says so; a later render re-attaches to it.

Re-attaching (``ctx.resume_job_id``) to a job of an earlier render that is found CANCELLED, FAILED,
TIMED_OUT or gone submits it again (a new attempt): that job was typically cancelled by the earlier
render's Ctrl-C. Only a job seen alive during *this* render's wait and then cancelled by someone
else raises :class:`~videokit.errors.JobCancelledError`.

One backend object may serve several event loops (``Pipeline.run()`` twice, Jupyter cells, a
script's several ``asyncio.run()`` calls): what is bound to a loop (the HTTP client and its
connections, the events that wake polling jobs) is kept per loop. A client can only be closed from
its own loop: ``aclose()`` closes the running loop's; the pipeline calls it for backends it created,
and a loop ended by ``asyncio.run()`` closes its client as it shuts down. A backend you create
yourself and drive from loops you manage, close with ``await backend.aclose()`` in each loop that
used it; a client left open by a loop that has ended is dropped with a warning.

Generator handlers may stream progress: chunks like ``{"progress": 0.4, "message": "denoising"}``
are surfaced through ``ctx.on_progress`` when the endpoint has ``stream=True`` (polls then go to
``stream/{id}`` instead of ``status/{id}``, no extra requests).

What the polls see is surfaced through ``ctx.on_status``, on changes only: IN_PROGRESS is
``running``; IN_QUEUE is ``queued``, or ``cold_start`` when the endpoint has no worker up to take
the job (from its ``health``, read at most every 15 s per stage and only while a job of that
stage waits in the queue; see :func:`_state_in_queue`). With a learned job length the first poll
comes near the job's expected end, so nothing is reported before it: no poll is added for the
display's sake.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import ValidationError

from videokit.backends.base import Backend, JobAttempt, JobContext, JobState, Stage
from videokit.backends.retry import RetryPolicy, is_retryable_status
from videokit.config import Secret
from videokit.costs import CostModel
from videokit.errors import (
    ConfigError,
    EndpointError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
)
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "RUNPOD_API_HOST",
    "RUNSYNC_PAYLOAD_LIMIT",
    "RUN_PAYLOAD_LIMIT",
    "Endpoint",
    "EndpointHealth",
    "RunPodBackend",
    "RunPodConfig",
    "endpoint_notes",
    "host_origin",
    "is_runpod_hosted",
    "is_transient_job_error",
]

log = logging.getLogger("videokit.runpod")

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
# The only host that ever sees RUNPOD_API_KEY (over https): see the module docstring.
RUNPOD_API_HOST = "api.runpod.ai"
# RunPod documents "10 MB" for /run and "20 MB" for /runsync without saying which megabyte; the
# decimal one is the smaller, so that is the limit we hold ourselves to.
RUN_PAYLOAD_LIMIT = 10_000_000
RUNSYNC_PAYLOAD_LIMIT = 20_000_000
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
_ALIVE_STATES = frozenset({"IN_QUEUE", "IN_PROGRESS", "RUNNING"})
# While a job waits IN_QUEUE, the endpoint's health says whether that is a queue or a cold start.
# Read at most this often per stage (a cold start lasts about a minute: a few reads at most), and
# each read is bounded, so it never holds up polling for long.
_HEALTH_MAX_AGE_S = 15.0
_HEALTH_TIMEOUT_S = 2.0
_TRANSIENT_MARKERS = (
    "cuda out of memory",
    "outofmemoryerror",
    "worker lost",
    "worker exited",
    "worker died",
    "worker was terminated",
    "pod terminated",
    "connection reset",
    "no space left on device",
    "temporarily unavailable",
)
_S3_HINT = (
    "configure S3/R2 storage so large inputs travel by presigned URL: set VIDEOKIT_S3_BUCKET, "
    "VIDEOKIT_S3_ACCESS_KEY_ID and VIDEOKIT_S3_SECRET_ACCESS_KEY (plus VIDEOKIT_S3_ENDPOINT_URL "
    "for R2); or use smaller input images"
)

R = TypeVar("R", EditResult, AnimateResult)


@dataclass(frozen=True)
class Endpoint:
    """One serverless endpoint: its id, the GPU pool it bills at, and jobs to run at once.

    ``id`` is a RunPod endpoint id, or the full URL of an endpoint root such as
    ``http://gpu-box:8001/v2/edit`` (``videokit serve`` runs one worker per server, so the two
    stages of a self-hosted setup live at different addresses). ``bill_delay``: the endpoint's
    ``delayTime`` (cold starts) is billed too, see :mod:`videokit.costs`. ``stream``: poll
    ``stream/{id}`` and surface a generator handler's progress chunks.
    """

    id: str
    gpu: str = "ADA_80_PRO"
    concurrency: int = 4
    model: str | None = None
    bill_delay: bool = False
    stream: bool = False

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


@dataclass(frozen=True)
class RunPodConfig:
    """Deadlines and retry settings; from the CLI they come from ``VIDEOKIT_*`` variables or
    ``videokit.toml`` (see :mod:`videokit.config`), whose names the error hints give."""

    api_key: Secret | None  # RUNPOD_API_KEY: sent to RunPod's API host only
    endpoints: Mapping[Stage, Endpoint]
    base_url: str = DEFAULT_BASE_URL
    # VIDEOKIT_SERVE_API_KEY: what `videokit serve --api-key` checks; sent to every other host
    # but those in story_hosts.
    serve_api_key: Secret | None = None
    # Origins (see host_origin) that only a story file named: a story may come from anyone, so
    # they are sent no key at all. Hosts the user configured (arguments, environment, config
    # file) are not in it, even when a story names them too.
    story_hosts: frozenset[str] = frozenset()
    queue_timeout_s: float = 600.0  # stuck IN_QUEUE this long: cancel and resubmit
    execution_timeout_s: float = 900.0  # sent as policy.executionTimeout, enforced here too
    ttl_s: float = 3600.0  # policy.ttl: the job (and its result) is deleted after this
    job_attempts: int = 3  # submissions per job, for transient failures
    request_timeout_s: float = 30.0
    poll_min_s: float = 0.025
    poll_max_s: float = 2.0
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
        for stage, endpoint in self.endpoints.items():
            try:
                url = httpx.URL(endpoint.url(self.base_url))
            except httpx.InvalidURL as exc:
                raise ConfigError(
                    f"the {stage} endpoint {endpoint.url(self.base_url)!r} is not a valid URL: "
                    f"{exc}",
                    hint=f"fix {_endpoint_variable(stage)} or VIDEOKIT_RUNPOD_BASE_URL",
                ) from None
            if url.host == RUNPOD_API_HOST and url.scheme != "https":
                raise ConfigError(
                    f"the {stage} endpoint {endpoint.url(self.base_url)} is RunPod's API over "
                    f"{url.scheme}: RunPod serves it over https only, and the API key is never "
                    "sent in the clear",
                    hint=f"use https:// in {_endpoint_variable(stage)} or "
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

        jobs, workers = table("jobs"), table("workers")

        def count(counts: Mapping[str, Any], key: str) -> int:
            return _int_or_none(counts.get(key)) or 0

        return cls(
            in_queue=count(jobs, "inQueue"),
            in_progress=count(jobs, "inProgress"),
            completed=count(jobs, "completed"),
            failed=count(jobs, "failed"),
            retried=count(jobs, "retried"),
            idle=count(workers, "idle"),
            running=count(workers, "running"),
            initializing=count(workers, "initializing"),
            ready=count(workers, "ready"),
        )


def is_runpod_hosted(url: str | httpx.URL) -> bool:
    """Whether ``url`` is RunPod's own API (``https://api.runpod.ai``): the only place the RunPod
    API key is sent. A self-hosted ``videokit serve`` or any other host is not."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return (
        parsed.scheme == "https" and parsed.host == RUNPOD_API_HOST and parsed.port in (None, 443)
    )


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


def is_transient_job_error(error: str) -> bool:
    """Whether a FAILED job's error is worth resubmitting (another worker may succeed)."""
    text = error.lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class _Vanished(Exception):
    """The endpoint no longer knows the job (TTL expired, or its result was dropped)."""


class _StuckInQueue(Exception):
    pass


class _IncompleteResult(Exception):
    """A COMPLETED job without a usable result: no output at all (RunPod issue #309), or an
    ``{"error": ...}`` output; ``error`` holds the latter's text."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass
class _Stats:
    requests: Counter[str] = field(default_factory=Counter)


@dataclass
class _LoopState:
    """What belongs to one event loop: the HTTP client (its connections are the loop's), and the
    events that wake jobs polling blind (an asyncio.Event binds to the loop that first waits on
    it, and fails at once in any other)."""

    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    learned: dict[Stage, asyncio.Event] = field(default_factory=dict)
    # One health read at a time per stage: jobs that see IN_QUEUE together share it.
    health_locks: dict[Stage, asyncio.Lock] = field(default_factory=dict)
    # Closes the client when the loop shuts down (see _closed_with_the_loop).
    closer: AsyncGenerator[None, None] | None = None


async def _closed_with_the_loop(client: httpx.AsyncClient) -> AsyncGenerator[None, None]:
    """Close ``client`` in its own loop when that loop shuts down, if nobody closed it before.

    An async generator started in a loop is finalised by the loop's ``shutdown_asyncgens()``,
    which ``asyncio.run()`` calls before closing it: a backend passed to ``Pipeline.run()`` (whose
    loop the caller never sees) gets its connections closed there, not left to the GC.
    """
    try:
        yield
    finally:
        await client.aclose()


@dataclass
class _Watch:
    """What this render observed of one job attempt: deadlines, re-attachment, cost estimates."""

    job_id: str
    since: float  # when this render started waiting on it (its submission, or the re-attach)
    running_since: float | None = None
    last_state: str | None = None
    alive_seen: bool = False  # seen IN_QUEUE / IN_PROGRESS by this render
    reported: JobState | None = None  # what ctx.on_status was last told about this attempt

    def observe(self, state: str, now: float) -> None:
        self.last_state = state
        self.alive_seen = True
        if state != "IN_QUEUE" and self.running_since is None:
            self.running_since = now

    def running_s(self, now: float) -> float:
        return 0.0 if self.running_since is None else max(0.0, now - self.running_since)

    def deadline(self, config: RunPodConfig) -> float:
        """When waiting on this job must end: the queue deadline, then the execution one."""
        if self.running_since is None:
            return self.since + config.queue_timeout_s
        # The endpoint enforces executionTimeout itself; this backstop allows for a lagging one.
        return self.running_since + config.execution_timeout_s * 1.1 + 5.0


class RunPodBackend:
    """Runs edit and animate jobs on RunPod-style endpoints. See the module docstring."""

    name = "runpod"

    def __init__(
        self,
        config: RunPodConfig,
        *,
        costs: CostModel | None = None,
        storage: Any | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        # An unknown GPU pool is a ConfigError here, not a silent $0 later.
        self.costs = costs or CostModel(
            gpu={stage: ep.gpu for stage, ep in config.endpoints.items()},
            bill_delay={stage: ep.bill_delay for stage, ep in config.endpoints.items()},
        )
        self.storage = storage
        self.retry = retry or RetryPolicy(sleep=sleep, clock=clock)
        self.stats = _Stats()
        self._clock = clock
        self._sleep = sleep
        # What we learned about how long each stage's jobs run; seeds the polling schedule.
        self._expected_s: dict[Stage, float] = {}
        self._expected_exec_s: dict[Stage, float] = {}
        self._watches: dict[str, _Watch] = {}
        # Per stage: when its health was last read (our clock), and what it said (None: unknown).
        self._health: dict[Stage, tuple[float, EndpointHealth | None]] = {}
        self._transport = transport
        # Per event loop: every `Pipeline.run()` has its own, and so may a Jupyter cell.
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            self._forget_closed_loops()
            config = self.config
            client = httpx.AsyncClient(
                base_url=config.base_url.rstrip("/") + "/",
                headers={"Content-Type": "application/json", "User-Agent": "videokit"},
                timeout=httpx.Timeout(config.request_timeout_s, connect=10.0),
                transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            state = self._loops[loop] = _LoopState(loop, client)
        return state

    async def _client(self) -> httpx.AsyncClient:
        state = self._loop_state()
        if state.closer is None:
            state.closer = _closed_with_the_loop(state.client)
            await anext(state.closer)  # runs to its `yield` at once: nothing to interleave with
        return state.client

    def _forget_closed_loops(self) -> None:
        # A client can only be closed from its own loop; once that loop is closed (without the
        # shutdown that asyncio.run() does), all we can do is drop it (its sockets go with the
        # garbage collector) and say so.
        for loop, state in list(self._loops.items()):
            if loop.is_closed():
                del self._loops[loop]
                if not state.client.is_closed:
                    log.warning(
                        "the RunPod backend's HTTP client of an event loop that has ended was "
                        "never closed, so its connections were left open; call `await "
                        "backend.aclose()` in the loop that used the backend (e.g. at the end "
                        "of each asyncio.run()) before using it in another"
                    )

    # -- the Backend protocol ---------------------------------------------------------------------
    def _endpoint(self, stage: Stage) -> Endpoint:
        endpoint = self.config.endpoints.get(stage)
        if endpoint is None:
            variable = f"VIDEOKIT_{stage.upper()}_ENDPOINT"
            raise ConfigError(
                f"no RunPod endpoint is configured for {stage} jobs",
                hint=f"set {variable} (or `endpoint` under [{stage}] in videokit.toml, or "
                f"`endpoints: {{{stage}: <id>}}` in the story)",
            )
        return endpoint

    def identity(self, stage: Stage) -> str:
        endpoint = self._endpoint(stage)
        return f"runpod/{endpoint.model or stage}@{endpoint.label}"

    def concurrency(self, stage: Stage) -> int:
        endpoint = self.config.endpoints.get(stage)
        return endpoint.concurrency if endpoint else 1

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        """Endpoints exist for ``stages``, and no request will be over the ``run`` payload limit
        (unless storage is configured, which moves large inputs out of the payload)."""
        for stage in stages:
            self._endpoint(stage)
        if self.storage is not None or not payload_bytes:
            return
        for stage in stages:
            bound = payload_bytes.get(stage)  # the whole job body, envelope included
            if bound is not None:
                self._check_payload(stage, bound, upfront=True)

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        """Wake ``stage``'s endpoint with a ``{"warmup": true}`` job and wait for it to end.

        The job is reported through ``ctx`` and billed like any other; it is polled slowly. A
        warm-up is an optimisation: failures are logged, not raised, except a job stuck in the
        queue whose cancel was not confirmed (JobTimeoutError: it may still run and bill).
        Cancelling this call cancels the remote job (and records what it cost).
        """
        endpoint = self.config.endpoints.get(stage)
        if not self.config.warmup or endpoint is None:
            return
        payload = {"input": {"warmup": True}, "policy": self._policy()}
        try:
            job_id = await self._submit(
                endpoint, payload, ctx.attempts, stage=stage, estimate_s=0.0
            )
        except EndpointError as exc:
            log.info("warm-up of the %s endpoint could not be submitted: %s", stage, exc.message)
            return
        attempt = JobAttempt(job_id=job_id)
        ctx.attempts.append(attempt)
        watch = _Watch(job_id, self._clock())
        try:
            await ctx.on_submitted(job_id)
            final = await self._wait_slowly(endpoint, watch)
        except GeneratorExit:
            raise
        except _Vanished:
            self._lost(stage, attempt, watch, "the endpoint no longer knows the warm-up job")
            return
        except _StuckInQueue:
            if not await self._cancel(
                stage,
                endpoint,
                attempt,
                watch,
                error=f"warm-up still queued after {self.config.queue_timeout_s:g} s: the "
                "endpoint has no worker to wake (check its max workers)",
            ):
                raise _stuck_error(stage, job_id, self.config, warm_up=True) from None
            return
        except asyncio.CancelledError:
            await self._cancel(
                stage, endpoint, attempt, watch, error="warm-up cancelled by the client"
            )
            raise
        except BaseException as exc:
            await self._cancel(stage, endpoint, attempt, watch, error=f"warm-up: {_describe(exc)}")
            if not isinstance(exc, Exception):
                raise
            log.info("warm-up of the %s endpoint failed: %s", stage, _describe(exc))
            return
        self._account(stage, attempt, final, watch)
        attempt.error = _error_text(final.get("error")) or None

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        return await self._job("edit", request, ctx, EditResult)

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        return await self._job("animate", request, ctx, AnimateResult)

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop (each loop that used this backend has
        its own: close it in that loop). The pipeline does this for backends it created; close a
        backend you pass in yourself, in the loop that used it. It can be used again afterwards."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        self._forget_closed_loops()
        if state is not None:
            if state.closer is not None:
                await state.closer.aclose()  # its `finally` closes the client
            await state.client.aclose()

    # -- more of RunPod's API ---------------------------------------------------------------------
    async def health(self, stage: Stage, *, timeout_s: float = 5.0) -> EndpointHealth:
        """``GET health`` of ``stage``'s endpoint (retried within ``timeout_s``)."""
        endpoint = self._endpoint(stage)
        try:
            response = await self._call(
                "health",
                "GET",
                endpoint.path("health"),
                deadline=self._clock() + timeout_s,
                timeout=timeout_s,
            )
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"the {stage} endpoint {endpoint.id} did not answer `health`: {_describe(exc)}",
                status=_status_of(exc),
                hint=f"check {_endpoint_variable(stage)} and your network",
            ) from None
        _raise_for_refusal(response, endpoint, stage, "health", self.config.story_hosts)
        return EndpointHealth.parse(_json(response))

    async def readiness(self, stages: Iterable[Stage]) -> dict[Stage, EndpointHealth]:
        """Health of every stage's endpoint, read in parallel; raises EndpointError when one is
        unreachable or refuses the key."""
        wanted = list(dict.fromkeys(stages))
        answers = await asyncio.gather(*(self.health(stage) for stage in wanted))
        return dict(zip(wanted, answers, strict=True))

    async def purge_queue(self, stage: Stage) -> int:
        """``POST purge-queue``: delete every job still queued on ``stage``'s endpoint.

        Never called automatically: the queue is the endpoint's, shared by everyone who submits
        to it, and purging deletes their jobs too. Returns how many jobs were removed.
        """
        endpoint = self._endpoint(stage)
        try:
            response = await self._call("purge", "POST", endpoint.path("purge-queue"), {})
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"could not purge the queue of {endpoint.id}: {_describe(exc)}",
                status=_status_of(exc),
            ) from None
        _raise_for_refusal(response, endpoint, stage, "purge-queue", self.config.story_hosts)
        return _int_or_none(_json(response).get("removed")) or 0

    async def runsync(
        self, stage: Stage, job_input: Mapping[str, Any], *, wait_s: float = 90.0
    ) -> dict[str, Any]:
        """``POST runsync?wait=``: submit and wait server-side, for scripts and one-off calls.

        Renders do not use it: the job id only comes back with the answer, so it could not be
        recorded before waiting, and a cancelled call could not cancel its job. Returns the status
        object (``output`` when it completed within ``wait_s``; else poll ``status`` yourself).
        """
        endpoint = self._endpoint(stage)
        payload = {"input": dict(job_input), "policy": self._policy()}
        size = len(json.dumps(payload).encode())
        if size > RUNSYNC_PAYLOAD_LIMIT:
            raise ConfigError(
                f"the {stage} request is {size / 1e6:.1f} MB, over RunPod's 20 MB limit for "
                "/runsync",
                hint=_S3_HINT,
            )
        wait_ms = min(max(int(wait_s * 1000), 1000), 300_000)
        try:
            response = await self._call(
                "runsync",
                "POST",
                endpoint.path(f"runsync?wait={wait_ms}"),
                payload,
                attempts=1,  # not idempotent, and the id of a lost answer is unknown
                timeout=wait_ms / 1000 + self.config.request_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"runsync on {endpoint.id} failed: {_describe(exc)}", status=_status_of(exc)
            ) from None
        _raise_for_refusal(response, endpoint, stage, "runsync", self.config.story_hosts)
        return _json(response)

    async def stream(self, stage: Stage, job_id: str) -> tuple[str, list[Any]]:
        """``GET stream/{id}``: the job's status and the chunks its generator yielded since the
        previous call."""
        return await self._stream(self._endpoint(stage), job_id)

    # -- one job ----------------------------------------------------------------------------------
    def _policy(self) -> dict[str, int]:
        return {
            "executionTimeout": int(self.config.execution_timeout_s * 1000),
            "ttl": int(self.config.ttl_s * 1000),
        }

    def _check_payload(self, stage: Stage, size: int, *, upfront: bool = False) -> None:
        if size <= RUN_PAYLOAD_LIMIT:
            return
        what = "this render's" if upfront else "this"
        raise ConfigError(
            f"{what} {stage} jobs need a request body of up to {size / 1e6:.1f} MB (media inline "
            f"as base64), over RunPod's 10 MB limit for /run payloads, and no storage is "
            "configured",
            hint=_S3_HINT,
        )

    def _estimate_s(self, stage: Stage, request: EditRequest | AnimateRequest) -> float:
        learned = self._expected_exec_s.get(stage)
        return learned if learned is not None else self.costs.estimate_seconds(request)

    async def _job(
        self,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        ctx: JobContext,
        result_type: type[R],
    ) -> R:
        cfg = self.config
        endpoint = self._endpoint(stage)
        estimate = self._estimate_s(stage, request)
        resume = ctx.resume_job_id
        # Built on the first submission only: a re-attached job that completes needs no payload,
        # and its attempt is on ctx.attempts before anything here awaits (storage uploads take a
        # while, and a Ctrl-C during them must still find the job recorded).
        prepared: dict[str, Any] | None = None

        async def payload() -> dict[str, Any]:
            nonlocal prepared
            if prepared is None:
                wire = await self._prepare(stage, request)
                body = {
                    "input": wire.model_dump(mode="json", exclude_none=True),
                    "policy": self._policy(),
                }
                if self.storage is None:  # backstop of check()
                    self._check_payload(stage, len(json.dumps(body).encode()))
                prepared = body
            return prepared

        submissions = 0
        failures: list[str] = []
        retry_in_place: str | None = None  # a transiently FAILED job, resubmitted under its id
        while True:
            reattached = resume is not None
            if resume is not None:
                job_id, resume = resume, None
            else:
                if submissions >= cfg.job_attempts:
                    break
                submissions += 1
                retried = None
                if retry_in_place is not None:
                    retried = await self._retry(
                        endpoint, retry_in_place, ctx.attempts, stage=stage, estimate_s=estimate
                    )
                    retry_in_place = None
                job_id = retried or await self._submit(
                    endpoint, await payload(), ctx.attempts, stage=stage, estimate_s=estimate
                )
            attempt = JobAttempt(job_id=job_id)
            ctx.attempts.append(attempt)
            watch = _Watch(job_id, self._clock())
            self._watches[job_id] = watch
            try:
                await ctx.on_submitted(job_id)
                final = await self._wait(stage, endpoint, job_id, ctx)
            except GeneratorExit:
                raise  # the coroutine is being closed: it cannot await a cancel any more
            except _Vanished:
                why = (
                    "gone when re-attaching (an earlier render's job whose ttl or result expired)"
                    if reattached and not watch.alive_seen
                    else "the endpoint no longer knows this job (ttl or result expired)"
                )
                self._lost(stage, attempt, watch, why)
                failures.append(why)
                continue
            except _StuckInQueue:
                why = f"still queued after {cfg.queue_timeout_s:g} s"
                if not await self._cancel(
                    stage, endpoint, attempt, watch, error=f"{why}; cancelled"
                ):
                    # It may still start: a second submission could run (and bill) both.
                    raise _stuck_error(stage, job_id, cfg) from None
                failures.append(why)
                continue
            except asyncio.CancelledError:
                await self._cancel(stage, endpoint, attempt, watch, error="cancelled by the client")
                raise
            except JobTimeoutError:
                await self._cancel(
                    stage,
                    endpoint,
                    attempt,
                    watch,
                    error="ran past the client's execution deadline; cancelled",
                    status="TIMED_OUT",
                )
                raise
            except BaseException as exc:
                # Whatever made us stop waiting, a job left running keeps billing: cancel it.
                await self._cancel(stage, endpoint, attempt, watch, error=_describe(exc))
                raise
            finally:
                self._watches.pop(job_id, None)
            self._account(stage, attempt, final, watch)
            status = attempt.status
            if status == "COMPLETED":
                try:
                    result = await self._result(final.get("output"), result_type)
                except _IncompleteResult as exc:
                    attempt.error = str(exc)
                    failures.append(str(exc))
                    if exc.error is not None and not is_transient_job_error(exc.error):
                        # The handler rejected the job: running it again would fail (and bill)
                        # the same way.
                        raise JobFailedError(
                            f"the {stage} job {job_id} failed: {exc.error}",
                            job_id=job_id,
                            scene=ctx.scene,
                            hint="the worker rejected this job; fix the input and render again",
                        ) from None
                    continue  # lost output or a transient error: another run may succeed
                if attempt.execution_ms is not None:
                    self._learn(stage, attempt.execution_ms, attempt.delay_ms or 0)
                return result
            error = _error_text(final.get("error"))
            attempt.error = error or None
            if reattached and not watch.alive_seen:
                # An earlier render's job, typically cancelled by its Ctrl-C: run it afresh.
                attempt.error = (
                    f"found {status} when re-attaching"
                    + (f" ({error})" if error else "")
                    + "; submitting it again"
                )
                failures.append(attempt.error)
                continue
            if status == "TIMED_OUT":
                raise JobTimeoutError(
                    f"the {stage} job {job_id} ran past the endpoint's execution timeout "
                    f"({cfg.execution_timeout_s:g} s)",
                    job_id=job_id,
                    hint="raise VIDEOKIT_EXECUTION_TIMEOUT (execution_timeout in videokit.toml), "
                    "or lower frames/resolution",
                )
            if status == "CANCELLED":
                raise JobCancelledError(
                    f"the {stage} job {job_id} was cancelled on the endpoint while this render "
                    "waited for it",
                    hint="someone cancelled it (RunPod console, API, a purge); render again to "
                    "submit it anew",
                )
            failures.append(error or status)
            if not is_transient_job_error(error):
                raise JobFailedError(
                    f"the {stage} job {job_id} failed: {error or status}",
                    job_id=job_id,
                    scene=ctx.scene,
                    hint="the worker rejected this job; fix the input and render again",
                )
            log.info("job %s failed transiently (%s), submission %d", job_id, error, submissions)
            retry_in_place = job_id
        raise JobFailedError(
            f"the {stage} job failed {len(failures)} times: " + "; ".join(dict.fromkeys(failures)),
            scene=ctx.scene,
            transient=True,
            hint="the endpoint may be overloaded or misconfigured; check its workers and logs "
            "(VIDEOKIT_JOB_ATTEMPTS sets how many submissions a job gets)",
        )

    async def _prepare(self, stage: Stage, request: EditRequest | AnimateRequest) -> Any:
        """Move media to storage when it is configured: outputs by presigned PUT, big inputs."""
        if self.storage is None:
            return request
        storage = self.storage
        update: dict[str, Any] = {}
        if isinstance(request, AnimateRequest):
            video = await asyncio.to_thread(
                storage.output_target, "clip.mp4", content_type="video/mp4"
            )
            last = await asyncio.to_thread(
                storage.output_target, "last.png", content_type="image/png"
            )
            update["outputs"] = {"video": video, "last_frame": last}
        else:
            image = await asyncio.to_thread(
                storage.output_target, "edit.png", content_type="image/png"
            )
            update["outputs"] = {"image": image}
        if len(request.model_dump_json()) > RUN_PAYLOAD_LIMIT // 2:

            async def moved(media: MediaInput) -> MediaInput:
                if media.base64 is None:
                    return media
                data = media.decode()
                uploaded: MediaInput = await asyncio.to_thread(
                    storage.upload_input, data, content_type=_sniff(data)
                )
                return uploaded

            if isinstance(request, AnimateRequest):
                update["image"] = await moved(request.image)
            else:
                update["images"] = [await moved(m) for m in request.images]
        return request.model_copy(update=update)

    async def _result(self, output: Any, result_type: type[R]) -> R:
        if isinstance(output, list):
            # A generator handler's aggregated stream: progress chunks, then the result.
            results = [c for c in output if isinstance(c, dict) and c and not _is_progress(c)]
            output = results[-1] if results else None
        if not isinstance(output, dict) or not output:
            raise _IncompleteResult("the job COMPLETED without an output")
        if "error" in output:
            error = _error_text(output["error"])
            raise _IncompleteResult(f"the job COMPLETED with an error: {error}", error)
        try:
            result = result_type.model_validate(output)
        except ValidationError as exc:
            raise EndpointError(
                f"the endpoint's output does not match the {result_type.__name__} contract: "
                f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}",
                hint="the endpoint runs a worker of another version; redeploy it",
            ) from None
        fields = {name: getattr(result, name, None) for name in ("video", "last_frame", "image")}
        update: dict[str, MediaOutput] = {}
        for name, media in fields.items():
            if isinstance(media, MediaOutput) and media.base64 is None:
                if self.storage is None:
                    raise EndpointError(
                        "the endpoint uploaded an output, but no storage is configured here"
                    )
                data = await asyncio.to_thread(self.storage.download, media)
                update[name] = MediaOutput.inline(data, media.content_type)
        return result.model_copy(update=update) if update else result

    # -- accounting -------------------------------------------------------------------------------
    def _account(
        self, stage: Stage, attempt: JobAttempt, body: Mapping[str, Any], watch: _Watch
    ) -> None:
        """Record a job's final status on its attempt, with its cost."""
        attempt.status = str(body.get("status"))
        attempt.execution_ms = _int_or_none(body.get("executionTime"))
        attempt.delay_ms = _int_or_none(body.get("delayTime"))
        self._price(stage, attempt, watch)

    def _price(self, stage: Stage, attempt: JobAttempt, watch: _Watch) -> None:
        if attempt.execution_ms is not None:
            seconds = attempt.execution_ms / 1000
            attempt.cost_estimated = False
        else:
            # The endpoint never said: what we saw it run is the best estimate we have.
            seconds = watch.running_s(self._clock())
            attempt.cost_estimated = True
        attempt.cost_usd = self.costs.cost(stage, seconds, (attempt.delay_ms or 0) / 1000)

    def _lost(self, stage: Stage, attempt: JobAttempt, watch: _Watch, why: str) -> None:
        attempt.status = "LOST"
        attempt.error = why
        self._price(stage, attempt, watch)

    def _learn(self, stage: Stage, execution_ms: int, delay_ms: int) -> None:
        seconds = (execution_ms + delay_ms) / 1000
        previous = self._expected_s.get(stage)
        self._expected_s[stage] = seconds if previous is None else 0.7 * previous + 0.3 * seconds
        run = execution_ms / 1000
        known = self._expected_exec_s.get(stage)
        self._expected_exec_s[stage] = run if known is None else 0.7 * known + 0.3 * run
        if previous is None:
            self._loop_state().learned.setdefault(stage, asyncio.Event()).set()

    async def _nap(self, stage: Stage, seconds: float, informed: bool) -> None:
        """Sleep; a job polling blind is woken early when a sibling teaches us the job length."""
        if informed:
            await self._sleep(seconds)
            return
        learned = self._loop_state().learned.setdefault(stage, asyncio.Event())
        if learned.is_set():
            return
        nap = asyncio.ensure_future(self._sleep(seconds))
        wake = asyncio.ensure_future(learned.wait())
        try:
            finished, _ = await asyncio.wait({nap, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            wake.cancel()
        for task in finished:
            task.result()  # a wait that failed must raise, not end the nap early (a busy loop)

    # -- polling ----------------------------------------------------------------------------------
    async def _wait(
        self, stage: Stage, endpoint: Endpoint, job_id: str, ctx: JobContext
    ) -> dict[str, Any]:
        """Poll until the job ends, adding little latency without hammering the API.

        From what earlier jobs of this stage took (the server's delayTime + executionTime), sleep
        until shortly before this one should end, then poll at short, growing intervals. Without
        history, poll at growing intervals from the start.
        """
        cfg = self.config
        watch = self._watches.setdefault(job_id, _Watch(job_id, self._clock()))
        interval = cfg.poll_min_s
        expected = self._expected_s.get(stage)
        if expected is not None:
            await self._sleep(max(0.0, expected - self._margin(expected)))
        while True:
            if endpoint.stream:
                state, chunks = await self._stream(endpoint, job_id)
                for chunk in chunks:
                    if _is_progress(chunk):
                        message = chunk.get("message")
                        ctx.on_progress(
                            min(1.0, max(0.0, float(chunk["progress"]))),
                            str(message) if message is not None else None,
                        )
                if state in FINAL_STATES:
                    # `stream` carries neither the output nor the timings: one status read does.
                    return await self._status(endpoint, job_id)
            else:
                status = await self._status(endpoint, job_id)
                state = str(status.get("status"))
                if state in FINAL_STATES:
                    return status
            now = self._clock()
            first_run = watch.running_since is None and state != "IN_QUEUE"
            watch.observe(state, now)
            elapsed = now - watch.since
            if state == "IN_QUEUE":
                if elapsed > cfg.queue_timeout_s:
                    raise _StuckInQueue(job_id)
                if ctx.watches_status:  # a health read only someone who listens needs
                    self._report(watch, ctx, await self._queue_state(stage))
                    now = self._clock()  # the read took a moment: the schedule below counts it
                    elapsed = now - watch.since
            else:
                self._report(watch, ctx, "running")
                if first_run:
                    ctx.on_progress(0.0, "running")
                if now > watch.deadline(cfg):
                    raise JobTimeoutError(
                        f"the {stage} job {job_id} is still running after "
                        f"{cfg.execution_timeout_s:g} s",
                        job_id=job_id,
                        hint="raise VIDEOKIT_EXECUTION_TIMEOUT (execution_timeout in "
                        "videokit.toml), or lower frames/resolution",
                    )
            remaining = expected - elapsed if expected is not None else 0.0
            if remaining > self._margin(expected or 0.0) + cfg.poll_min_s:
                # Slower than usual to start (a queue, a cold start): sleep most of the rest.
                delay = remaining - self._margin(expected or 0.0)
                if expected:
                    ctx.on_progress(min(0.99, elapsed / expected), None)
            else:
                # Never wait longer than a fraction of what the job has taken so far: the
                # latency we add stays proportional, and requests grow only logarithmically.
                delay = interval
                if expected is not None and elapsed < expected * 1.2:
                    # Around the expected end: short polls, scaled to the job's length.
                    cap = max(cfg.poll_min_s, self._margin(expected) / 3)
                else:
                    cap = max(cfg.poll_min_s, 0.1 * elapsed)
                interval = min(cfg.poll_max_s, interval * 1.4, cap)
            await self._nap(stage, delay, informed=expected is not None)

    def _report(self, watch: _Watch, ctx: JobContext, state: JobState) -> None:
        """Tell ``ctx.on_status`` where the job is, when that changed."""
        if state != watch.reported:
            watch.reported = state
            ctx.on_status(state)

    async def _queue_state(self, stage: Stage) -> JobState:
        """Whether a job of ``stage`` seen IN_QUEUE waits its turn or a cold start.

        Decided from the endpoint's ``health``, read again only when the last read is older than
        ``_HEALTH_MAX_AGE_S``, one read at a time per stage (see :func:`_state_in_queue` for
        the rule). A read that fails leaves the job ``queued``: health is for display, and a failure
        here must not fail (or delay further) the job.
        """
        lock = self._loop_state().health_locks.setdefault(stage, asyncio.Lock())
        async with lock:
            seen = self._health.get(stage)
            if seen is None or self._clock() - seen[0] >= _HEALTH_MAX_AGE_S:
                health: EndpointHealth | None
                try:
                    health = await self.health(stage, timeout_s=_HEALTH_TIMEOUT_S)
                except EndpointError as exc:
                    log.debug("health of the %s endpoint unreadable: %s", stage, exc.message)
                    health = None
                seen = self._health[stage] = (self._clock(), health)
        return _state_in_queue(seen[1])

    async def _wait_slowly(self, endpoint: Endpoint, watch: _Watch) -> dict[str, Any]:
        """Poll a job nobody waits for (a warm-up) at slowly growing intervals, same deadlines."""
        cfg = self.config
        self._watches[watch.job_id] = watch
        try:
            interval = cfg.warmup_poll_s
            while True:
                await self._sleep(interval)
                status = await self._status(endpoint, watch.job_id)
                state = str(status.get("status"))
                if state in FINAL_STATES:
                    return status
                now = self._clock()
                watch.observe(state, now)
                if state == "IN_QUEUE" and now - watch.since > cfg.queue_timeout_s:
                    raise _StuckInQueue(watch.job_id)
                if state != "IN_QUEUE" and now > watch.deadline(cfg):
                    raise JobTimeoutError(f"the warm-up job {watch.job_id} is still running")
                interval = min(cfg.warmup_poll_max_s, interval * 1.5)
        finally:
            self._watches.pop(watch.job_id, None)

    def _credential(self, url: httpx.URL) -> Secret | None:
        if is_runpod_hosted(url):
            return self.config.api_key
        if host_origin(url) in self.config.story_hosts:
            return None
        return self.config.serve_api_key

    def _margin(self, expected: float) -> float:
        # Wake a little early: jobs vary, and a late poll costs latency on every chained scene.
        return 0.04 + 0.02 * expected

    # -- HTTP -------------------------------------------------------------------------------------
    async def _call(
        self,
        kind: str,
        method: Literal["GET", "POST"],
        path: str,
        body: Any = None,
        on_retry: Callable[[int, BaseException, float], None] | None = None,
        *,
        attempts: int | None = None,
        deadline: float | None = None,
        max_wait_s: float | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request through the shared retry predicate; ``deadline`` is on our clock."""

        async def once() -> httpx.Response:
            self.stats.requests[kind] += 1
            client = await self._client()
            request = client.build_request(
                method,
                path,
                json=body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
            # Chosen from the URL the request really goes to, never from where it was configured
            # (a story may name any base URL). Redirects are not followed, so it stays there.
            key = self._credential(request.url)
            if key:
                request.headers["Authorization"] = f"Bearer {key.reveal()}"
            response = await client.send(request)
            if is_retryable_status(response.status_code):
                response.raise_for_status()
            return response

        return await self.retry.call(
            once,
            on_retry=on_retry,
            attempts=attempts,
            deadline=deadline,
            clock=self._clock,
            max_wait_s=max_wait_s,
        )

    async def _submit(
        self,
        endpoint: Endpoint,
        payload: Mapping[str, Any],
        attempts: list[JobAttempt] | None = None,
        *,
        stage: Stage | None = None,
        estimate_s: float = 0.0,
    ) -> str:
        def unknown(exc: BaseException) -> None:
            # The request went out and the reply was lost: the endpoint may have created a job
            # we will never hear of (RunPod has no idempotency key). Say so in the manifest, with
            # what such a job would cost if it ran (an estimate: nobody will ever report it).
            if _maybe_sent(exc) and attempts is not None:
                cost = self.costs.cost(stage, estimate_s) if stage is not None else 0.0
                attempts.append(
                    JobAttempt(
                        job_id="unknown",
                        status="UNKNOWN",
                        cost_usd=cost,
                        cost_estimated=True,
                        error=f"reply to `run` lost ({type(exc).__name__}); a job may have "
                        "been created and billed without the client seeing its id (its ttl "
                        f"of {self.config.ttl_s:g} s bounds it)",
                    )
                )

        try:
            response = await self._call(
                "run",
                "POST",
                endpoint.path("run"),
                payload,
                # Each retried try is recorded before its wait; the last one below, as we give up.
                on_retry=lambda number, exc, wait: unknown(exc),
                # Not safe to repeat, so a count. The job has no deadline yet; a Retry-After longer
                # than it may wait in the queue is capped at that.
                attempts=self.retry.attempts,
                max_wait_s=self.config.queue_timeout_s,
            )
        except httpx.HTTPError as exc:
            unknown(exc)
            raise EndpointError(
                f"could not submit a job to endpoint {endpoint.id}: {_describe(exc)}",
                status=_status_of(exc),
                hint="check the endpoint id and your network; RunPod may be down",
            ) from None
        body = _json(response)
        if response.status_code == 401:
            raise EndpointError(
                f"endpoint {endpoint.id} refused the API key (401)",
                status=401,
                hint=_key_hint(response, self.config.story_hosts),
            )
        if response.status_code >= 400 or not isinstance(body.get("id"), str):
            raise EndpointError(
                f"endpoint {endpoint.id} refused the job ({response.status_code}): "
                f"{_error_text(body.get('error')) or response.reason_phrase}",
                status=response.status_code,
                hint="check the endpoint id (VIDEOKIT_*_ENDPOINT)",
            )
        job_id: str = body["id"]
        return job_id

    async def _retry(
        self,
        endpoint: Endpoint,
        job_id: str,
        attempts: list[JobAttempt],
        *,
        stage: Stage,
        estimate_s: float,
    ) -> str | None:
        """``POST retry/{id}``: run a FAILED job again under its id, without sending its input.

        Returns the id when the job is queued again, None when the endpoint would not (then the
        caller submits afresh). Sent once: a repeated retry could run the job twice. When the
        reply was lost after the request went out, the job's status says whether it was queued
        again (or even completed: then its result is used); if it already failed again (or cannot
        be read), the retry is recorded as an UNKNOWN attempt, as a lost ``run`` reply is.
        """
        sent_unanswered = False
        try:
            response = await self._call(
                "retry", "POST", endpoint.path(f"retry/{job_id}"), {}, attempts=1
            )
            if response.status_code == 200:
                log.info("job %s retried in place", job_id)
                return job_id
        except httpx.HTTPError as exc:
            sent_unanswered = _maybe_sent(exc)
        state = None
        try:
            read = await self._call(
                "status",
                "GET",
                endpoint.path(f"status/{job_id}"),
                deadline=self._clock() + self.config.final_read_timeout_s,
            )
            state = _json(read).get("status") if read.status_code == 200 else None
        except httpx.HTTPError:
            pass
        if state in _ALIVE_STATES or (sent_unanswered and state == "COMPLETED"):
            # Queued again (a COMPLETED job was FAILED before: only the retry can have run it).
            return job_id
        if sent_unanswered:
            attempts.append(
                JobAttempt(
                    job_id=job_id,
                    status="UNKNOWN",
                    cost_usd=self.costs.cost(stage, estimate_s),
                    cost_estimated=True,
                    error="reply to `retry` lost; the job may have run (and failed) again",
                )
            )
        return None

    async def _status(self, endpoint: Endpoint, job_id: str) -> dict[str, Any]:
        return await self._read("status", endpoint, job_id)

    async def _stream(self, endpoint: Endpoint, job_id: str) -> tuple[str, list[Any]]:
        body = await self._read("stream", endpoint, job_id)
        items: list[Any] = body["stream"] if isinstance(body.get("stream"), list) else []
        chunks = [i.get("output") if isinstance(i, dict) else i for i in items]
        return str(body.get("status")), chunks

    async def _read(
        self, route: Literal["status", "stream"], endpoint: Endpoint, job_id: str
    ) -> dict[str, Any]:
        """``GET status/{id}`` or ``stream/{id}``: safe to repeat, so retried until the job's own
        deadline, never a count. A 404 is :class:`_Vanished`; anything else an EndpointError."""
        watch = self._watches.get(job_id)
        started = self._clock()
        deadline = None
        if watch is not None:
            deadline = max(watch.deadline(self.config), started + 5.0)
        path = endpoint.path(f"{route}/{job_id}")
        try:
            response = await self._call(route, "GET", path, deadline=deadline)
        except httpx.HTTPError as exc:
            phase = "queue" if watch is None or watch.running_since is None else "execution"
            raise EndpointError(
                f"could not read the {route} of job {job_id} for {self._clock() - started:.0f} s "
                f"(retried until its {phase} deadline): {_describe(exc)}",
                status=_status_of(exc),
                job_id=job_id,
                hint="the endpoint's API is failing; the job was cancelled, render again later",
            ) from None
        if response.status_code == 404:
            raise _Vanished(job_id)
        if response.status_code >= 400:
            raise EndpointError(
                f"{route} of job {job_id}: HTTP {response.status_code}",
                status=response.status_code,
                job_id=job_id,
                hint=_key_hint(response, self.config.story_hosts)
                if response.status_code == 401
                else None,
            )
        return _json(response)

    # -- cancelling -------------------------------------------------------------------------------
    async def _cancel(
        self,
        stage: Stage,
        endpoint: Endpoint,
        attempt: JobAttempt,
        watch: _Watch,
        *,
        error: str,
        status: str = "CANCELLED",
    ) -> bool:
        """Cancel the remote job, read what it cost, and record both on ``attempt``; return
        whether the job is known to be over (the cancel confirmed, or a final state seen).

        Runs to the end even while our own task is being cancelled (Ctrl-C): the cancel request is
        the point of being cancelled. Bounded by ``cancel_timeout_s`` + ``final_read_timeout_s``.
        ``attempt.status`` becomes ``status`` once the endpoint confirmed the cancel (or the final
        state the job reached first); without a confirmation it stays the last state seen, so the
        job is known to be possibly still running (a later render re-attaches to it).
        """
        work = asyncio.ensure_future(self._cancel_and_read(endpoint, attempt.job_id))
        interrupted = False
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                interrupted = True  # keep waiting: it has its own short deadlines
        confirmed, why, final = work.result()
        attempt.error = error
        ended = True
        if final is not None and str(final.get("status")) in FINAL_STATES:
            reached = str(final.get("status"))
            attempt.execution_ms = _int_or_none(final.get("executionTime"))
            attempt.delay_ms = _int_or_none(final.get("delayTime"))
            attempt.status = status if reached == "CANCELLED" else reached
        elif confirmed:
            attempt.status = status
        else:
            ended = False
            attempt.status = watch.last_state or "SUBMITTED"
            attempt.error = (
                f"{error}; the cancel was not confirmed ({why}): the job may still run, and "
                f"bill, until its executionTimeout of {self.config.execution_timeout_s:g} s"
            )
            log.warning(
                "could not cancel %s job %s (%s): it may keep running and billing until its "
                "executionTimeout (%g s); cancel it in the RunPod console",
                stage,
                attempt.job_id,
                why,
                self.config.execution_timeout_s,
            )
        self._price(stage, attempt, watch)
        if interrupted:
            raise asyncio.CancelledError
        return ended

    async def _cancel_and_read(
        self, endpoint: Endpoint, job_id: str
    ) -> tuple[bool, str, dict[str, Any] | None]:
        """(job known to be over, why not, the job's final status if it could be read).

        The status is read even when the cancel got no answer: a cancel whose reply was lost
        (a dropped connection, a timeout) usually went through, and a status of CANCELLED (or any
        final state) confirms the job is over just as well, so it is not left for the console.
        """
        cfg = self.config
        deadline = self._clock() + cfg.cancel_timeout_s
        unconfirmed = ""
        try:
            response = await asyncio.wait_for(
                self._call(
                    "cancel",
                    "POST",
                    endpoint.path(f"cancel/{job_id}"),
                    {},
                    deadline=deadline,
                    timeout=cfg.cancel_timeout_s,
                ),
                timeout=cfg.cancel_timeout_s + 0.5,  # a wall-clock bound, whatever our clock says
            )
        except Exception as exc:  # transport, timeout, or anything else: not confirmed (yet)
            if isinstance(exc, httpx.TransportError) and not _maybe_sent(exc):
                # It never reached the endpoint (cannot connect): neither would a status read,
                # and Ctrl-C should not wait for it to fail too.
                return False, _describe(exc), None
            unconfirmed = _describe(exc)
        else:
            if response.status_code == 404:
                return True, "", None  # gone: nothing left to run or bill
            if response.status_code >= 400:
                unconfirmed = f"HTTP {response.status_code}"
        try:
            read = await asyncio.wait_for(
                self._call(
                    "status",
                    "GET",
                    endpoint.path(f"status/{job_id}"),
                    deadline=self._clock() + cfg.final_read_timeout_s,
                    timeout=cfg.final_read_timeout_s,
                ),
                timeout=cfg.final_read_timeout_s + 0.5,
            )
        except Exception:  # the cancel went through (if it did); only its cost stays an estimate
            return not unconfirmed, unconfirmed, None
        if read.status_code == 404 and unconfirmed:
            return True, "", None  # gone after all
        final = _json(read) if read.status_code == 200 else None
        if unconfirmed and final is not None and str(final.get("status")) in FINAL_STATES:
            return True, "", final
        return not unconfirmed, unconfirmed, final


def endpoint_notes(backend: Backend, stages: Iterable[Stage]) -> list[str]:
    """What ``plan`` can tell about the endpoints right now (queue, warm workers): one line each.

    Reads ``health`` (read-only, a few seconds at most); empty for backends without endpoints.
    A sync wrapper for the CLI, which has no event loop of its own.
    """
    if not isinstance(backend, RunPodBackend):
        return []
    wanted = [stage for stage in dict.fromkeys(stages) if stage in backend.config.endpoints]

    async def gather() -> list[str]:
        async def one(stage: Stage) -> str:
            endpoint = backend.config.endpoints[stage]
            try:
                health = await backend.health(stage)
            except EndpointError as exc:
                return f"{stage} endpoint {endpoint.label}: unreachable ({exc.message})"
            queued = f", {health.in_queue} job(s) queued ahead" if health.in_queue else ""
            if health.workers == 0:
                return (
                    f"{stage} endpoint {endpoint.label}: no worker is up{queued}; the first job "
                    "waits for a cold start (typically 45-90 s)"
                )
            return (
                f"{stage} endpoint {endpoint.label}: {health.workers} worker(s) up "
                f"({health.idle} idle){queued}"
            )

        try:
            return list(await asyncio.gather(*(one(stage) for stage in wanted)))
        finally:
            await backend.aclose()

    return asyncio.run(gather()) if wanted else []


def _state_in_queue(health: EndpointHealth | None) -> JobState:
    """What a job waiting IN_QUEUE waits for, from its endpoint's health.

    A worker idle or ready will take it: ``queued`` (a moment's wait). No worker idle or ready, and
    one booting or none up at all: a worker has to start before it runs, ``cold_start`` (typically
    45-90 s on RunPod). Every worker busy and none booting: ``queued`` behind other jobs. Unknown
    health (unreadable): ``queued``, which is what the endpoint said.
    """
    if health is None or health.idle or health.ready:
        return "queued"
    if health.initializing or not health.running:
        return "cold_start"
    return "queued"


def _stuck_error(
    stage: Stage, job_id: str, config: RunPodConfig, *, warm_up: bool = False
) -> JobTimeoutError:
    what = f"the {stage} warm-up job" if warm_up else f"the {stage} job"
    return JobTimeoutError(
        f"{what} {job_id} is stuck in the queue (still IN_QUEUE after "
        f"{config.queue_timeout_s:g} s) and could not be cancelled: it may still start and bill "
        f"(its ttl of {config.ttl_s:g} s bounds it), so it was not submitted again",
        job_id=job_id,
        hint=(
            "the endpoint has no worker taking jobs (check its max workers and GPU availability); "
            + (
                "cancel the job in the RunPod console"
                if warm_up
                else "render again later: the next render re-attaches to this job instead of "
                "paying for another, or cancel it in the RunPod console"
            )
        ),
    )


def _raise_for_refusal(
    response: httpx.Response,
    endpoint: Endpoint,
    stage: Stage,
    route: str,
    story_hosts: frozenset[str],
) -> None:
    if response.status_code < 400:
        return
    body = _json(response)
    raise EndpointError(
        f"the {stage} endpoint {endpoint.id} refused `{route}` ({response.status_code}): "
        f"{_error_text(body.get('error')) or response.reason_phrase}",
        status=response.status_code,
        hint=_key_hint(response, story_hosts)
        if response.status_code == 401
        else f"check {_endpoint_variable(stage)}",
    )


def _key_hint(response: httpx.Response, story_hosts: frozenset[str]) -> str:
    """What to check when ``response`` is a 401: the key that was (or was not) sent there."""
    url = response.request.url
    if is_runpod_hosted(url):
        return "check RUNPOD_API_KEY (the RunPod API key, in the environment or .env)"
    if host_origin(url) in story_hosts:
        return (
            f"{host_origin(url)} is named by the story file, and hosts a story names are sent no "
            "key (a story may come from anyone); if it is your own server, name it yourself: "
            "VIDEOKIT_EDIT_ENDPOINT / VIDEOKIT_ANIMATE_ENDPOINT / VIDEOKIT_RUNPOD_BASE_URL or "
            "videokit.toml, and it gets VIDEOKIT_SERVE_API_KEY"
        )
    return (
        "check VIDEOKIT_SERVE_API_KEY: it must be the key this `videokit serve` was started "
        "with (--api-key); RUNPOD_API_KEY is only ever sent to RunPod's own API"
    )


def _maybe_sent(exc: BaseException) -> bool:
    """Whether a failed request may have reached the server (its reply was what got lost)."""
    return isinstance(exc, httpx.TransportError) and not isinstance(
        exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
    )


def _endpoint_variable(stage: Stage) -> str:
    return f"VIDEOKIT_{stage.upper()}_ENDPOINT"


def _is_progress(chunk: Any) -> bool:
    return (
        isinstance(chunk, dict)
        and isinstance(chunk.get("progress"), int | float)
        and not isinstance(chunk.get("progress"), bool)
        and set(chunk) <= {"progress", "message"}
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_text(error: Any) -> str:
    """RunPod reports errors as text, or as a JSON blob {error_type, error_message, ...}."""
    if error is None:
        return ""
    if isinstance(error, str):
        text = error
        try:
            error = json.loads(text)
        except ValueError:
            return text
    if isinstance(error, dict):
        message = error.get("error_message") or error.get("message") or error.get("error")
        kind = error.get("error_type")
        text = str(message) if message is not None else json.dumps(error)[:500]
        return f"{kind}: {text}" if kind and str(kind) not in text else text
    return str(error)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    message = getattr(exc, "message", None)
    if isinstance(message, str):
        return message
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _status_of(exc: BaseException) -> int | None:
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"
