"""What RunPod bills for an endpoint's flex workers: start time, execution and idle time.

A flex worker is billed per second from when it starts until it stops (runpod/docs
``serverless/pricing.mdx``): its start (container start and model load, a cold start), every job
it runs, the idle gaps between them, and one idle timeout after its last job. A gap longer than the
idle timeout stops it, and the next job pays a new start. A job goes to a warm idle worker if one
is up, else to a new worker (up to the endpoint's max workers), else waits for the first busy one.
:func:`billed_time` replays the jobs of one endpoint; :func:`simulate` plays jobs that wait on each
other across endpoints (``plan``); :func:`render_billing` estimates, after a render, the start and
idle time its jobs caused. Not modelled: active (always-on) workers, the scaler's delay before it
adds a worker, FlashBoot's faster revivals, storage, data transfer.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

from videokit.cold_starts import COLD_DELAY_S as _COLD_DELAY_S

if TYPE_CHECKING:
    from videokit.costs import CostModel

__all__ = [
    "Attempt",
    "BilledTime",
    "Billing",
    "EndpointBilling",
    "EndpointFacts",
    "FlexEndpoint",
    "JobTiming",
    "PlannedJob",
    "RenderBilling",
    "billed_time",
    "burst",
    "render_billing",
    "simulate",
]


#: How an endpoint bills: GPU seconds of RunPod flex workers, per output (a Public Endpoint), or
#: at your own price (a self-hosted endpoint: its jobs' run time only).
Billing = Literal["gpu", "per-output", "self-hosted"]


@dataclass(frozen=True)
class BilledTime:
    """An endpoint's billed worker seconds by phase. ``workers`` counts worker lifetimes (a worker
    that stopped and a new one are two); ``workers_started`` those that paid a start."""

    start_s: float = 0.0
    execution_s: float = 0.0
    idle_s: float = 0.0
    workers: int = 0
    workers_started: int = 0

    @property
    def total_s(self) -> float:
        return self.start_s + self.execution_s + self.idle_s

    def __add__(self, other: BilledTime) -> BilledTime:
        return BilledTime(
            self.start_s + other.start_s,
            self.execution_s + other.execution_s,
            self.idle_s + other.idle_s,
            self.workers + other.workers,
            self.workers_started + other.workers_started,
        )


@dataclass(frozen=True)
class EndpointFacts:
    """What bills an endpoint's workers: its idle timeout, a worker's start time (seconds) and its
    max workers (None: as many as there are jobs at once)."""

    idle_timeout_s: float = 5.0
    start_s: float = 0.0
    max_workers: int | None = None

    def __post_init__(self) -> None:
        if not (self.idle_timeout_s >= 0 and self.start_s >= 0):  # also refuses NaN
            raise ValueError("idle_timeout_s and start_s must be >= 0")
        if self.max_workers is not None and self.max_workers < 1:
            raise ValueError("max_workers must be at least 1")


@dataclass(frozen=True)
class JobTiming:
    """One job on an endpoint: when it was submitted (seconds, any origin) and how long it ran."""

    submitted_s: float
    execution_s: float


class FlexEndpoint:
    """One endpoint's flex workers, fed jobs in the order they were submitted.

    ``warm_workers``: the first that many workers the jobs need are already up, and pay no start
    (a worker that idles out and comes back is a new one, and takes the next).
    """

    def __init__(self, facts: EndpointFacts, *, warm_workers: int = 0) -> None:
        self.facts = facts
        self._warm = warm_workers
        self._free_at: list[float] = []  # each worker that is up: when its last job ends
        self._clock = -math.inf
        self._start = self._execution = self._idle = 0.0
        self._workers = self._started = 0

    def run(self, submitted_s: float, execution_s: float) -> float:
        """Bill a job submitted at ``submitted_s`` that runs ``execution_s``; when it ends."""
        if submitted_s < self._clock:
            raise ValueError("jobs must come in the order they were submitted")
        self._clock = submitted_s
        timeout = self.facts.idle_timeout_s
        up: list[float] = []
        for free_at in self._free_at:
            if free_at + timeout < submitted_s:
                self._idle += timeout  # it idled its whole timeout, then stopped
            else:
                up.append(free_at)
        self._free_at = up
        idle = [n for n, free_at in enumerate(up) if free_at <= submitted_s]
        limit = self.facts.max_workers
        if idle:
            # The worker idle for the shortest time: RunPod does not document its choice, and
            # either way the bill differs by less than one gap.
            n = max(idle, key=up.__getitem__)
            self._idle += submitted_s - up[n]
            begins = submitted_s
        elif limit is None or len(up) < limit:
            n = len(up)
            up.append(submitted_s)
            self._workers += 1
            begins = submitted_s
            if self._warm > 0:
                self._warm -= 1
            else:
                self._started += 1
                self._start += self.facts.start_s
                begins += self.facts.start_s
        else:  # every worker is busy and no more may start: the job waits in the queue
            n = min(range(len(up)), key=up.__getitem__)
            begins = up[n]
        up[n] = begins + execution_s
        self._execution += execution_s
        return up[n]

    def billed(self) -> BilledTime:
        """The bill so far, each worker still up idling one idle timeout after its last job."""
        idle = self._idle + len(self._free_at) * self.facts.idle_timeout_s
        return BilledTime(self._start, self._execution, idle, self._workers, self._started)


def billed_time(
    jobs: Iterable[JobTiming], facts: EndpointFacts, *, warm_workers: int = 0
) -> BilledTime:
    """What the flex workers of one endpoint are billed for running ``jobs`` (see the module)."""
    endpoint = FlexEndpoint(facts, warm_workers=warm_workers)
    for job in sorted(jobs, key=lambda j: j.submitted_s):
        endpoint.run(job.submitted_s, job.execution_s)
    return endpoint.billed()


def burst(durations: Sequence[float], facts: EndpointFacts, *, warm: bool) -> BilledTime:
    """Jobs all submitted at once: ``warm``, every worker they need is already up (no start);
    otherwise each starts cold."""
    workers = len(durations) if warm else 0
    return billed_time((JobTiming(0.0, d) for d in durations), facts, warm_workers=workers)


@dataclass(frozen=True)
class PlannedJob:
    """A job of a plan: its endpoint (any key of :func:`simulate`'s ``endpoints``), how long it
    runs, and the jobs whose result it needs (keys not among the jobs are already done)."""

    key: str
    endpoint: str
    execution_s: float
    after: tuple[str, ...] = ()


def simulate(
    jobs: Sequence[PlannedJob], endpoints: Mapping[str, EndpointFacts], *, warm: bool
) -> dict[str, BilledTime]:
    """Run ``jobs`` as soon as what they need has ended, on the endpoints' flex workers; per
    endpoint, what its workers are billed. ``warm``: a job that needs a new worker finds one
    already up (no start is billed, nor waited for); else every new worker starts cold."""
    keys = {job.key for job in jobs}
    if len(keys) != len(jobs):
        raise ValueError("two planned jobs share a key")
    waiting = {job.key: sum(1 for k in set(job.after) if k in keys) for job in jobs}
    dependents: dict[str, list[PlannedJob]] = {}
    for job in jobs:
        for key in set(job.after) & keys:
            dependents.setdefault(key, []).append(job)
    sims = {
        # Each job starts at most one worker: as many warm ones as jobs means no start at all.
        name: FlexEndpoint(facts, warm_workers=len(jobs) if warm else 0)
        for name, facts in endpoints.items()
    }
    ready: list[tuple[float, int, PlannedJob]] = []
    order = {job.key: n for n, job in enumerate(jobs)}  # ties: the order given
    for job in jobs:
        if waiting[job.key] == 0:
            heapq.heappush(ready, (0.0, order[job.key], job))
    needs_until: dict[str, float] = {}
    done = 0
    # Jobs leave the heap in the order they become ready, so every endpoint sees its jobs in
    # submission order (a job ends no earlier than it was submitted).
    while ready:
        at, _, job = heapq.heappop(ready)
        ends = sims[job.endpoint].run(at, job.execution_s)
        done += 1
        for dependent in dependents.get(job.key, ()):
            needs_until[dependent.key] = max(needs_until.get(dependent.key, 0.0), ends)
            waiting[dependent.key] -= 1
            if waiting[dependent.key] == 0:
                item = (needs_until[dependent.key], order[dependent.key], dependent)
                heapq.heappush(ready, item)
    if done != len(jobs):
        raise ValueError("the planned jobs wait on each other in a cycle")
    return {name: sim.billed() for name, sim in sims.items()}


# -- after a render ------------------------------------------------------------------------------


class Attempt(Protocol):
    """What :func:`render_billing` reads of a job attempt (``manifest.AttemptRecord`` has it)."""

    @property
    def execution_ms(self) -> int | None: ...
    @property
    def delay_ms(self) -> int | None: ...
    @property
    def cost_usd(self) -> float: ...
    @property
    def endpoint(self) -> str | None: ...


@dataclass(frozen=True)
class EndpointBilling:
    """One endpoint's part of a render: its jobs as billed, and the start and idle time they
    caused (an estimate: RunPod reports neither per job). ``start_in_jobs``: the jobs' cost
    already holds delayTime (``bill_delay``), so the start adds nothing to ``extra_usd``."""

    stage: str
    endpoint: str
    billing: Billing
    jobs: int
    execution_s: float
    jobs_usd: float
    workers: int = 0
    start_s: float = 0.0
    idle_s: float = 0.0
    extra_usd: float = 0.0
    start_in_jobs: bool = False


@dataclass(frozen=True)
class RenderBilling:
    """A render's jobs as billed (``jobs_usd``, the attempts' own costs), and the estimated
    start and idle time of the workers they ran on (``extra_usd``); ``total_usd`` is both."""

    endpoints: tuple[EndpointBilling, ...] = ()
    jobs_usd: float = 0.0
    extra_usd: float = 0.0
    total_usd: float = 0.0

    def describe(self) -> str:
        """One line for a summary, e.g. ``billed ~$0.31: jobs $0.10 + ~$0.21 worker start
        (3 workers, ~240 s) and idle time (~180 s), estimated``."""
        gpu = [e for e in self.endpoints if e.billing == "gpu"]
        workers = sum(e.workers for e in gpu)
        start = sum(e.start_s for e in gpu if not e.start_in_jobs)
        idle = sum(e.idle_s for e in gpu)
        if not workers:
            return f"billed ${self.jobs_usd:.3f} (the jobs; no serverless workers of yours)"
        return (
            f"billed ~${self.total_usd:.3f}: jobs ${self.jobs_usd:.3f} + ~${self.extra_usd:.3f} "
            f"worker start (~{start:.0f} s) and idle time (~{idle:.0f} s) of {workers} "
            "worker(s), estimated"
        )


def render_billing(
    attempts: Mapping[str, Sequence[Attempt]],
    costs: CostModel,
    *,
    concurrency: Mapping[str, int] | None = None,
) -> RenderBilling:
    """What a finished render's jobs were billed, and an estimate of what its workers' start and
    idle time added.

    ``attempts``: per stage (``edit``, ``animate``), every attempt the render made (warm-ups
    under ``animate``); each is grouped by its ``endpoint`` (None: the stage's first choice) and
    billed as ``costs`` bills it (:meth:`~videokit.costs.CostModel.billing`). On a GPU endpoint,
    each attempt whose delayTime says it waited for a cold start (10 s or more) started a worker
    (at most as many as ``concurrency`` and the max workers allow; at least one ran the jobs),
    billed its delayTime capped at the stage's start time (delayTime also holds time queued);
    each worker idled one idle timeout after its last job. A fallback GPU endpoint is taken to
    bill like the stage's first. Per-output and self-hosted endpoints add nothing.
    ``concurrency``: the render's jobs at once per stage.
    """
    found: list[EndpointBilling] = []
    for stage, stage_attempts in attempts.items():
        groups: dict[str, list[Attempt]] = {}
        for attempt in stage_attempts:
            groups.setdefault(attempt.endpoint or "", []).append(attempt)
        for endpoint, group in groups.items():
            ran = [a for a in group if a.execution_ms is not None or a.cost_usd > 0]
            kind = costs.billing(stage, endpoint or None)
            record = EndpointBilling(
                stage=stage,
                endpoint=endpoint,
                billing=kind,
                jobs=len(ran),
                execution_s=sum((a.execution_ms or 0) for a in ran) / 1000,
                jobs_usd=sum(a.cost_usd for a in group),
            )
            if kind == "gpu" and ran:
                facts = costs.endpoint_facts(stage)
                limits = [len(ran), facts.max_workers, (concurrency or {}).get(stage)]
                most = min(n for n in limits if n is not None)
                delays = sorted(((a.delay_ms or 0) / 1000 for a in ran), reverse=True)
                cold = [d for d in delays if d >= _COLD_DELAY_S][:most]
                workers = max(1, len(cold))
                start = sum(min(d, facts.start_s) for d in cold)
                idle = workers * facts.idle_timeout_s
                in_jobs = costs.bill_delay.get(stage, False)
                extra = (idle + (0.0 if in_jobs else start)) * costs.rate(stage)
                record = replace(
                    record,
                    workers=workers,
                    start_s=round(start, 3),
                    idle_s=idle,
                    extra_usd=round(extra, 6),
                    start_in_jobs=in_jobs,
                )
            found.append(record)
    jobs_usd = round(sum(e.jobs_usd for e in found), 6)
    extra_usd = round(sum(e.extra_usd for e in found), 6)
    return RenderBilling(tuple(found), jobs_usd, extra_usd, round(jobs_usd + extra_usd, 6))
