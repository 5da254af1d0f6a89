"""The RunPod backend: jobs on RunPod serverless endpoints, or on anything speaking the same API
(``videokit serve`` on your own GPU).

One job, from the client's side: validate the request (the wire models), move large inputs to S3 and
ask for outputs by presigned URL when storage is configured, ``POST run``, report the job id to the
pipeline *before* waiting (the manifest records it, so a resumed render re-attaches instead of
paying again), then poll ``status`` until the job ends, within a queue deadline and an execution
deadline. Transient failures are handled at two levels: each HTTP request through
:class:`~videokit.backends.retry.RetryPolicy` (transport errors, 408/429/5xx, Retry-After), and
each job by resubmitting a bounded number of times when it failed for a reason another worker may
not hit (CUDA out of memory, a lost worker, a result that expired). Every attempt and its cost is
recorded. Cancellation (Ctrl-C) and deadlines cancel the remote job before raising.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
from pydantic import ValidationError

from videokit.backends.base import JobAttempt, JobContext, Stage
from videokit.backends.retry import RetryPolicy
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
    "Endpoint",
    "RunPodBackend",
    "RunPodConfig",
    "is_transient_job_error",
]

log = logging.getLogger("videokit.runpod")

DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
RUN_PAYLOAD_LIMIT = 10 * 1024 * 1024  # RunPod refuses larger /run bodies with a 400
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
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

R = TypeVar("R", EditResult, AnimateResult)


@dataclass(frozen=True)
class Endpoint:
    """One serverless endpoint: its id, the GPU pool it bills at, and jobs to run at once.

    ``id`` is a RunPod endpoint id, or the full URL of an endpoint root such as
    ``http://gpu-box:8001/v2/edit`` (``videokit serve`` runs one worker per server, so the two
    stages of a self-hosted setup live at different addresses).
    """

    id: str
    gpu: str = "ADA_80_PRO"
    concurrency: int = 4
    model: str | None = None

    def path(self, route: str) -> str:
        """``route`` (e.g. ``run``) under this endpoint, relative to the API base or absolute."""
        if self.id.startswith(("http://", "https://")):
            return f"{self.id.rstrip('/')}/{route}"
        return f"{self.id}/{route}"

    @property
    def label(self) -> str:
        return self.id.rstrip("/").rsplit("/", 1)[-1] if "://" in self.id else self.id


@dataclass(frozen=True)
class RunPodConfig:
    api_key: Secret | None
    endpoints: Mapping[Stage, Endpoint]
    base_url: str = DEFAULT_BASE_URL
    queue_timeout_s: float = 600.0  # stuck IN_QUEUE this long: cancel and resubmit
    execution_timeout_s: float = 900.0  # sent as policy.executionTimeout, enforced here too
    ttl_s: float = 3600.0  # policy.ttl: the job (and its result) is deleted after this
    job_attempts: int = 3  # submissions per job, for transient failures
    request_timeout_s: float = 30.0
    poll_min_s: float = 0.025
    poll_max_s: float = 2.0
    warmup: bool = True


def is_transient_job_error(error: str) -> bool:
    """Whether a FAILED job's error is worth resubmitting (another worker may succeed)."""
    text = error.lower()
    return any(marker in text for marker in _TRANSIENT_MARKERS)


class _Vanished(Exception):
    """The endpoint no longer knows the job (TTL expired, or its result was dropped)."""


class _StuckInQueue(Exception):
    pass


