"""End to end: the installed ``videokit`` command on the example story, with real ffmpeg."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from videokit.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "story.yaml"


def videokit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def example_render(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object], list[dict[str, object]]]:
    out = tmp_path_factory.mktemp("example") / "out"
    plan = videokit("plan", str(EXAMPLE), "--out", str(out), "--json")
    assert plan.returncode == 0, plan.stderr
    rendered = videokit("render", str(EXAMPLE), "--out", str(out), "--json")
    assert rendered.returncode == 0, rendered.stderr
    events = [json.loads(line) for line in rendered.stdout.splitlines()]
    return out, json.loads(plan.stdout), events


def test_example_renders_to_the_planned_frame_count(
    example_render: tuple[Path, dict[str, object], list[dict[str, object]]],
) -> None:
    out, plan, _ = example_render
    final = out / "final.mp4"
    info = probe_video(final)
    assert info.frames == plan["final_frames"] == 179
    assert (
        plan["formula"]
        == "49 + 49 + (49 - 1 seam) + 41 - 8 crossfade = 179 frames = 11.188 s at 16 fps"
    )
    assert (info.width, info.height, info.fps) == (832, 480, 16.0)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.duration_s == pytest.approx(179 / 16, abs=1 / 16)
    assert info.has_audio and info.audio_codec == "aac"
    assert (out / "manifest.json").is_file() and (out / "contact_sheet.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["scenes"]) == {"hello", "tuxedo", "roulette", "beach", "outtake"}
    assert manifest["final"]["frames"] == 179
    # The branch off the timeline is kept as its own clip.
    assert probe_video(out / "scenes" / "outtake" / "clip.mp4").frames == 49
    assert probe_video(out / "scenes" / "beach" / "clip.mp4").frames == 41


def test_json_events_are_one_object_per_line(
    example_render: tuple[Path, dict[str, object], list[dict[str, object]]],
) -> None:
    _, _, events = example_render
    types = [e["type"] for e in events]
    assert types[0] == "render_started" and types[-1] == "render_done"
    assert types.count("scene_done") == 5
    assert "stitch_done" in types


def test_second_render_is_all_cache_and_quiet(
    example_render: tuple[Path, dict[str, object], list[dict[str, object]]],
) -> None:
    out, _, _ = example_render
    again = videokit("render", str(EXAMPLE), "--out", str(out), "--json")
    events = [json.loads(line) for line in again.stdout.splitlines()]
    assert not [e for e in events if e["type"] in ("scene_started", "job_submitted")]
    assert sorted(
        e["scene"] for e in events if e["type"] == "scene_done" and e["cached"]
    ) == sorted(["hello", "tuxedo", "roulette", "beach", "outtake"])
    quiet = videokit("render", str(EXAMPLE), "--out", str(out))
    assert quiet.returncode == 0
    assert quiet.stdout.strip() == str(out / "final.mp4")  # quiet on success: just the result


def test_plan_reports_cache_hits_after_a_render(
    example_render: tuple[Path, dict[str, object], list[dict[str, object]]],
) -> None:
    out, _, _ = example_render
    plan = json.loads(videokit("plan", str(EXAMPLE), "--out", str(out), "--json").stdout)
    assert plan["jobs"] == {"edit": 0, "animate": 0}
    assert plan["cached"] == {"edit": 2, "animate": 5}
    assert plan["all_jobs_cost_usd"] > 0


def test_validate_and_schema() -> None:
    ok = videokit("validate", str(EXAMPLE))
    assert ok.returncode == 0 and "ok" in ok.stdout
    schema = json.loads(videokit("schema").stdout)
    scene = schema["$defs"]["Scene"]["properties"]
    assert {"id", "motion", "edit", "from", "frames", "duration", "transition"} <= set(scene)
    assert schema["additionalProperties"] is False


def test_help_teaches() -> None:
    top = videokit("--help")
    assert top.returncode == 0
    for command in ("render", "validate", "plan", "schema"):
        assert command in top.stdout
    render_help = videokit("render", "--help").stdout
    assert "--only" in render_help and "--json" in render_help and "Examples" in render_help


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    result = videokit("render", str(EXAMPLE), "--out", str(tmp_path), "--backend", "nope")
    assert result.returncode == 2
    assert "unknown backend 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_story_outside_the_repo_resolves_paths_relative_to_itself(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    result = videokit("validate", "../examples/story.yaml", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
