"""Cold starts measured on an endpoint are what the next estimate prices its start time at."""

from __future__ import annotations

from pathlib import Path

from videokit.cold_starts import COLD_DELAY_S, KEEP, measured_start, record_cold_starts
from videokit.config import Settings
from videokit.pipeline.accounts import record_starts
from videokit.pipeline.manifest import (
    AttemptRecord,
    Manifest,
    RunRecord,
    SceneRecord,
    StageRecord,
)


def attempt(delay_s: float, endpoint: str = "abc123") -> AttemptRecord:
    return AttemptRecord(
        job_id="j", status="COMPLETED", delay_ms=int(delay_s * 1000), endpoint=endpoint
    )


def test_only_delays_long_enough_to_be_cold_starts_are_kept(tmp_path: Path) -> None:
    record_cold_starts(tmp_path, {"abc123": [2.0, 30.0, 40.0, COLD_DELAY_S - 0.1, 50.0]})
    assert measured_start(tmp_path, "abc123") == (40.0, 3)
    assert measured_start(tmp_path, "other") is None
    record_cold_starts(tmp_path, {"abc123": [float(s) for s in range(100, 100 + KEEP)]})
    median, count = measured_start(tmp_path, "abc123") or (0.0, 0)
    assert count == KEEP and median == 100 + (KEEP - 1) / 2  # only the latest KEEP


def test_a_render_records_its_jobs_cold_starts_per_endpoint(tmp_path: Path) -> None:
    manifest = Manifest(run=RunRecord(id="r1"))
    manifest.scenes["a"] = SceneRecord(
        source="reference",
        seed=1,
        animate=StageRecord(key="k", status="done", run_id="r1", attempts=[attempt(45.0)]),
        edit=StageRecord(key="e", status="done", run_id="r1", attempts=[attempt(20.0, "edit-ep")]),
    )
    manifest.scenes["b"] = SceneRecord(
        source="a",
        seed=2,
        # Taken from the store: not this run's job, not this run's cold start.
        animate=StageRecord(key="k2", status="done", cached=True, attempts=[attempt(99.0)]),
    )
    record_starts(manifest, tmp_path)
    assert measured_start(tmp_path, "abc123") == (45.0, 1)
    assert measured_start(tmp_path, "edit-ep") == (20.0, 1)


def test_estimates_price_the_start_at_the_measured_cold_starts_unless_configured(
    tmp_path: Path,
) -> None:
    record_cold_starts(tmp_path, {"abc123": [30.0, 34.0]})
    env = {
        "VIDEOKIT_ANIMATE_ENDPOINT": "abc123",
        "RUNPOD_API_KEY": "k",
        "VIDEOKIT_CACHE_DIR": str(tmp_path),
    }
    costs = Settings.resolve(env=env, dotenv=None, config_file=None).cost_model()
    assert costs.start_time("animate") == 32.0
    assert costs.fact_sources["animate.start"] == "measured: 2 cold start(s)"
    configured = {**env, "VIDEOKIT_ANIMATE_START_SECONDS": "75"}
    costs = Settings.resolve(env=configured, dotenv=None, config_file=None).cost_model()
    assert costs.start_time("animate") == 75.0
