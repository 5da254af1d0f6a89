"""When to read a job's status next: little latency at the job's end, within a request budget.

Pure and clock-free: the caller passes the times. From what earlier jobs of the stage took, the
first read comes shortly before this one should end, then a few short reads around the expected
end; without history, reads come at growing intervals, never longer than 15% of the time the job
has taken (added latency stays proportional). Whatever the timing history says, a token bucket
bounds the reads: at most ``burst`` (20) at once, refilled at ``rate_per_s`` (2/s), and at
``late_rate_per_s`` (1/s) once the job has run longer than expected: a job of T seconds costs
at most ``20 + 2 T`` status requests. RunPod allows 2000 per 10 s per endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollBudget", "PollSchedule"]


@dataclass(frozen=True)
class PollBudget:
    rate_per_s: float = 2.0
    late_rate_per_s: float = 1.0
    burst: float = 20.0
    min_interval_s: float = 0.025
    max_interval_s: float = 2.0

    def most_requests(self, seconds: float) -> float:
        """The most reads a job that lasted ``seconds`` may have cost."""
        return self.burst + self.rate_per_s * seconds + 1


def _margin(expected: float) -> float:
    # Wake a little early: jobs vary, and a late read costs latency on every chained scene.
    return 0.04 + 0.02 * expected


@dataclass
class PollSchedule:
    """The reads of one job. Call :meth:`spent` at each read, :meth:`delay` for the next one."""

    budget: PollBudget
    tokens: float = -1.0  # set to the full burst by the first read
    stamp: float | None = None  # when ``tokens`` was last brought up to date
    interval: float = 0.0

    def _rate(self, elapsed: float, expected: float | None) -> float:
        late = expected is not None and elapsed > expected
        return self.budget.late_rate_per_s if late else self.budget.rate_per_s

    def _refill(self, now: float, rate: float) -> float:
        if self.stamp is None:
            return self.budget.burst
        return min(self.budget.burst, self.tokens + max(0.0, now - self.stamp) * rate)

    def spent(self, now: float, *, elapsed: float, expected: float | None) -> None:
        """A read happens at ``now`` (``elapsed`` seconds into the job)."""
        self.tokens = self._refill(now, self._rate(elapsed, expected)) - 1.0
        self.stamp = now

    def wanted(self, elapsed: float, expected: float | None) -> float:
        """The delay the latency goal alone would choose (no budget)."""
        budget = self.budget
        if expected is not None:
            margin = _margin(expected)
            remaining = expected - elapsed
            if remaining > margin + budget.min_interval_s:
                # Slower than usual (a queue, a cold start) or just started: sleep most of it.
                return remaining - margin
            if remaining > -margin:
                # Around the expected end: short reads, scaled to the job's length.
                return max(budget.min_interval_s, margin / 3)
            if elapsed < expected * 1.25:
                # Running late: spread a quarter of the burst over a quarter of its length.
                window = 0.25 * expected
                return max(budget.min_interval_s, window / max(1.0, budget.burst / 4))
        # No history, or well past it: growing intervals, never more than 15% of the time the
        # job has taken (latency stays proportional, reads grow logarithmically: a 2 s job
        # takes about 19, well inside its budget, so the budget does not hold them back).
        floor = max(budget.min_interval_s, 0.05)
        self.interval = (
            floor if self.interval <= 0 else min(budget.max_interval_s, self.interval * 1.4)
        )
        return min(self.interval, max(floor, 0.15 * elapsed))

    def delay(self, now: float, *, elapsed: float, expected: float | None) -> float:
        """Seconds from ``now`` until the next read: what :meth:`wanted` asks, or later if the
        budget has no token for it yet."""
        wanted = self.wanted(elapsed, expected)
        rate = self._rate(elapsed + wanted, expected)
        available = self._refill(now + wanted, rate)
        if available >= 1.0:
            return wanted
        return wanted + (1.0 - available) / rate
