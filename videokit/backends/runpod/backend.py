"""The RunPod backend: edit and animate jobs on RunPod-style endpoints, and job handles for SDK use.

Each stage's endpoint has an API kind (:mod:`videokit.backends.kinds`): videokit's own workers and
``videokit serve``, or RunPod's Public Endpoints. The HTTP side is
:class:`~videokit.backends.runpod.client.RunPodClient`, the job rules
:class:`~videokit.backends.runpod.jobs.JobPolicy`, the polling budget
:mod:`~videokit.backends.runpod.schedule`. One backend object may serve several event loops; close
it with ``await backend.aclose()`` in each loop that used it (the pipeline does this for backends
it created).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

import httpx

from videokit.backends.base import JobAttempt, JobContext, Stage
from videokit.backends.kinds import ApiKind, sends_inline
from videokit.backends.kinds.fetch import ResultFetcher
from videokit.backends.retry import RetryPolicy
from videokit.backends.runpod.client import RunPodClient, Vanished
from videokit.backends.runpod.config import (
    RUNSYNC_PAYLOAD_LIMIT,
    Endpoint,
    EndpointHealth,
    RunPodConfig,
    endpoint_variable,
)
from videokit.backends.runpod.handle import JobHandle
from videokit.backends.runpod.jobs import (
    S3_HINT,
    IncompleteResult,
    JobPolicy,
    StuckInQueue,
    Watch,
    check_payload,
    stuck_error,
)
from videokit.backends.runpod.lanes import build_route
from videokit.backends.runpod.routing import Route
from videokit.backends.runpod.wire import JobStatus, describe, json_body, status_of
from videokit.capabilities import (
    AnimateCapabilities,
    EditCapabilities,
    intersect_animate,
    intersect_edit,
)
from videokit.costs import CostModel, OutputPrice
from videokit.errors import ConfigError, EndpointError, JobTimeoutError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = ["RunPodBackend"]

log = logging.getLogger("videokit.runpod")


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
        result_transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        output_prices: Mapping[str, OutputPrice] | None = None,
    ) -> None:
        self.config = config
        self.retry = retry or RetryPolicy(sleep=sleep, clock=clock)
        self.client = RunPodClient(config, transport=transport, retry=self.retry, clock=clock)
        self._storage = storage
        self.fetcher = ResultFetcher(retry=self.retry, transport=result_transport)
        # An unknown GPU pool is a ConfigError here, not a silent $0 later.
        self.costs = costs or CostModel(
            gpu={stage: ep.gpu for stage, ep in config.endpoints.items()},
            bill_delay={stage: ep.bill_delay for stage, ep in config.endpoints.items()},
            # An Endpoint names the pool it bills at, self-hosted ones too (None: that rate).
            self_hosted_price={stage: None for stage in config.endpoints},
        )
        self.routes: dict[Stage, Route] = {
            stage: build_route(
                stage,
                config,
                self.costs,
                self.client,
                storage=storage,
                fetcher=self.fetcher,
                output_prices=output_prices or {},
                sleep=sleep,
            )
            for stage in config.endpoints
        }
        #: Each stage's first choice of API kind.
        self.kinds: dict[Stage, ApiKind] = {s: r.first.kind for s, r in self.routes.items()}
        self._clock = clock
        self._sleep = sleep

    @property
    def storage(self) -> Any | None:
        """The S3/R2 storage media travel through (None: inline only); set at construction."""
        return self._storage

    @property
    def stats(self) -> Any:
        """Requests so far: by route (``stats.requests``), reads per job (``stats.polls``)."""
        return self.client.stats

    def _policy(self, stage: Stage) -> JobPolicy:
        return self._route(stage).first.policy

    def _route(self, stage: Stage) -> Route:
        self._endpoint(stage)  # a ConfigError naming the setting when the stage has none
        return self.routes[stage]

    # -- the Backend protocol ---------------------------------------------------------------------
    def _endpoint(self, stage: Stage) -> Endpoint:
        endpoint = self.config.endpoints.get(stage)
        if endpoint is None:
            raise ConfigError(
                f"no RunPod endpoint is configured for {stage} jobs",
                hint=f"set {endpoint_variable(stage)} (or `endpoint` under [{stage}] in "
                f"videokit.toml, or `endpoints: {{{stage}: <id>}}` in the story)",
            )
        return endpoint

    def identity(self, stage: Stage) -> str:
        return self._route(stage).first.identity

    def identities(self, stage: Stage) -> tuple[str, ...]:
        return tuple(lane.identity for lane in self._route(stage).lanes)

    def concurrency(self, stage: Stage) -> int:
        endpoint = self.config.endpoints.get(stage)
        return endpoint.concurrency if endpoint else 1

    def capabilities(self, stage: Stage) -> EditCapabilities | AnimateCapabilities | None:
        """What every endpoint of ``stage`` can render (a story must fit them all)."""
        route = self.routes.get(stage)
        if route is None:
            return None
        found = [lane.kind.capabilities for lane in route.lanes]
        if stage == "edit":
            return intersect_edit([c for c in found if isinstance(c, EditCapabilities)])
        return intersect_animate([c for c in found if isinstance(c, AnimateCapabilities)])

    def inputs_by_url(self, stage: Stage) -> bool:
        """Whether some endpoint of ``stage`` takes images by URL only (storage is needed)."""
        route = self.routes.get(stage)
        return route is not None and any(lane.kind.inputs_by_url for lane in route.lanes)

    def check(
        self, stages: Collection[Stage], *, payload_bytes: Mapping[Stage, int] | None = None
    ) -> None:
        """Endpoints exist for ``stages``; kinds that take images by URL have storage; and no
        request will be over the ``run`` payload limit (unless storage moves large inputs, for
        the kinds that take them by URL)."""
        for stage in stages:
            self._endpoint(stage)
        by_url = [
            lane.label
            for stage in stages
            for lane in self.routes[stage].lanes
            if lane.kind.inputs_by_url
        ]
        if by_url and self.storage is None:
            labels = ", ".join(by_url)
            raise ConfigError(
                f"{labels} take(s) images by URL, and no S3/R2 storage is configured to upload "
                "the frames to",
                hint="set VIDEOKIT_S3_BUCKET, VIDEOKIT_S3_ACCESS_KEY_ID and "
                "VIDEOKIT_S3_SECRET_ACCESS_KEY (plus VIDEOKIT_S3_ENDPOINT_URL for R2); frames "
                "are sent as presigned URLs that expire",
            )
        if not payload_bytes:
            return
        for stage in stages:
            bound = payload_bytes.get(stage)
            inline = any(sends_inline(lane.kind, self.storage) for lane in self.routes[stage].lanes)
            if bound is not None and inline:
                check_payload(stage, bound, upfront=True, storage=self.storage is not None)

    async def warm_up(self, stage: Stage, ctx: JobContext) -> None:
        """Wake ``stage``'s endpoint with a ``{"warmup": true}`` job and wait for it to end.

        Only for videokit's own workers (a public endpoint is RunPod's to keep warm, and bills per
        output). The job is reported through ``ctx`` and billed like any other; it is polled
        slowly. Failures are logged, not raised, except a job stuck in the queue whose cancel was
        not confirmed (JobTimeoutError: it may still run and bill).
        """
        endpoint = self.config.endpoints.get(stage)
        if not self.config.warmup or endpoint is None or self.kinds[stage].name != "videokit":
            return
        policy = self._policy(stage)
        payload = {"input": {"warmup": True}, "policy": self.config.policy()}
        try:
            job_id = await policy.submit(endpoint, payload, ctx.attempts, stage=stage)
        except EndpointError as exc:
            log.info("warm-up of the %s endpoint could not be submitted: %s", stage, exc.message)
            return
        attempt = JobAttempt(job_id=job_id)
        ctx.attempts.append(attempt)
        watch = Watch(job_id, self._clock())
        try:
            await ctx.on_submitted(job_id)
            final = await self._wait_slowly(endpoint, stage, watch)
        except GeneratorExit:
            raise
        except Vanished:
            policy.lost(stage, attempt, watch, "the endpoint no longer knows the warm-up job", None)
            return
        except StuckInQueue:
            if not await policy.cancel(
                stage,
                endpoint,
                attempt,
                watch,
                error=f"warm-up still queued after {self.config.queue_timeout_s:g} s: the "
                "endpoint has no worker to wake (check its max workers)",
            ):
                raise stuck_error(stage, job_id, self.config, warm_up=True) from None
            return
        except asyncio.CancelledError:
            await policy.cancel(
                stage, endpoint, attempt, watch, error="warm-up cancelled by the client"
            )
            raise
        except BaseException as exc:
            await policy.cancel(stage, endpoint, attempt, watch, error=f"warm-up: {describe(exc)}")
            if not isinstance(exc, Exception):
                raise
            log.info("warm-up of the %s endpoint failed: %s", stage, describe(exc))
            return
        policy.account(stage, attempt, final, watch, None)
        attempt.error = final.error

    async def _wait_slowly(self, endpoint: Endpoint, stage: Stage, watch: Watch) -> JobStatus:
        """Poll a job nobody waits for (a warm-up) at slowly growing intervals, same deadlines."""
        cfg = self.config
        handle = self._policy(stage).handle(endpoint, stage, watch.job_id)
        interval = cfg.warmup_poll_s
        while True:
            await self._sleep(interval)
            deadline = max(watch.deadline(cfg), self._clock() + 5.0)
            status, _ = await handle.read(deadline=deadline)
            if status.done:
                return status
            now = self._clock()
            watch.observe(status.state, now)
            if status.state == "IN_QUEUE" and now - watch.since > cfg.queue_timeout_s:
                raise StuckInQueue(watch.job_id)
            if status.state != "IN_QUEUE" and now > watch.deadline(cfg):
                raise JobTimeoutError(f"the warm-up job {watch.job_id} is still running")
            interval = min(cfg.warmup_poll_max_s, interval * 1.5)

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        result = await self._route("edit").run(request, ctx)
        assert isinstance(result, EditResult)
        return result

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        result = await self._route("animate").run(request, ctx)
        assert isinstance(result, AnimateResult)
        return result

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop (each loop that used this backend has
        its own: close it in that loop). It can be used again afterwards."""
        await self.client.aclose()

    # -- job handles ------------------------------------------------------------------------------
    async def submit(self, stage: Stage, request: EditRequest | AnimateRequest) -> JobHandle:
        """Submit one job and return its handle at once (nothing waits for it; nothing cancels it
        unless you call :meth:`JobHandle.cancel`). Read its result with
        :meth:`result` once :meth:`JobHandle.wait` says it completed."""
        lane = self._route(stage).first
        kind = lane.kind
        body = {"input": await kind.input_document(request), "policy": self.config.policy()}
        if sends_inline(kind, self.storage):
            check_payload(stage, len(json.dumps(body).encode()))
        job_id = await lane.policy.submit(lane.endpoint, body)
        return lane.policy.handle(lane.endpoint, stage, job_id)

    def attach(self, stage: Stage, job_id: str, *, endpoint: str | None = None) -> JobHandle:
        """A handle on an existing job of ``stage``'s endpoint (from another process, a manifest
        or an earlier run); nothing is sent until you use it. ``endpoint``: the label or id of
        the endpoint it runs on, for a stage that lists several (default: the first)."""
        route = self._route(stage)
        lane = route.lane(endpoint) if endpoint is not None else route.first
        if lane is None:
            raise ConfigError(
                f"{endpoint} is not one of the {stage} endpoints",
                hint=f"the {stage} endpoints are: " + ", ".join(lane.label for lane in route.lanes),
            )
        return lane.policy.handle(lane.endpoint, stage, job_id)

    async def result(
        self, handle: JobHandle, request: EditRequest | AnimateRequest, status: JobStatus
    ) -> EditResult | AnimateResult:
        """The result of a COMPLETED job, as its API kind returns it (media downloaded)."""
        if status.state != "COMPLETED":
            raise EndpointError(
                f"job {handle.job_id} has no result: it is {status.state}"
                + (f" ({status.error})" if status.error else ""),
                job_id=handle.job_id,
            )
        try:
            lane = self._route(handle.stage).lane(handle.endpoint.name)
            assert lane is not None
            return await lane.policy.result_of(lane.kind, request, status)
        except IncompleteResult as exc:
            raise EndpointError(f"job {handle.job_id}: {exc}", job_id=handle.job_id) from None

    # -- more of RunPod's API ---------------------------------------------------------------------
    async def health(self, stage: Stage, *, timeout_s: float = 5.0) -> EndpointHealth:
        """``GET health`` of ``stage``'s endpoint (retried within ``timeout_s``)."""
        return await self.client.health(self._endpoint(stage), stage, timeout_s=timeout_s)

    async def readiness(self, stages: Iterable[Stage]) -> dict[Stage, EndpointHealth]:
        """Health of every stage's endpoint, read in parallel."""
        wanted = list(dict.fromkeys(stages))
        answers = await asyncio.gather(*(self.health(stage) for stage in wanted))
        return dict(zip(wanted, answers, strict=True))

    async def purge_queue(self, stage: Stage) -> int:
        """``POST purge-queue``: delete every job still queued on ``stage``'s endpoint (everyone's
        jobs: never called automatically). Returns how many were removed."""
        return await self.client.purge(self._endpoint(stage), stage)

    async def runsync(
        self, stage: Stage, job_input: Mapping[str, Any], *, wait_s: float = 90.0
    ) -> dict[str, Any]:
        """``POST runsync?wait=``: submit and wait server-side, for scripts and one-off calls.

        Renders do not use it: the job id only comes back with the answer, so it could not be
        recorded before waiting, and a cancelled call could not cancel its job.
        """
        endpoint = self._endpoint(stage)
        payload = {"input": dict(job_input), "policy": self.config.policy()}
        size = len(json.dumps(payload).encode())
        if size > RUNSYNC_PAYLOAD_LIMIT:
            raise ConfigError(
                f"the {stage} request is {size / 1e6:.1f} MB, over RunPod's 20 MB limit for "
                "/runsync",
                hint=S3_HINT,
            )
        wait_ms = min(max(int(wait_s * 1000), 1000), 300_000)
        try:
            response = await self.client.call(
                "runsync",
                "POST",
                endpoint.path(f"runsync?wait={wait_ms}"),
                payload,
                attempts=1,  # not idempotent, and the id of a lost answer is unknown
                timeout=wait_ms / 1000 + self.config.request_timeout_s,
            )
        except httpx.HTTPError as exc:
            raise EndpointError(
                f"runsync on {endpoint.id} failed: {describe(exc)}", status=status_of(exc)
            ) from None
        self.client.raise_for_refusal(response, endpoint, stage, "runsync")
        return json_body(response)

    async def stream(self, stage: Stage, job_id: str) -> tuple[str, list[Any]]:
        """``GET stream/{id}``: the job's status and the chunks since the previous call."""
        body, chunks = await self.client.read_stream(self._endpoint(stage), job_id, deadline=None)
        return str(body.get("status")), chunks
