"""``videokit cost``: a render's estimate against emulated RunPod billing records.

The work dir's manifest is written by hand: what a RunPod render records (backend ``runpod``, the
latest run with its start, stages with their job attempts and costs, warm-ups), so the render's
window and estimate are exactly known. The bill comes from the loopback emulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.rest_ops_emulator import OpsEmulator, ops_emulator
from videokit.cli.app import app
from videokit.pipeline.manifest import AttemptRecord, Manifest, RunRecord, SceneRecord, StageRecord
from videokit.rest.billing import Bucket, EndpointEstimate, reconcile

KEY = "rp_COST_TEST_KEY_never_shown_42"
EDIT, ANIMATE = "ep3dit000", "ep4nim8te"
START = datetime(2026, 9, 1, 12, 10, tzinfo=UTC)
END = datetime(2026, 9, 1, 12, 40, tzinfo=UTC)
HOUR = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)


def attempt(job: str, usd: float, estimated: bool = False) -> AttemptRecord:
    return AttemptRecord(job_id=job, status="COMPLETED", cost_usd=usd, cost_estimated=estimated)


def write_manifest(workdir: Path, backend: str = "runpod") -> Path:
    """Two scenes rendered by run r1 (edit $0.10, animate $0.50 + $0.30 of which $0.30 is
    videokit's estimate, a $0.02 warm-up), one scene from the cache ($9, not this run's)."""
    stage = StageRecord
    manifest = Manifest(
        backend=backend,
        run=RunRecord(id="r1", started=START.isoformat(), finished=True),
        updated=END.isoformat(),
        warmup=[attempt("warm", 0.02)],
        scenes={
            "a": SceneRecord(
                source="ref.png", seed=1, status="done",
                edit=stage(key="k1", status="done", run_id="r1", attempts=[attempt("e1", 0.10)]),
                animate=stage(
                    key="k2", status="done", run_id="r1", attempts=[attempt("a1", 0.50)]
                ),
            ),
            "b": SceneRecord(
                source="ref.png", seed=2, status="failed",
                animate=stage(key="k3", status="failed", attempts=[attempt("a2", 0.30, True)]),
            ),
            "c": SceneRecord(
                source="ref.png", seed=3, status="done",
                animate=stage(
                    key="k4", status="done", cached=True, attempts=[attempt("old", 9.0)]
                ),
            ),
        },
    )  # fmt: skip
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "manifest.json"
    path.write_text(manifest.model_dump_json(indent=2))  # not save(): it would move `updated`
    return path


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[OpsEmulator]:
    with ops_emulator() as emu:
        monkeypatch.chdir(tmp_path)
        for name in list(os.environ):
            if name.startswith("VIDEOKIT_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("RUNPOD_API_KEY", KEY)
        monkeypatch.setenv("VIDEOKIT_RUNPOD_REST_URL", emu.base_url)
        monkeypatch.setenv("VIDEOKIT_EDIT_ENDPOINT", EDIT)
        monkeypatch.setenv("VIDEOKIT_ANIMATE_ENDPOINT", ANIMATE)
        yield emu


def cost(workdir: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["cost", str(workdir), *extra])
    return result.exit_code, result.output


def test_cost_prints_estimated_billed_and_ratio_and_keeps_them(
    emulator: OpsEmulator, tmp_path: Path
) -> None:
    emulator.serverless_bills = {
        EDIT: [(HOUR, 0.11)],
        ANIMATE: [(HOUR, 0.90), (HOUR - timedelta(hours=3), 5.0)],  # that one is not this render
        "someone-else": [(HOUR, 7.0)],
    }
    path = write_manifest(tmp_path / "out" / "story")
    code, output = cost(path.parent)
    assert code == 0, output
    lines = {line.split()[0]: line for line in output.splitlines() if line.strip()}
    assert "$   0.1000 $   0.1100 1.10x" in lines[EDIT]
    # animate: 0.50 + 0.30 (failed, estimated) + 0.02 warm-up; billed 0.90
    assert "$   0.8200 $   0.9000 1.10x" in lines[ANIMATE]
    assert "$0.3000 is videokit's own" in output
    assert "$   0.9200 $   1.0100 1.10x" in lines["total"]
    assert "other traffic" not in output
    assert "cannot be told apart" in output  # a 30 min render in an hour bucket
    queried = {r.query.get("serverlessId") for r in emulator.seen("/billing/serverless")}
    assert queried == {EDIT, ANIMATE}
    query = emulator.seen("/billing/serverless")[0].query
    assert (query["startTime"], query["endTime"], query["bucketSize"]) == (
        "2026-09-01T12:00:00Z",
        "2026-09-01T13:00:00Z",
        "hour",
    )
    kept = Manifest.load(path).reconciliation
    assert kept is not None and kept.run_id == "r1" and not kept.flagged
    assert kept.estimated_usd == pytest.approx(0.92) and kept.billed_usd == pytest.approx(1.01)
    assert {line.billing: line.ratio for line in kept.lines} == {EDIT: 1.1, ANIMATE: 1.0976}


def test_other_traffic_in_the_window_is_flagged_not_mixed(
    emulator: OpsEmulator, tmp_path: Path
) -> None:
    emulator.serverless_bills = {EDIT: [(HOUR, 0.10)], ANIMATE: [(HOUR, 4.00)]}
    path = write_manifest(tmp_path / "w")
    code, output = cost(path.parent)
    assert code == 0, output
    animate = next(line for line in output.splitlines() if line.startswith(ANIMATE))
    assert "other traffic" in animate
    assert "the bill includes jobs that are not this render's" in output
    code, output = cost(path.parent, "--json")
    document = json.loads(output.strip().splitlines()[-1])
    assert document["type"] == "cost" and document["flagged"] is True
    flags = {line["billing"]: line["flag"] for line in document["lines"]}
    assert flags == {EDIT: "ok", ANIMATE: "other_traffic"}
    kept = Manifest.load(path).reconciliation
    assert kept is not None and kept.flagged


def test_public_endpoints_are_billed_together(
    emulator: OpsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDEOKIT_ANIMATE_ENDPOINT", "wan-2-2-i2v-720")
    emulator.serverless_bills = {EDIT: [(HOUR, 0.10)]}
    emulator.public_bills = [(HOUR, 0.80)]
    code, output = cost(write_manifest(tmp_path / "w").parent, "--json")
    assert code == 0, output
    document = json.loads(output)
    public = next(line for line in document["lines"] if line["route"] == "endpoints")
    assert public["billed_usd"] == 0.8 and public["endpoints"] == ["wan-2-2-i2v-720"]
    assert any("bills all Public Endpoints together" in note for note in public["notes"])
    assert emulator.seen("/billing/endpoints")


def test_nothing_billed_yet_is_said(emulator: OpsEmulator, tmp_path: Path) -> None:
    code, output = cost(write_manifest(tmp_path / "w").parent)
    assert code == 0, output
    assert "not billed yet" in output and "billing can lag" in output


def test_cost_needs_a_key_and_a_runpod_render(
    emulator: OpsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = cost(write_manifest(tmp_path / "p", backend="preview").parent)
    assert code == 2 and "'preview' backend" in output
    code, output = cost(tmp_path / "nowhere")
    assert code == 2 and "not a render's work directory" in output
    monkeypatch.delenv("RUNPOD_API_KEY")
    code, output = cost(write_manifest(tmp_path / "w").parent)
    assert code == 2 and "RUNPOD_API_KEY is not set" in output
    assert "Traceback" not in output
    assert emulator.requests == []


def test_reconcile_rule() -> None:
    def one(billed: list[Bucket], usd: float = 1.0) -> str:
        estimate = [EndpointEstimate(EDIT, "edit", jobs=1, usd=usd)]
        result = reconcile(estimate, {EDIT: billed}, START, END, now=END)
        return result.lines[0].flag

    in_window = [Bucket(start=HOUR, end=HOUR + timedelta(hours=1), usd=1.4)]
    assert one(in_window) == "ok"
    assert one([in_window[0].model_copy(update={"usd": 1.6})]) == "other_traffic"
    assert one([in_window[0].model_copy(update={"usd": 0.005})], usd=0.001) == "ok"  # pennies
    outside = Bucket(start=HOUR - timedelta(hours=2), end=HOUR - timedelta(hours=1), usd=50)
    assert one([outside]) == "not_billed_yet"