@dataclass
class _Stats:
    requests: Counter[str] = field(default_factory=Counter)


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
        self.costs = costs or CostModel(
            gpu={stage: ep.gpu for stage, ep in config.endpoints.items()}
        )
        self.storage = storage
        self.retry = retry or RetryPolicy(sleep=sleep)
        self.stats = _Stats()
        self._clock = clock
        self._sleep = sleep
        # What we learned about how long each stage's jobs run; seeds the polling schedule.
        self._expected_s: dict[Stage, float] = {}
        # Jobs polling without that knowledge wait on this, so the first job to finish wakes its
        # siblings (jobs submitted together tend to finish together).
        self._learned: dict[Stage, asyncio.Event] = {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    @property
    def _http(self) -> httpx.AsyncClient:
        # Connections belong to the event loop that opened them, and every `Pipeline.run()` has
        # its own loop: keep one client per loop so a backend object can serve several runs.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            config = self.config
            headers = {"Content-Type": "application/json", "User-Agent": "videokit"}
            if config.api_key:
                headers["Authorization"] = f"Bearer {config.api_key.reveal()}"
            self._client = httpx.AsyncClient(
                base_url=config.base_url.rstrip("/") + "/",
                headers=headers,
                timeout=httpx.Timeout(config.request_timeout_s, connect=10.0),
                transport=self._transport,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            )
            self._client_loop = loop
        return self._client

    # -- the Backend protocol ---------------------------------------------------------------------
    def _endpoint(self, stage: Stage) -> Endpoint:
        endpoint = self.config.endpoints.get(stage)
        if endpoint is None:
            variable = f"VIDEOKIT_{stage.upper()}_ENDPOINT"
            raise ConfigError(
                f"no RunPod endpoint is configured for {stage} jobs",
                hint=f"set {variable} (or `endpoints: {{{stage}: <id>}}` in the story)",
            )
        return endpoint

    def identity(self, stage: Stage) -> str:
        endpoint = self._endpoint(stage)
        return f"runpod/{endpoint.model or stage}@{endpoint.label}"

    def concurrency(self, stage: Stage) -> int:
        endpoint = self.config.endpoints.get(stage)
        return endpoint.concurrency if endpoint else 1

    def check(self, stages: Collection[Stage]) -> None:
        for stage in stages:
            self._endpoint(stage)

    async def warm_up(self, stages: Collection[Stage]) -> None:
        """Wake endpoints with a ``{"warmup": true}`` job, so their cold starts overlap work."""
        if not self.config.warmup:
            return
        for stage in stages:
            endpoint = self.config.endpoints.get(stage)
            if endpoint is None:
                continue
            try:
                await self._submit(endpoint, {"input": {"warmup": True}, "policy": self._policy()})
            except (httpx.HTTPError, EndpointError) as exc:
                log.info("warm-up of the %s endpoint failed: %s", stage, _describe(exc))

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        return await self._job("edit", request, ctx, EditResult)

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        return await self._job("animate", request, ctx, AnimateResult)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()

    # -- one job ----------------------------------------------------------------------------------
    def _policy(self) -> dict[str, int]:
        return {
            "executionTimeout": int(self.config.execution_timeout_s * 1000),
            "ttl": int(self.config.ttl_s * 1000),
        }

    async def _job(
        self,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        ctx: JobContext,
        result_type: type[R],
    ) -> R:
        endpoint = self._endpoint(stage)
        wire = await self._prepare(stage, request)
        payload = {
            "input": wire.model_dump(mode="json", exclude_none=True),
            "policy": self._policy(),
        }
        size = len(json.dumps(payload).encode())
        if size > RUN_PAYLOAD_LIMIT:
            raise EndpointError(
                f"scene '{ctx.scene}': the {stage} job is {size / 2**20:.1f} MiB, over RunPod's "
                "10 MiB limit for a job payload",
                hint="configure S3/R2 storage (VIDEOKIT_S3_BUCKET and keys) so large inputs "
                "travel by presigned URL",
            )
        resume = ctx.resume_job_id
        failures: list[str] = []
        for attempt_number in range(1, self.config.job_attempts + 1):
            if resume is not None:
                job_id, resume = resume, None
            else:
                job_id = await self._submit(endpoint, payload, ctx.attempts)
            attempt = JobAttempt(job_id=job_id)
            ctx.attempts.append(attempt)
            await ctx.on_submitted(job_id)
            try:
                final = await self._wait(stage, endpoint, job_id, ctx)
            except _Vanished:
                attempt.status = "LOST"
                attempt.error = "the endpoint no longer knows this job (ttl or result expired)"
                failures.append(attempt.error)
                continue
            except _StuckInQueue:
                attempt.status = "CANCELLED"
                attempt.error = f"still queued after {self.config.queue_timeout_s:.0f} s"
                failures.append(attempt.error)
                await self._cancel_quietly(endpoint, job_id)
                continue
            except JobTimeoutError:
                attempt.status = "TIMED_OUT"
                attempt.error = "execution deadline passed"
                await self._cancel_quietly(endpoint, job_id)
                raise
            except asyncio.CancelledError:
                attempt.status = "CANCELLED"
                attempt.error = "cancelled by the client"
                await self._cancel_quietly(endpoint, job_id)
                raise
            status = str(final.get("status"))
            attempt.status = status
            attempt.execution_ms = _int_or_none(final.get("executionTime"))
            attempt.delay_ms = _int_or_none(final.get("delayTime"))
            attempt.cost_usd = self.costs.cost(stage, (attempt.execution_ms or 0) / 1000)
            if status == "COMPLETED":
                try:
                    result = await self._result(final.get("output"), result_type)
                except _IncompleteResult as exc:
                    attempt.error = str(exc)
                    failures.append(str(exc))
                    continue  # a COMPLETED job without its output: run it again
                if attempt.execution_ms is not None:
                    self._learn(stage, (attempt.execution_ms + (attempt.delay_ms or 0)) / 1000)
                return result
            error = _error_text(final.get("error"))
            attempt.error = error
            if status == "TIMED_OUT":
                raise JobTimeoutError(
                    f"scene '{ctx.scene}': the {stage} job {job_id} ran past the endpoint's "
                    f"execution timeout ({self.config.execution_timeout_s:.0f} s)",
                    job_id=job_id,
                    hint="raise execution_timeout_s, or lower frames/resolution",
                )
            if status == "CANCELLED":
                raise JobCancelledError(
                    f"scene '{ctx.scene}': the {stage} job {job_id} was cancelled on the endpoint"
                )
            transient = is_transient_job_error(error)
            failures.append(error)
            if not transient:
                raise JobFailedError(
                    f"scene '{ctx.scene}': the {stage} job {job_id} failed: {error}",
                    job_id=job_id,
                    scene=ctx.scene,
                    hint="the worker rejected this job; fix the input and render again",
                )
            log.info("job %s failed transiently (%s), attempt %d", job_id, error, attempt_number)
        raise JobFailedError(
            f"scene '{ctx.scene}': the {stage} job failed {len(failures)} times: "
            + "; ".join(dict.fromkeys(failures)),
            scene=ctx.scene,
            transient=True,
            hint="the endpoint may be overloaded or misconfigured; check its workers and logs",
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
        if not isinstance(output, dict) or not output:
            raise _IncompleteResult("the job COMPLETED without an output")
        if "error" in output:
            raise _IncompleteResult(f"the job COMPLETED with an error: {output['error']}")
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

    def _learn(self, stage: Stage, seconds: float) -> None:
        previous = self._expected_s.get(stage)
        self._expected_s[stage] = seconds if previous is None else 0.7 * previous + 0.3 * seconds
        if previous is None:
            self._learned.setdefault(stage, asyncio.Event()).set()

    async def _nap(self, stage: Stage, seconds: float, informed: bool) -> None:
        """Sleep; a job polling blind is woken early when a sibling teaches us the job length."""
        if informed:
            await self._sleep(seconds)
            return
        learned = self._learned.setdefault(stage, asyncio.Event())
        if learned.is_set():
            return
        nap = asyncio.ensure_future(self._sleep(seconds))
        wake = asyncio.ensure_future(learned.wait())
        try:
            await asyncio.wait({nap, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            nap.cancel()
            wake.cancel()

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
        submitted = self._clock()
        running_since: float | None = None
        interval = cfg.poll_min_s
        expected = self._expected_s.get(stage)
        if expected is not None:
            await self._sleep(max(0.0, expected - self._margin(expected)))
        while True:
            status = await self._status(endpoint, job_id)
            state = str(status.get("status"))
            if state in FINAL_STATES:
                return status
            now = self._clock()
            elapsed = now - submitted
            if state == "IN_QUEUE":
                if elapsed > cfg.queue_timeout_s:
                    raise _StuckInQueue(job_id)
            else:
                if running_since is None:
                    running_since = now
                    ctx.on_progress(0.0, "running")
                # The endpoint enforces executionTimeout itself; this is the backstop for one
                # that does not (or whose status lags), with some grace for that lag.
                if now - running_since > cfg.execution_timeout_s * 1.1 + 5.0:
                    raise JobTimeoutError(
                        f"scene '{ctx.scene}': the {stage} job {job_id} is still running after "
                        f"{cfg.execution_timeout_s:.0f} s",
                        job_id=job_id,
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
    ) -> httpx.Response:
        async def once() -> httpx.Response:
            self.stats.requests[kind] += 1
            response = await self._http.request(method, path, json=body)
            if response.status_code >= 500 or response.status_code in (408, 425, 429):
                response.raise_for_status()
            return response

        return await self.retry.call(once, on_retry=on_retry)

    async def _submit(
        self,
        endpoint: Endpoint,
        payload: Mapping[str, Any],
        attempts: list[JobAttempt] | None = None,
    ) -> str:
        def ambiguous(number: int, exc: BaseException, wait: float) -> None:
            # The request went out and the reply was lost: the endpoint may have created a job
            # we will never hear of (RunPod has no idempotency key). Say so in the manifest.
            sent = isinstance(exc, httpx.TransportError) and not isinstance(
                exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
            )
            if sent and attempts is not None:
                attempts.append(
                    JobAttempt(
                        job_id="unknown",
                        status="UNKNOWN",
                        error=f"reply to `run` lost ({type(exc).__name__}); a job may have "
                        "been created and billed without the client seeing its id",
                    )
                )

        try:
            response = await self._call(
                "run", "POST", endpoint.path("run"), payload, on_retry=ambiguous
            )
        except httpx.HTTPError as exc:
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
                hint="check RUNPOD_API_KEY",
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

    async def _status(self, endpoint: Endpoint, job_id: str) -> dict[str, Any]:
        try:
            response = await self._call("status", "GET", endpoint.path(f"status/{job_id}"))
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"could not read the status of job {job_id}: {_describe(exc)}",
                status=_status_of(exc),
                job_id=job_id,
            ) from None
        if response.status_code == 404:
            raise _Vanished(job_id)
        if response.status_code >= 400:
            raise EndpointError(
                f"status of job {job_id}: HTTP {response.status_code}",
                status=response.status_code,
                job_id=job_id,
                hint="check RUNPOD_API_KEY" if response.status_code == 401 else None,
            )
        return _json(response)

    async def _cancel_quietly(self, endpoint: Endpoint, job_id: str) -> None:
        """Cancel a remote job, even while our own task is being cancelled; never raise."""

        async def cancel() -> None:
            self.stats.requests["cancel"] += 1
            await self._http.post(endpoint.path(f"cancel/{job_id}"), timeout=5.0)

        try:
            await asyncio.shield(asyncio.wait_for(cancel(), timeout=5.0))
        except (httpx.HTTPError, TimeoutError, asyncio.CancelledError) as exc:
            log.warning("could not cancel job %s: %s", job_id, _describe(exc))


class _IncompleteResult(Exception):
    pass


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
