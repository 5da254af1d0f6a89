"""The billing model of RunPod's flex workers (videokit.billed_time), with hand-computed cases."""

from __future__ import annotations

import pytest

from videokit.billed_time import (
    BilledTime,
    EndpointFacts,
    FlexEndpoint,
    JobTiming,
    PlannedJob,
    RenderBilling,
    billed_time,
    burst,
    render_billing,
    simulate,
)
from videokit.costs import CostModel, OutputPrice
from videokit.pipeline.manifest import AttemptRecord, Manifest

PRICE = 0.001  # USD per second, for round figures


def test_one_worker_with_a_short_gap_and_a_long_one() -> None:
    # Three 20 s jobs, idle timeout 60 s, cold start 30 s:
    #   t=0    job 1 submitted: no worker is up, one starts     start 0..30, runs 30..50
    #   t=60   job 2 submitted: the worker idled 10 s (< 60)    idle 50..60, runs 60..80
    #   t=170  job 3 submitted: the worker idled 90 s (> 60),
    #          so it stopped at 140 after a whole idle timeout  idle 80..140 (60 s)
    #          a new worker starts                              start 170..200, runs 200..220
    #   then it idles one idle timeout and stops                idle 220..280 (60 s)
    # start 30 + 30 = 60; execution 3 x 20 = 60; idle 10 + 60 + 60 = 130; total 250 s.
    jobs = [JobTiming(0, 20), JobTiming(60, 20), JobTiming(170, 20)]
    billed = billed_time(jobs, EndpointFacts(idle_timeout_s=60, start_s=30, max_workers=1))
    assert billed == BilledTime(
        start_s=60, execution_s=60, idle_s=130, workers=2, workers_started=2
    )
    assert billed.total_s == 250


def test_warm_and_cold_workers() -> None:
    # Four 30 s jobs at once on at most 2 workers, idle timeout 5 s, start 60 s.
    facts = EndpointFacts(idle_timeout_s=5, start_s=60, max_workers=2)
    durations = [30.0] * 4
    # Cold: both workers start (2 x 60 s), run two jobs each (4 x 30 s, the other two queue),
    # and idle 5 s each after their last: 120 + 120 + 10 = 250 s.
    cold = burst(durations, facts, warm=False)
    assert cold == BilledTime(120, 120, 10, workers=2, workers_started=2)
    assert cold.total_s == 250
    # Warm: the same workers are up already: no start, 120 + 10 = 130 s.
    warm = burst(durations, facts, warm=True)
    assert warm == BilledTime(0, 120, 10, workers=2, workers_started=0)
    assert warm.total_s == 130


def test_a_gap_of_exactly_the_idle_timeout_keeps_the_worker() -> None:
    # Job 1 runs 0..10 on a warm worker, job 2 comes at 15: a 5 s gap, the worker is still up.
    facts = EndpointFacts(idle_timeout_s=5, start_s=60)
    billed = billed_time([JobTiming(0, 10), JobTiming(15, 10)], facts, warm_workers=1)
    assert billed == BilledTime(0, 20, 5 + 5, workers=1, workers_started=0)


def test_more_jobs_than_workers_queue_and_order_is_enforced() -> None:
    endpoint = FlexEndpoint(EndpointFacts(idle_timeout_s=0, start_s=10, max_workers=1))
    assert endpoint.run(0, 5) == 15  # starts 0..10, runs 10..15
    assert endpoint.run(1, 5) == 20  # queued behind it
    with pytest.raises(ValueError, match="order"):
        endpoint.run(0.5, 1)
    assert endpoint.billed() == BilledTime(10, 10, 0, workers=1, workers_started=1)


def test_simulate_follows_what_each_job_waits_for() -> None:
    # e1 (edit, 4 s) -> a1 (animate, 30 s) -> e2 (edit, 4 s); idle timeout 10 s, starts 20/40 s.
    endpoints = {
        "edit": EndpointFacts(idle_timeout_s=10, start_s=20),
        "animate": EndpointFacts(idle_timeout_s=10, start_s=40),
    }
    jobs = [
        PlannedJob("e1", "edit", 4),
        PlannedJob("a1", "animate", 30, after=("e1",)),
        PlannedJob("e2", "edit", 4, after=("a1",)),
    ]
    # Warm: e1 0..4, a1 4..34, e2 at 34: the edit worker idled 30 s > 10, so it stopped (idle
    # 10) and e2 runs on a new, warm one 34..38 (idle 10 after). Edit: exec 8, idle 20.
    warm = simulate(jobs, endpoints, warm=True)
    assert warm["edit"] == BilledTime(0, 8, 20, workers=2, workers_started=0)
    assert warm["animate"] == BilledTime(0, 30, 10, workers=1, workers_started=0)
    # Cold: e1 starts 0..20, runs 20..24; a1 starts 24..64, runs 64..94; e2 at 94 pays a new
    # start (the first edit worker stopped at 34): 2 x 20 s.
    cold = simulate(jobs, endpoints, warm=False)
    assert cold["edit"] == BilledTime(40, 8, 20, workers=2, workers_started=2)
    assert cold["animate"] == BilledTime(40, 30, 10, workers=1, workers_started=1)
    loop = [PlannedJob("x", "edit", 1, after=("y",)), PlannedJob("y", "edit", 1, after=("x",))]
    with pytest.raises(ValueError, match="cycle"):
        simulate(loop, endpoints, warm=True)


