"""The conventions people expect of a Unix tool: --version, completion, -q/-v everywhere,
NO_COLOR, one style for every error, a fast start, and `serve` saying where it listens."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli import videokit
from videokit._version import __version__

COMMANDS = ("render", "validate", "plan", "serve", "deploy", "schema")
# Any SGR sequence that sets a colour (30-37, 38;..., 90-97, and their backgrounds).
COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])[0-9;]*m")


def test_version() -> None:
    result = videokit("--version")
    assert result.returncode == 0
    assert result.stdout == f"videokit {__version__}\n"


def test_shell_completion_is_offered() -> None:
    helped = videokit("--help")
    assert "--install-completion" in helped.stdout and "--show-completion" in helped.stdout
    # typer detects the user's shell from the process tree; its own test switch names it instead.
    script = videokit(
        "--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert script.returncode == 0, script.stderr
    assert "_VIDEOKIT_COMPLETE" in script.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_takes_quiet_and_verbose(command: str) -> None:
    helped = videokit(command, "--help")
    assert helped.returncode == 0, helped.stderr
    for flag in ("-q", "--quiet", "-v", "--verbose"):
        assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", helped.stdout), (command, flag)


def test_usage_errors_read_like_videokits_own(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nreference: nope.png\nscenes:\n  - {id: a, motion: m}\n")
    ours = videokit("validate", str(bad))
    for args, said in (
        (("render", "--forc", "x.yaml"), "error: No such option: --forc"),
        (("render",), "error: Missing argument 'STORY'"),
        (("renderr",), "error: No such command 'renderr'"),
        (("render", "x.yaml", "-j", "0"), "error: Invalid value for '--concurrency'"),
    ):
        result = videokit(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith(said), (args, result.stderr)
        assert "\n  hint: see `videokit" in result.stderr
        assert "╭" not in result.stderr and "Traceback" not in result.stderr
    assert ours.returncode == 2 and ours.stderr.startswith("error: ")


def test_no_color_is_honoured(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: x\nreference: nope.png\nscenes:\n  - {id: a, motion: m}\n")
    # FORCE_COLOR stands in for a colour terminal (the test has none).
    coloured = videokit("validate", str(bad), env={"FORCE_COLOR": "1"})
    assert COLOUR.search(coloured.stderr), repr(coloured.stderr)
    plain = videokit("validate", str(bad), env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert plain.returncode == 2
    assert not COLOUR.search(plain.stderr), repr(plain.stderr)
    assert "file not found" in plain.stderr
    usage = videokit("render", "--forc", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert not COLOUR.search(usage.stderr), repr(usage.stderr)


def test_quiet_prints_only_the_result(tmp_path: Path) -> None:
    from tests.conftest import make_image

    make_image(tmp_path / "ref.png", (256, 144))
    story = tmp_path / "s.yaml"
    story.write_text(
        "reference: ref.png\ndefaults: {width: 256, height: 144, frames: 5}\n"
        "scenes:\n  - {id: a, motion: m}\n"
        "  - {id: b, motion: n, transition: {crossfade: 0.1}}\n"
        "timeline: [a]\n"  # b: a branch whose crossfade is never used: a warning
    )
    loud = videokit("validate", str(story), cwd=tmp_path)
    assert "warning:" in loud.stderr and "ok" in loud.stdout
    quiet = videokit("validate", str(story), "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""
    rendered = videokit("render", str(story), "-q", cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stderr == ""
    assert rendered.stdout == f"{tmp_path / 'out' / 's' / 'final.mp4'}\n"


def test_the_command_line_imports_only_what_help_needs() -> None:
    """`videokit --help` starts fast because importing the CLI loads no pipeline, models or
    media code (benchmarks/cli_start.py measures the time itself)."""
    code = (
        "import sys, videokit.cli.app; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'numpy', 'httpx', 'PIL', 'yaml', 'boto3', 'moviepy') "
        "or m.startswith(('videokit.pipeline', 'videokit.backends', 'videokit.story')))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    # The public API still loads on first use.
    code = "import videokit; print(videokit.Pipeline.__module__, videokit.StoryError.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["videokit.pipeline.runner", "StoryError"], proc.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_prints_the_line_to_paste_once_it_listens() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "videokit", "serve", "edit", "--port", str(port), "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"VIDEOKIT_EDIT_ENDPOINT=http://127.0.0.1:{port}/v2/edit"
        url = line.partition("=")[2]
        deadline = time.monotonic() + 10
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert health.status_code == 200 and "workers" in health.json()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_serve_names_this_machine_when_it_listens_on_every_address() -> None:
    from videokit.cli.service_commands import endpoint_line

    assert endpoint_line("animate", "0.0.0.0", 8002) == (
        f"VIDEOKIT_ANIMATE_ENDPOINT=http://{socket.gethostname()}:8002/v2/animate"
    )
    assert endpoint_line("edit", "::1", 8001) == "VIDEOKIT_EDIT_ENDPOINT=http://[::1]:8001/v2/edit"


def test_render_into_a_pipe_prints_a_line_per_state_change_and_a_summary(tmp_path: Path) -> None:
    """`videokit render story.yaml 2>&1 | cat`: stderr is no terminal, so plain lines, not
    silence (and not a live display's escape codes)."""
    from tests.conftest import make_image

    make_image(tmp_path / "ref.png", (256, 144))
    story = tmp_path / "pipe.yaml"
    story.write_text(
        "reference: ref.png\ndefaults: {width: 256, height: 144, frames: 5}\n"
        "scenes:\n  - {id: hello, motion: m}\n  - {id: tux, motion: n, edit: now in a tuxedo}\n"
    )
    proc = subprocess.run(
        f"{sys.executable} -m videokit render {story} 2>&1 | cat",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = proc.stdout.splitlines()
    assert "\x1b[" not in proc.stdout
    stamped = [line for line in lines if re.match(r"\[\s*\d+\.\ds\] ", line)]
    for scene in ("hello", "tux"):
        mine = [line for line in stamped if re.search(rf"\] {scene}\s", line)]
        assert any("queued" in line for line in mine), mine
        assert any("edit" in line for line in mine) == (scene == "tux"), mine
        assert any(re.search(r"\bdone\b", line) for line in mine), mine
    summary = [line for line in lines if line.startswith("done in ")]
    assert len(summary) == 1, lines
    assert "2 scenes rendered, 0 cached" in summary[0]
    assert (
        "film out/pipe/final.mp4" in summary[0] and "manifest out/pipe/manifest.json" in summary[0]
    )
    assert lines[-1] == str(tmp_path / "out" / "pipe" / "final.mp4")  # the result, on stdout
