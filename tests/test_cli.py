"""End to end: the installed ``videokit`` command on the example story, with real ffmpeg."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from videokit.media.probe import probe_video

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "story.yaml"


# The result store of this module's renders: the example is rendered once per module, and the
# tests after it look for its results (each test otherwise gets a store of its own).
MODULE_STORE: dict[str, str] = {}


def videokit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "videokit", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, **MODULE_STORE, **(env or {})},
    )


@pytest.fixture(scope="module")
def example_render(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, object], list[dict[str, object]]]:
    out = tmp_path_factory.mktemp("example") / "out"
    MODULE_STORE["VIDEOKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("store"))
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


COMMANDS = ("render", "validate", "plan", "serve", "deploy", "schema")


def _example_scene_ids() -> set[str]:
    from videokit.story import load_story

    return {scene.id for scene in load_story(EXAMPLE).scenes}


def test_help_teaches() -> None:
    top = videokit("--help", env={"COLUMNS": "120"})
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
    assert "videokit render examples/story.yaml" in top.stdout
    for command in COMMANDS:
        text = videokit(command, "--help", env={"COLUMNS": "120"}).stdout
        assert "Examples" in text, command
        # Flags are flags, arguments are named the Unix way.
        (usage,) = [line for line in text.splitlines() if "Usage:" in line]
        assert "<bool>" not in text and "{" not in usage, (command, text)
    render_help = videokit("render", "--help", env={"COLUMNS": "120"}).stdout
    assert re.search(r"Usage: .*videokit render \[OPTIONS\] STORY\s*$", render_help, re.M)
    assert "--only" in render_help and "--json" in render_help
    # The examples name scenes the example story has.
    named = set(re.findall(r"--only (\S+)", render_help))
    assert named and named <= _example_scene_ids()
    assert "--backend" in videokit("validate", "--help", env={"COLUMNS": "120"}).stdout


def test_importing_the_cli_reads_no_terminal() -> None:
    """Consoles are made when a command runs: importing the CLI reads no environment."""
    code = (
        "import gc, rich.console, videokit.cli.app; "
        "print(sum(isinstance(o, rich.console.Console) for o in gc.get_objects()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"


TINY = """\
title: tiny
reference: ref.png
defaults: {width: 128, height: 128, frames: 5, fit: crop}
scenes:
  - {id: a, motion: the camera drifts}
  - {id: b, motion: it turns, edit: now at night}
  - {id: c, motion: it waves, from: reference, transition: {crossfade: 0.1}}
timeline: [a, b]
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    from tests.conftest import make_image

    make_image(tmp_path / "ref.png")
    story = tmp_path / "tiny.yaml"
    story.write_text(TINY)
    return story


def test_warnings_are_printed_by_validate_plan_and_render(tiny: Path, tmp_path: Path) -> None:
    warning = f"warning: {tiny}:7, scene 'c', scenes[2].transition: 'c' is not on the timeline"
    for args in (
        ["validate", str(tiny)],
        ["validate", str(tiny), "--json"],
        ["plan", str(tiny), "--out", str(tmp_path / "o")],
        ["plan", str(tiny), "--out", str(tmp_path / "o"), "--json"],
        ["render", str(tiny), "--out", str(tmp_path / "o"), "--json"],
    ):
        result = videokit(*args)
        assert result.returncode == 0, result.stderr
        assert warning in result.stderr, (args, result.stderr)
        if "--json" in args and args[0] != "render":
            (warned,) = json.loads(result.stdout)["warnings"]
            assert warned.startswith(warning.removeprefix("warning: "))


def test_a_closed_pipe_stops_the_render_quietly(tiny: Path, tmp_path: Path) -> None:
    """`videokit render --json | head -1`: exit 141 like a tool killed by SIGPIPE, no traceback."""
    command = (
        f"{shlex.quote(sys.executable)} -m videokit render {shlex.quote(str(tiny))} --json "
        f'--out {shlex.quote(str(tmp_path / "o"))} | head -1; echo "status=${{PIPESTATUS[0]}}"'
    )
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0])["type"] == "render_started"
    assert lines[-1] == "status=141", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert "BrokenPipeError" not in proc.stderr, proc.stderr


def test_json_failures_end_with_an_error_object(tiny: Path, tmp_path: Path) -> None:
    result = videokit("render", str(tiny), "--out", str(tmp_path / "o"), "--json", "--backend", "x")
    assert result.returncode == 2
    document = json.loads(result.stdout.splitlines()[-1])
    assert document["type"] == "error" and document["exit_code"] == 2
    assert document["error"] == "ConfigError" and "unknown backend 'x'" in document["message"]
    assert document["hint"] and document["problems"] == []
    assert "unknown backend 'x'" in result.stderr, "the human message is on stderr too"


