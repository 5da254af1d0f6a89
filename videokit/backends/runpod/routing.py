"""One stage's endpoints in order of preference, and moving a job along them when one fails.

A stage may list several endpoints (``VIDEOKIT_ANIMATE_ENDPOINT=http://gpu-box:8002/v2/animate,
my-runpod-id,wan-2-2-i2v-720``): your own GPU when it is there, the cloud when it is not. A job
goes to the first healthy one (``GET health`` answers; read at most every 30 s per endpoint), and
moves to the next on a transient failure, a queue deadline or an unreachable endpoint. It moves
only once nothing of it may still run where it was (every attempt there ended or was cancelled
with a confirmation), so one job never runs twice at once. Every endpoint but the last gets one
submission; the last gets the configured ``job_attempts``. A rejected input (a non-transient
failure) does not move: another endpoint would be paid to reject it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from videokit.backends.base import JobContext, Stage
from videokit.backends.kinds import ApiKind
from videokit.backends.runpod.client import RunPodClient
from videokit.backends.runpod.config import Endpoint
from videokit.backends.runpod.jobs import JobPolicy
from videokit.backends.runpod.wire import FINAL_STATES
from videokit.errors import EndpointError, JobFailedError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult

__all__ = ["HEALTH_TTL_S", "Lane", "Route"]

log = logging.getLogger("videokit.runpod")

HEALTH_TTL_S = 30.0
_HEALTH_TIMEOUT_S = 5.0
# An attempt in one of these is over on its endpoint: nothing of it can still run there.
_OVER = FINAL_STATES | {"LOST"}


@dataclass(frozen=True)
class Lane:
    """One endpoint of a route, with its API kind and the job policy that drives it."""

    endpoint: Endpoint
    kind: ApiKind
    policy: JobPolicy
    identity: str

    @property
    def label(self) -> str:
        return self.endpoint.name


class Route:
    """A stage's lanes in order of preference (see the module docstring)."""

    def __init__(
        self,
        stage: Stage,
        lanes: Sequence[Lane],
        client: RunPodClient,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.stage = stage
        self.lanes = tuple(lanes)
        self.client = client
        self.clock = clock
        self._health: dict[Endpoint, tuple[float, str | None]] = {}
        self._lock = asyncio.Lock()

    @property
    def first(self) -> Lane:
        return self.lanes[0]

    def lane(self, label: str | None) -> Lane | None:
        """The lane of the endpoint ``label`` names (its name, id or label), if it is on this
        route."""
        for lane in self.lanes:
            if label in (lane.endpoint.name, lane.endpoint.id):
                return lane
        for lane in self.lanes:
            if label == lane.endpoint.label:
                return lane
        return None

    async def unhealthy(self, lane: Lane) -> str | None:
        """Why ``lane`` should be skipped now (None: it answers). Only asked when the route has
        somewhere else to go; a Public Endpoint is RunPod's to keep up, and is not asked."""
        if len(self.lanes) == 1 or lane.kind.name == "runpod-public":
            return None
        now = self.clock()
        seen = self._health.get(lane.endpoint)
        if seen is not None and now - seen[0] < HEALTH_TTL_S:
            return seen[1]
        async with self._lock:
            seen = self._health.get(lane.endpoint)
            if seen is None or self.clock() - seen[0] >= HEALTH_TTL_S:
                try:
                    await self.client.health(lane.endpoint, self.stage, timeout_s=_HEALTH_TIMEOUT_S)
                    why = None
                except EndpointError as exc:
                    why = f"unreachable ({exc.message})"
                seen = self._health[lane.endpoint] = (self.clock(), why)
        return seen[1]

    def mark_down(self, lane: Lane, why: str) -> None:
        """Skip ``lane`` for the next jobs too (until its health is read again)."""
        self._health[lane.endpoint] = (self.clock(), why)

    async def run(
        self, request: EditRequest | AnimateRequest, ctx: JobContext
    ) -> EditResult | AnimateResult:
        """Run one job on the first lane that can take it, moving on as the docstring says.

        ``ctx.endpoint`` names the lane the job is on (set before each lane is tried, so the
        pipeline records it with the job id); ``ctx.moves`` says why it left each one before.
        """
        resume = ctx.resume_job_id
        resumed = self.lane(ctx.resume_endpoint) if resume is not None else None
        if resume is not None and resumed is None and ctx.resume_endpoint is None:
            resumed = self.first  # recorded before routes existed: it ran on the only endpoint
        if resume is not None and resumed is None:
            log.warning(
                "the %s job %s ran on %s, which this stage no longer lists: it is not "
                "re-attached, and the job is submitted again",
                self.stage,
                resume,
                ctx.resume_endpoint,
            )
            resume = None
        ordered = list(self.lanes)
        if resumed is not None:
            ordered.remove(resumed)
            ordered.insert(0, resumed)
        for position, lane in enumerate(ordered):
            last = position == len(ordered) - 1
            lane_resume = resume if lane is resumed else None
            if lane_resume is None and not last:
                why = await self.unhealthy(lane)
                if why is not None:
                    ctx.moves.append(f"{lane.label}: {why}")
                    continue
            ctx.resume_job_id = lane_resume
            ctx.endpoint = lane.label
            before = len(ctx.attempts)
            try:
                result = await lane.policy.run(self.stage, lane.endpoint, request, ctx)
            except (JobFailedError, EndpointError) as exc:
                mine = ctx.attempts[before:]
                if last or not _movable(exc, [a.status for a in mine]):
                    raise
                why = exc.message
                if isinstance(exc, EndpointError) and not mine:
                    self.mark_down(lane, f"unreachable ({exc.message})")
                    why = f"unreachable ({exc.message})"
                ctx.moves.append(f"{lane.label}: {why}")
                log.info("the %s job moves from %s: %s", self.stage, lane.label, why)
                continue
            ctx.served_by = lane.identity
            return result
        raise AssertionError("unreachable: the last lane returns or raises")


def _movable(exc: JobFailedError | EndpointError, statuses: Sequence[str]) -> bool:
    """Whether a job that failed this way on one endpoint may go to the next one."""
    if any(status not in _OVER for status in statuses):
        return False  # something of it may still run there: never two copies at once
    if isinstance(exc, JobFailedError):
        return exc.transient
    # Refusals that no other endpoint would answer differently are the request's own fault.
    return exc.status not in (400, 413, 422)
