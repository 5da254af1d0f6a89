"""What each job attempt cost: the endpoint's figures where it gave them, else marked estimates.

A per-output endpoint (RunPod's Public Endpoints) reports its cost in the output; otherwise a job
costs its ``executionTime`` at the GPU's rate (see :mod:`videokit.costs`). Where the endpoint said
nothing (a cancelled job before it reported, a job whose result expired, a `run` whose reply was
lost) the cost is the client's estimate from what it saw and learned, with ``cost_estimated`` set.
"""

from __future__ import annotations

from collections.abc import Callable

from videokit.backends.base import JobAttempt, Stage
from videokit.backends.kinds import ApiKind
from videokit.backends.runpod.following import Watch
from videokit.backends.runpod.wire import JobStatus
from videokit.costs import CostModel
from videokit.protocol import AnimateRequest, EditRequest

__all__ = ["Accounting"]

Request = EditRequest | AnimateRequest


class Accounting:
    """Costs of job attempts (a part of :class:`~videokit.backends.runpod.jobs.JobPolicy`)."""

    kinds: dict[Stage, ApiKind]
    costs: CostModel
    clock: Callable[[], float]
    expected_exec_s: dict[Stage, float]

    # -- estimates --------------------------------------------------------------------------------
    def run_estimate_s(self, stage: Stage, request: Request | None) -> float:
        """How long a job of ``stage`` runs: learned, else the kind's typical figure, else the
        cost model's estimate for ``request``."""
        learned = self.expected_exec_s.get(stage)
        if learned is not None:
            return learned
        typical = self.kinds[stage].typical_execution_s
        if typical is not None:
            return typical
        return self.costs.estimate_seconds(request) if request is not None else 0.0

    def estimated_cost(self, stage: Stage, request: Request | None, seconds: float) -> float:
        price = self.kinds[stage].price
        if price is not None:
            return price.of(request) if request is not None else 0.0
        return self.costs.cost(stage, seconds)

    def account(
        self,
        stage: Stage,
        attempt: JobAttempt,
        final: JobStatus,
        watch: Watch,
        request: Request | None,
    ) -> None:
        """Record a job's final status on its attempt, with its cost."""
        attempt.status = final.state
        attempt.execution_ms = final.execution_ms
        attempt.delay_ms = final.delay_ms
        reported = self.kinds[stage].reported_cost(final.output)
        if reported is not None:
            attempt.cost_usd, attempt.cost_estimated = reported, False
            return
        self.price(stage, attempt, watch, request)

    def price(
        self, stage: Stage, attempt: JobAttempt, watch: Watch, request: Request | None
    ) -> None:
        """The attempt's cost from its timings; where the endpoint gave none, an estimate."""
        per_output = self.kinds[stage].price
        if per_output is not None:
            # Billed per output: a job that produced none is taken to cost nothing.
            made = attempt.status == "COMPLETED"
            attempt.cost_usd = per_output.of(request) if made and request is not None else 0.0
            attempt.cost_estimated = True
            return
        if attempt.execution_ms is not None:
            seconds = attempt.execution_ms / 1000
            attempt.cost_estimated = False
        else:
            seconds = watch.running_s(self.clock())
            attempt.cost_estimated = True
        attempt.cost_usd = self.costs.cost(stage, seconds, (attempt.delay_ms or 0) / 1000)

    def lost(
        self, stage: Stage, attempt: JobAttempt, watch: Watch, why: str, request: Request | None
    ) -> None:
        """A job the endpoint forgot: it may have run (its result expired) while we slept, so
        its cost is what it would have run, within the time it existed; an estimate."""
        attempt.status = "LOST"
        attempt.error = why
        if self.kinds[stage].price is not None:
            attempt.cost_usd, attempt.cost_estimated = 0.0, True
            return
        existed = max(0.0, self.clock() - watch.since)
        if watch.running_since is not None:
            seconds = watch.running_s(self.clock())
        else:
            seconds = min(existed, self.run_estimate_s(stage, request))
        attempt.cost_usd = self.costs.cost(stage, seconds)
        attempt.cost_estimated = True
