"""The job policy: submit, follow, resubmit, re-attach and cancel, and what each attempt cost.

Each job is reported to the pipeline (``ctx.on_submitted``) before it is waited on, so a resumed
render re-attaches instead of paying again. A job is submitted again, a bounded number of times,
when it failed for a reason another worker may not hit (CUDA out of memory, a lost worker, a
result that expired, a job stuck in the queue whose cancel was confirmed); a FAILED job is retried
under its id (``retry/{id}``) where the endpoint allows it. Whenever the client stops waiting on a
job that has not ended (Ctrl-C, SIGTERM, a deadline), it cancels the remote job first, then reads
its final status once to learn what it cost. Re-attaching to a job of an earlier render that is
found ended without a result submits it again. Costs that the endpoint did not report are the
client's estimates and are marked so (``cost_estimated``); they never pass for actuals.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from videokit.backends.base import JobAttempt, JobContext, Stage
from videokit.backends.kinds import ApiKind, sends_inline
from videokit.backends.kinds.fetch import ResultLost
from videokit.backends.runpod.accounting import Accounting
from videokit.backends.runpod.client import RunPodClient, Vanished
from videokit.backends.runpod.config import (
    RUN_PAYLOAD_LIMIT,
    Endpoint,
    EndpointHealth,
    RunPodConfig,
)
from videokit.backends.runpod.following import Following, StuckInQueue, Watch, _LoopEvents
from videokit.backends.runpod.handle import JobHandle
from videokit.backends.runpod.wire import (
    FINAL_STATES,
    JobStatus,
    describe,
    error_text,
    is_progress,
    is_transient_job_error,
)
from videokit.costs import CostModel
from videokit.errors import (
    ConfigError,
    JobCancelledError,
    JobFailedError,
    JobTimeoutError,
)
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = [
    "S3_HINT",
    "IncompleteResult",
    "JobPolicy",
    "StuckInQueue",
    "Watch",
    "check_payload",
    "stuck_error",
]

log = logging.getLogger("videokit.runpod")

S3_HINT = (
    "configure S3/R2 storage so large inputs travel by presigned URL: set VIDEOKIT_S3_BUCKET, "
    "VIDEOKIT_S3_ACCESS_KEY_ID and VIDEOKIT_S3_SECRET_ACCESS_KEY (plus VIDEOKIT_S3_ENDPOINT_URL "
    "for R2); or use smaller input images"
)

Request = EditRequest | AnimateRequest
Result = EditResult | AnimateResult


class IncompleteResult(Exception):
    """A COMPLETED job without a usable result: no output (RunPod issue #309), an ``{"error"}``
    output (``error`` holds its text), or a result URL that expired."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


def stuck_error(
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


class JobPolicy(Following, Accounting):
    """Runs jobs through :class:`JobHandle` s with the rules in the module docstring."""

    def __init__(
        self,
        client: RunPodClient,
        kinds: dict[Stage, ApiKind],
        costs: CostModel,
        *,
        storage: Any | None,
        sleep: Callable[[float], Awaitable[None]],
        config: RunPodConfig | None = None,
    ) -> None:
        self.client = client
        # One endpoint of a route may run under other rules (one submission before moving on).
        self.config = config or client.config
        self.kinds = kinds
        self.costs = costs
        self.storage = storage
        self.clock = client.clock
        self.sleep = sleep
        # What we learned of each stage's jobs: queue + run, and run alone (seconds).
        self.expected_s: dict[Stage, float] = {}
        self.expected_exec_s: dict[Stage, float] = {}
        self.health_seen: dict[Stage, tuple[float, EndpointHealth | None]] = {}
        self._loops: dict[asyncio.AbstractEventLoop, _LoopEvents] = {}

    def handle(self, endpoint: Endpoint, stage: Stage, job_id: str) -> JobHandle:
        return JobHandle(self.client, endpoint, stage, job_id, sleep=self.sleep)

    # -- one job ----------------------------------------------------------------------------------
    async def run(
        self, stage: Stage, endpoint: Endpoint, request: Request, ctx: JobContext
    ) -> Result:
        cfg = self.config
        kind = self.kinds[stage]
        resume = ctx.resume_job_id
        # Built on the first submission only: a re-attached job that completes needs no payload.
        prepared: dict[str, Any] | None = None

        async def payload() -> dict[str, Any]:
            nonlocal prepared
            if prepared is None:
                body = {"input": await kind.input_document(request), "policy": cfg.policy()}
                if sends_inline(kind, self.storage):
                    check_payload(stage, len(json.dumps(body).encode()))
                prepared = body
            return prepared

        submissions = 0
        failures: list[str] = []
        retry_in_place: str | None = None
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
                        endpoint, retry_in_place, ctx.attempts, stage, request
                    )
                    retry_in_place = None
                job_id = retried or await self.submit(
                    endpoint, await payload(), ctx.attempts, stage=stage, request=request
                )
            attempt = JobAttempt(job_id=job_id, endpoint=endpoint.name)
            ctx.attempts.append(attempt)
            watch = Watch(job_id, self.clock())
            try:
                await ctx.on_submitted(job_id)
                final = await self.follow(stage, self.handle(endpoint, stage, job_id), watch, ctx)
            except GeneratorExit:
                raise  # the coroutine is being closed: it cannot await a cancel any more
            except Vanished:
                why = (
                    "gone when re-attaching (an earlier render's job whose ttl or result expired)"
                    if reattached and not watch.alive_seen
                    else "the endpoint no longer knows this job (ttl or result expired)"
                )
                self.lost(stage, attempt, watch, why, request)
                failures.append(why)
                continue
            except StuckInQueue as stuck:
                why = stuck.why or f"still queued after {cfg.queue_timeout_s:g} s"
                if not await self.cancel(
                    stage, endpoint, attempt, watch, error=f"{why}; cancelled"
                ):
                    raise stuck_error(stage, job_id, cfg) from None
                failures.append(why)
                continue
            except asyncio.CancelledError:
                await self.cancel(stage, endpoint, attempt, watch, error="cancelled by the client")
                raise
            except JobTimeoutError:
                await self.cancel(
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
                await self.cancel(stage, endpoint, attempt, watch, error=describe(exc))
                raise
            self.account(stage, attempt, final, watch, request)
            if final.state == "COMPLETED":
                try:
                    result = await self.result_of(kind, request, final)
                except IncompleteResult as exc:
                    attempt.error = str(exc)
                    failures.append(str(exc))
                    if exc.error is not None and not is_transient_job_error(exc.error):
                        raise JobFailedError(
                            f"the {stage} job {job_id} failed: {exc.error}",
                            job_id=job_id,
                            scene=ctx.scene,
                            hint="the worker rejected this job; fix the input and render again",
                        ) from None
                    continue  # lost output or a transient error: another run may succeed
                if attempt.execution_ms is not None:
                    self.learn(stage, attempt.execution_ms, attempt.delay_ms or 0)
                return result
            error = final.error or ""
            attempt.error = error or None
            if reattached and not watch.alive_seen:
                attempt.error = (
                    f"found {final.state} when re-attaching"
                    + (f" ({error})" if error else "")
                    + "; submitting it again"
                )
                failures.append(attempt.error)
                continue
            if final.state == "TIMED_OUT":
                raise JobTimeoutError(
                    f"the {stage} job {job_id} ran past the endpoint's execution timeout "
                    f"({cfg.execution_timeout_s:g} s)",
                    job_id=job_id,
                    hint="raise VIDEOKIT_EXECUTION_TIMEOUT (execution_timeout in videokit.toml), "
                    "or lower frames/resolution",
                )
            if final.state == "CANCELLED":
                raise JobCancelledError(
                    f"the {stage} job {job_id} was cancelled on the endpoint while this render "
                    "waited for it",
                    hint="someone cancelled it (RunPod console, API, a purge); render again to "
                    "submit it anew",
                )
            failures.append(error or final.state)
            if not is_transient_job_error(error):
                raise JobFailedError(
                    f"the {stage} job {job_id} failed: {error or final.state}",
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

    async def result_of(self, kind: ApiKind, request: Request, final: JobStatus) -> Result:
        """The result of a COMPLETED job; IncompleteResult when it has none to give."""
        output = final.output
        if isinstance(output, list):
            # A generator handler's aggregated stream: progress chunks, then the result.
            results = [c for c in output if isinstance(c, dict) and c and not is_progress(c)]
            output = results[-1] if results else None
        if not isinstance(output, dict) or not output:
            raise IncompleteResult("the job COMPLETED without an output")
        if "error" in output:
            error = error_text(output["error"])
            raise IncompleteResult(f"the job COMPLETED with an error: {error}", error)
        try:
            return await kind.result(request, output, final.execution_ms)
        except ResultLost as exc:
            raise IncompleteResult(str(exc)) from None

    # -- submitting -------------------------------------------------------------------------------
    async def submit(
        self,
        endpoint: Endpoint,
        payload: Any,
        attempts: list[JobAttempt] | None = None,
        *,
        stage: Stage | None = None,
        request: Request | None = None,
    ) -> str:
        """``POST run``; a try whose reply was lost is recorded as an UNKNOWN attempt."""

        def unknown(exc: BaseException) -> None:
            # The endpoint may have created a job we will never hear of (RunPod has no
            # idempotency key): say so, with what it would cost if it ran (an estimate).
            if attempts is None:
                return
            cost = 0.0
            if stage is not None:
                cost = self.estimated_cost(stage, request, self.run_estimate_s(stage, request))
            attempts.append(
                JobAttempt(
                    job_id="unknown",
                    status="UNKNOWN",
                    cost_usd=cost,
                    cost_estimated=True,
                    endpoint=endpoint.name,
                    error=f"reply to `run` lost ({describe(exc)}); a job may have been created "
                    "and billed without the client seeing its id (its ttl of "
                    f"{self.config.ttl_s:g} s bounds it)",
                )
            )

        return await self.client.run(endpoint, payload, on_lost=unknown)

    async def _retry(
        self,
        endpoint: Endpoint,
        job_id: str,
        attempts: list[JobAttempt],
        stage: Stage,
        request: Request,
    ) -> str | None:
        """Run a FAILED job again under its id; None when the endpoint would not."""
        queued, sent_unanswered = await self.client.retry_job(endpoint, job_id)
        if queued:
            return job_id
        if sent_unanswered:
            attempts.append(
                JobAttempt(
                    job_id=job_id,
                    status="UNKNOWN",
                    cost_usd=self.estimated_cost(
                        stage, request, self.run_estimate_s(stage, request)
                    ),
                    cost_estimated=True,
                    endpoint=endpoint.name,
                    error="reply to `retry` lost; the job may have run (and failed) again",
                )
            )
        return None

    # -- cancelling -------------------------------------------------------------------------------
    async def cancel(
        self,
        stage: Stage,
        endpoint: Endpoint,
        attempt: JobAttempt,
        watch: Watch,
        *,
        error: str,
        status: str = "CANCELLED",
    ) -> bool:
        """Cancel the remote job, read what it cost, and record both on ``attempt``; return
        whether the job is known to be over.

        Runs to the end even while our own task is being cancelled (Ctrl-C): the cancel request is
        the point of being cancelled. Bounded by ``cancel_timeout_s`` + ``final_read_timeout_s``.
        Without a confirmation the attempt keeps the last state seen, so a later render
        re-attaches to it.
        """
        work = asyncio.ensure_future(self.client.cancel_and_read(endpoint, attempt.job_id))
        interrupted = False
        while not work.done():
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                interrupted = True  # keep waiting: it has its own short deadlines
        confirmed, why, body = work.result()
        attempt.error = error
        ended = True
        final = JobStatus.parse(body, attempt.job_id) if body is not None else None
        if final is not None and final.state in FINAL_STATES:
            attempt.execution_ms = final.execution_ms
            attempt.delay_ms = final.delay_ms
            attempt.status = status if final.state == "CANCELLED" else final.state
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
        # A cancelled job made no output: per-output endpoints charge nothing for it.
        self.price(stage, attempt, watch, None)
        if interrupted:
            raise asyncio.CancelledError
        return ended


def check_payload(stage: Stage, size: int, *, upfront: bool = False, storage: bool = False) -> None:
    if size <= RUN_PAYLOAD_LIMIT:
        return
    what = "this render's" if upfront else "this"
    why = (
        "and an endpoint of the stage takes media inline only"
        if storage
        else "and no storage is configured"
    )
    raise ConfigError(
        f"{what} {stage} jobs need a request body of up to {size / 1e6:.1f} MB (media inline "
        f"as base64), over RunPod's 10 MB limit for /run payloads, {why}",
        hint="use smaller input images or a shorter soundtrack" if storage else S3_HINT,
    )