def test_facts_are_checked() -> None:
    with pytest.raises(ValueError):
        EndpointFacts(idle_timeout_s=-1)
    with pytest.raises(ValueError):
        EndpointFacts(max_workers=0)


def _costs() -> CostModel:
    return CostModel(
        prices={"ADA_80_PRO": PRICE},
        idle_timeout_s={"edit": 60.0, "animate": 5.0},
        start_s={"edit": 30.0, "animate": 90.0},
        max_workers={"animate": 2},
        public_endpoints=frozenset({"wan-2-2-i2v-720"}),
    )


def _attempt(endpoint: str | None, execution_ms: int, delay_ms: int) -> AttemptRecord:
    return AttemptRecord(
        job_id="j",
        status="COMPLETED",
        execution_ms=execution_ms,
        delay_ms=delay_ms,
        cost_usd=execution_ms / 1000 * PRICE,
        endpoint=endpoint,
    )


def test_render_billing_adds_the_start_and_idle_time_the_jobs_caused() -> None:
    attempts = {
        # Two edits on one endpoint, concurrency 1: one worker, which started cold once (the
        # first job's delay, 45 s, capped at the 30 s start), then idled 60 s.
        "edit": [_attempt("abc", 4000, 45_000), _attempt("abc", 4000, 200)],
        # Three animate jobs, at most 2 workers: two starts (the two largest delays, 50 s and
        # 90 s capped at 90 s), each idles 5 s; one job on the public endpoint adds nothing.
        "animate": [
            _attempt(None, 30_000, 120_000),
            _attempt(None, 30_000, 50_000),
            _attempt(None, 30_000, 1_000),
            _attempt("wan-2-2-i2v-720", 60_000, 0),
            _attempt("http://gpu-box:8002/v2/animate", 30_000, 0),
        ],
    }
    result = render_billing(attempts, _costs(), concurrency={"edit": 1, "animate": 4})
    edit, animate, public, own = result.endpoints
    assert (edit.billing, edit.workers, edit.start_s, edit.idle_s) == ("gpu", 1, 30, 60)
    assert edit.extra_usd == pytest.approx((30 + 60) * PRICE)
    assert (animate.billing, animate.workers, animate.idle_s) == ("gpu", 2, 10)
    assert animate.start_s == pytest.approx(90 + 50)
    assert animate.execution_s == 90 and animate.jobs == 3
    assert (public.billing, public.extra_usd) == ("per-output", 0.0)
    assert (own.billing, own.extra_usd) == ("self-hosted", 0.0)
    assert result.jobs_usd == pytest.approx((8 + 90 + 60 + 30) * PRICE)
    assert result.extra_usd == pytest.approx((90 + 150) * PRICE)
    assert result.total_usd == pytest.approx(result.jobs_usd + result.extra_usd)
    assert "worker start (~170 s) and idle time (~70 s) of 3 worker(s)" in result.describe()


def test_render_billing_counts_a_billed_delay_once_and_is_kept_in_the_manifest() -> None:
    costs = CostModel(prices={"ADA_80_PRO": PRICE}, bill_delay={"edit": True})
    result = render_billing({"edit": [_attempt("abc", 4000, 45_000)]}, costs)
    [edit] = result.endpoints
    assert edit.start_in_jobs and edit.start_s == 45  # the default start is 60 s
    assert edit.extra_usd == pytest.approx(5 * PRICE)  # the idle timeout only
    manifest = Manifest(billing=result)
    again = Manifest.model_validate_json(manifest.model_dump_json())
    assert again.billing == result
    assert Manifest.model_validate_json("{}").billing is None  # older manifests load


def test_render_billing_of_a_stage_billed_per_output() -> None:
    costs = CostModel(output_prices={"animate": OutputPrice(0.06, "second")})
    result = render_billing({"animate": [_attempt(None, 60_000, 0)]}, costs)
    assert result.extra_usd == 0 and result.endpoints[0].billing == "per-output"
    assert result.describe().startswith("billed $")
    assert render_billing({}, costs) == RenderBilling()


def test_render_billing_counts_the_workers_the_delays_say_started() -> None:
    # Five jobs one after another on a warm endpoint: small delays, so one worker, no start;
    # it idles one idle timeout (5 s) after the last.
    warm = [_attempt(None, 17_000, 300) for _ in range(5)]
    [animate] = render_billing({"animate": warm}, _costs(), concurrency={"animate": 4}).endpoints
    assert (animate.workers, animate.start_s, animate.idle_s) == (1, 0, 5)
    # The first waited 95 s (a cold start, capped at the 90 s start time), then a second worker
    # started (40 s): two workers.
    cold = [_attempt(None, 17_000, 95_000), _attempt(None, 17_000, 40_000), *warm[:3]]
    [animate] = render_billing({"animate": cold}, _costs(), concurrency={"animate": 4}).endpoints
    assert (animate.workers, animate.start_s, animate.idle_s) == (2, 130, 10)
