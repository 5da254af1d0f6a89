"""A render's spending limit (``--max-cost``): no job is submitted that could take spend past it.

Before each job the render adds what it has spent to what the jobs now running are estimated to
cost, plus this job's estimate; over the limit, the job is not submitted and no later one is
either. Jobs already running are left to finish (cancelling them would waste what they cost so
far), and a job being re-attached to is running already, so it is never held back. The render
then ends with :class:`~videokit.errors.BudgetSpentError`; everything finished stays cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from videokit.backends.base import Stage
from videokit.errors import BudgetSpentError
from videokit.protocol import AnimateRequest, EditRequest

__all__ = ["Budget"]

Request = EditRequest | AnimateRequest


@dataclass
class Budget:
    """``limit_usd``: None for no limit. ``estimate``: what one job should cost."""

    limit_usd: float | None
    estimate: Callable[[Stage, Request], float]
    #: Estimates of the jobs admitted and still running.
    reserved_usd: float = 0.0
    #: Set once a job was held back: no later job is admitted either.
    exhausted: bool = False

    def admit(self, stage: Stage, request: Request, spent_usd: float, scene: str) -> float:
        """Reserve this job's estimate, or raise BudgetSpentError if it could pass the limit."""
        cost = self.estimate(stage, request)
        if self.limit_usd is None:
            return 0.0
        committed = spent_usd + self.reserved_usd
        if self.exhausted or committed + cost > self.limit_usd + 1e-9:
            self.exhausted = True
            raise BudgetSpentError(
                f"the budget of ${self.limit_usd:.3f} would be passed: ${spent_usd:.3f} spent, "
                f"${self.reserved_usd:.3f} running, and the {stage} job of scene '{scene}' "
                f"would cost ~${cost:.3f}; it was not submitted",
                hint="raise --max-cost (max_cost in videokit.toml) and render again: finished "
                "scenes are cached and cost nothing",
            )
        self.reserved_usd += cost
        return cost

    def release(self, reserved_usd: float) -> None:
        """The job ended: its spend is now counted as spent, not reserved."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