@pytest.mark.parametrize("where", ["file", "inside-a-file", "proc"])
def test_an_unusable_work_directory_is_refused_before_rendering(
    tiny: Path, tmp_path: Path, where: str
) -> None:
    (tmp_path / "a-file").write_text("x")
    out = {
        "file": tmp_path / "a-file",
        "inside-a-file": tmp_path / "a-file" / "out",
        "proc": Path("/proc/videokit-out"),
    }[where]
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    for command in ("render", "plan"):
        result = videokit(command, str(tiny), "--out", str(out))
        assert result.returncode == 2, result.stderr
        assert f"cannot use {out} as the work directory" in result.stderr
        assert "hint: give a writable directory with --out" in result.stderr
        assert "rendering a CPU preview" not in result.stderr
        assert "Traceback" not in result.stderr
    assert not out.exists() or out.is_file()


def test_two_story_files_with_one_name_do_not_share_the_default_work_directory(
    tmp_path: Path,
) -> None:
    from tests.conftest import make_image

    stories = []
    for folder in ("trailer", "teaser"):
        make_image(tmp_path / folder / "ref.png")
        (tmp_path / folder / "story.yaml").write_text(TINY)
        stories.append(tmp_path / folder / "story.yaml")
    first = videokit("render", str(stories[0]), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    final = tmp_path / "out" / "story" / "final.mp4"
    before = final.read_bytes()
    for command in ("plan", "render"):
        second = videokit(command, str(stories[1]), cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        assert "holds the render of another story file" in second.stderr
        assert "e.g. --out out/teaser-story;" in second.stderr
        assert "Traceback" not in second.stderr
    assert final.read_bytes() == before and (tmp_path / "out" / "story" / "scenes" / "a").is_dir()
    # Its own directory, as the hint says; and the first story still renders where it did.
    own = videokit("render", str(stories[1]), "--out", "out/teaser-story", cwd=tmp_path)
    assert own.returncode == 0, own.stderr
    again = videokit("render", str(stories[0]), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_library_log_lines_print_like_the_clis_own_by_verbosity(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import logging

    from videokit.cli.output import configure_logging

    logger = logging.getLogger("videokit")
    handlers, level = list(logger.handlers), logger.level
    runpod = logging.getLogger("videokit.runpod")
    try:
        configure_logging()
        configure_logging()  # once per process, however many commands run
        runpod.warning("could not cancel animate job %s", "j-1")
        runpod.info("job %s retried in place", "j-1")
        assert capsys.readouterr().err == "warning: could not cancel animate job j-1\n"
        configure_logging(verbose=1)
        runpod.info("job %s retried in place", "j-1")
        runpod.debug("poll %s", "j-1")
        assert capsys.readouterr().err == "info: job j-1 retried in place\n"
        configure_logging(verbose=2)
        runpod.debug("poll %s", "j-1")
        assert capsys.readouterr().err == "debug: poll j-1\n"
        configure_logging(quiet=True)
        runpod.warning("could not cancel animate job %s", "j-1")
        runpod.error("storage is gone")
        assert capsys.readouterr().err == "error: storage is gone\n"
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        configure_logging()
        logger.handlers[:] = handlers


class _RunPodRecorder(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        self.send_response(500)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        return


def _clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD", "VIDEOKIT"))}
    return {**env, **values}


def test_validate_checks_the_backend_without_submitting(tmp_path: Path) -> None:
    def validate(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "videokit", "validate", str(EXAMPLE), "--backend", "runpod"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,  # no .env here
            env=_clean_env(**env),
        )

    no_endpoints = validate()
    assert no_endpoints.returncode == 2
    assert "no RunPod endpoint is configured" in no_endpoints.stderr, no_endpoints.stderr
    no_key = validate(VIDEOKIT_EDIT_ENDPOINT="e1", VIDEOKIT_ANIMATE_ENDPOINT="a1")
    assert no_key.returncode == 2
    assert "RUNPOD_API_KEY" in no_key.stderr, no_key.stderr

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RunPodRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ok = validate(
            RUNPOD_API_KEY="k",
            VIDEOKIT_EDIT_ENDPOINT="e1",
            VIDEOKIT_ANIMATE_ENDPOINT="a1",
            VIDEOKIT_RUNPOD_BASE_URL=f"http://127.0.0.1:{server.server_port}/v2",
        )
    finally:
        server.shutdown()
    assert ok.returncode == 0, ok.stderr
    assert "backend runpod" in ok.stdout
    assert _RunPodRecorder.requests == [], "validate sent a request"


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
