"""Bad input is rejected with one readable message and exit code 2, before any job is submitted.

Every case runs twice: through the CLI (``videokit validate`` and ``videokit render``: exit code 2,
the message names file/line/field/scene with a hint, no traceback) and through the Python API with
an observing backend (zero jobs submitted, no work directory created).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from typer.testing import CliRunner

import videokit
from tests.conftest import RecordingBackend, make_image
from videokit.cli.app import app

BASE_HEAD = """\
title: Bad input
reference: ref.png
"""


def scenes(*lines: str) -> str:
    return BASE_HEAD + "scenes:\n" + "\n".join(lines) + "\n"


OK_SCENE = "  - {id: a, motion: the camera drifts}"


def huge_png(path: Path, width: int = 100_000, height: int = 100_000) -> None:
    """A PNG whose header claims width x height pixels, without the pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@dataclass
class Case:
    id: str
    story: str
    expect: list[str]
    line: int | None = None
    scene: str | None = None
    setup: Callable[[Path], None] | None = None
    extra: list[str] = field(default_factory=list)


def _text_file(name: str, text: str = "hello, not media\n") -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def _truncated_png(name: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        make_image(root / "full.png", (256, 256))
        data = (root / "full.png").read_bytes()
        (root / name).write_bytes(data[: len(data) // 2])

    return setup


CASES = [
    Case(
        "unknown-top-key",
        "titel: x\n" + scenes(OK_SCENE),
        ["unknown key 'titel'", "did you mean 'title'"],
        line=1,
    ),
    Case(
        "unknown-scene-key",
        scenes("  - id: a", "    motoin: drift", "    motion: drift"),
        ["unknown key 'motoin'", "did you mean 'motion'", "scenes[0].motoin"],
        line=5,
        scene="a",
    ),
    Case(
        "frames-wrong-type",
        scenes("  - {id: a, motion: m, frames: eighty}"),
        ["valid integer", "'eighty'", "scenes[0].frames"],
        line=4,
        scene="a",
    ),
    Case(
        "frames-string-number",
        scenes("  - {id: a, motion: m, frames: '81'}"),
        ["valid integer", "scenes[0].frames"],
        scene="a",
    ),
    Case("scenes-not-a-list", BASE_HEAD + "scenes: just one\n", ["valid list", "scenes"], line=3),
    Case(
        "width-float",
        BASE_HEAD + "defaults: {width: 832.5}\n" + "scenes:\n" + OK_SCENE + "\n",
        ["valid integer", "defaults.width"],
        line=3,
    ),
    Case(
        "duplicate-ids",
        scenes(OK_SCENE, "  - {id: a, motion: again}"),
        ["duplicate scene id 'a'", "scenes[1].id"],
        line=5,
        scene="a",
    ),
    Case(
        "unknown-from",
        scenes(OK_SCENE, "  - {id: b, motion: m, from: aa}"),
        ["unknown scene 'aa'", "did you mean 'a'", "scenes[1].from"],
        line=5,
        scene="b",
    ),
    Case(
        "self-from",
        scenes("  - {id: a, motion: m, from: a}"),
        ["cannot start from itself", "scenes[0].from"],
        scene="a",
    ),
    Case(
        "cycle",
        scenes("  - {id: a, motion: m, from: b}", "  - {id: b, motion: m, from: a}"),
        ["loop", "a -> b -> a"],
    ),
    Case(
        "edit-of-scene-without-edit",
        scenes(OK_SCENE, "  - {id: b, motion: m, from: a.edit}"),
        ["has no edit", "use 'a' for its last frame"],
        scene="b",
    ),
    Case(
        "frames-not-4k1",
        scenes("  - {id: a, motion: m, frames: 80}"),
        ["4k+1", "use 81", "scenes[0].frames"],
        line=4,
        scene="a",
    ),
    Case(
        "default-frames-not-4k1",
        BASE_HEAD + "defaults: {frames: 50}\nscenes:\n" + OK_SCENE + "\n",
        ["4k+1", "use 49", "defaults.frames"],
        line=3,
    ),
    Case(
        "width-not-16",
        BASE_HEAD + "defaults: {width: 830}\nscenes:\n" + OK_SCENE + "\n",
        ["multiple of 16", "use 816 or 832", "defaults.width"],
        line=3,
    ),
    Case(
        "height-too-big",
        BASE_HEAD + "defaults: {height: 4000}\nscenes:\n" + OK_SCENE + "\n",
        ["less than or equal to 1920", "defaults.height"],
    ),
    Case(
        "width-too-small",
        BASE_HEAD + "defaults: {width: 64}\nscenes:\n" + OK_SCENE + "\n",
        ["greater than or equal to 128", "defaults.width"],
    ),
    Case(
        "frames-out-of-range",
        scenes("  - {id: a, motion: m, frames: 401}"),
        ["less than or equal to 241", "scenes[0].frames"],
        scene="a",
    ),
    Case(
        "reference-missing",
        "title: t\nreference: nope.png\nscenes:\n" + OK_SCENE + "\n",
        ["nope.png", "file not found", "reference"],
        line=2,
    ),
    Case(
        "reference-is-directory",
        "title: t\nreference: adir\nscenes:\n" + OK_SCENE + "\n",
        ["is a directory"],
        line=2,
        setup=lambda root: (root / "adir").mkdir(),
    ),
    Case(
        "reference-not-image",
        "title: t\nreference: notes.png\nscenes:\n" + OK_SCENE + "\n",
        ["notes.png", "not"],
        line=2,
        setup=_text_file("notes.png"),
    ),
    Case(
        "reference-truncated",
        "title: t\nreference: cut.png\nscenes:\n" + OK_SCENE + "\n",
        ["cut.png", "truncated"],
        setup=_truncated_png("cut.png"),
    ),
    Case(
        "reference-bomb",
        "title: t\nreference: bomb.png\nscenes:\n" + OK_SCENE + "\n",
        ["bomb.png", "pixels"],
        setup=lambda root: huge_png(root / "bomb.png"),
    ),
    Case(
        "second-reference-missing",
        "title: t\nreference: [ref.png, gone.png]\nscenes:\n" + OK_SCENE + "\n",
        ["gone.png", "file not found", "reference[1]"],
    ),
    Case(
        "edit-image-missing",
        scenes(
            OK_SCENE,
            "  - id: b",
            "    motion: m",
            "    edit: {prompt: now at night, images: [missing.jpg]}",
        ),
        ["missing.jpg", "file not found", "scenes[1].edit.images[0]"],
        scene="b",
    ),
    Case(
        "from-path-not-image",
        scenes("  - {id: a, motion: m, from: frames/start.png}"),
        ["start.png", "not"],
        scene="a",
        setup=lambda root: (
            (root / "frames").mkdir(),
            (root / "frames" / "start.png").write_text("text"),
        )[0],
    ),
    Case(
        "empty-motion",
        scenes("  - {id: a, motion: ''}"),
        ["motion prompt is empty", "scenes[0].motion"],
        scene="a",
    ),
    Case(
        "blank-edit-prompt",
        scenes(OK_SCENE, "  - {id: b, motion: m, edit: '   '}"),
        ["edit prompt is empty"],
        scene="b",
    ),
    Case(
        "prompt-too-long",
        scenes("  - {id: a, motion: '" + "x" * 2001 + "'}"),
        ["at most 2000 characters", "scenes[0].motion"],
        scene="a",
    ),
    Case(
        "missing-motion",
        scenes("  - {id: a}"),
        ["missing required key 'motion'", "scenes[0].motion"],
        scene="a",
    ),
    Case("missing-scenes", BASE_HEAD, ["missing required key 'scenes'"]),
    Case("empty-scenes", BASE_HEAD + "scenes: []\n", ["at least 1 item", "scenes"]),
    Case(
        "bad-scene-id",
        scenes("  - {id: 'my scene', motion: m}"),
        ["pattern", "scenes[0].id"],
        scene="my scene",
    ),
    Case("reserved-scene-id", scenes("  - {id: reference, motion: m}"), ["reserved"]),
    Case(
        "negative-seed",
        scenes("  - {id: a, motion: m, seed: -3}"),
        ["greater than or equal to 0", "scenes[0].seed"],
        scene="a",
    ),
    Case(
        "frames-and-duration",
        scenes("  - {id: a, motion: m, frames: 33, duration: 2}"),
        ["not both"],
        scene="a",
    ),
    Case(
        "bad-transition",
        scenes("  - {id: a, motion: m, transition: fade}", "  - {id: b, motion: m}"),
        ["'cut'", "scenes[0].transition", "{crossfade: 0.5}"],
        scene="a",
    ),
    Case(
        "crossfade-last",
        scenes("  - {id: a, motion: m, transition: {crossfade: 0.5}}"),
        ["no clip follows it"],
        scene="a",
    ),
    Case(
        "crossfade-too-long",
        scenes(
            "  - {id: a, motion: m, frames: 9, transition: {crossfade: 2}}",
            "  - {id: b, motion: m, frames: 9}",
        ),
        ["do not fit"],
        scene="a",
    ),
    Case(
        "timeline-unknown",
        scenes(OK_SCENE) + "timeline: [a, b]\n",
        ["unknown scene 'b' on the timeline", "timeline[1]"],
    ),
    Case("timeline-duplicate", scenes(OK_SCENE) + "timeline: [a, a]\n", ["appears twice"]),
    Case(
        "audio-not-audio",
        scenes(OK_SCENE) + "output: {audio: song.mp3}\n",
        ["song.mp3", "not an audio file"],
        setup=_text_file("song.mp3"),
    ),
    Case(
        "audio-missing",
        scenes(OK_SCENE) + "output: {audio: song.m4a}\n",
        ["song.m4a", "file not found", "output.audio"],
    ),
    Case(
        "output-is-directory",
        scenes(OK_SCENE) + "output: {path: renders}\n",
        ["is a directory", "output.path"],
        setup=lambda root: (root / "renders").mkdir(),
    ),
    Case(
        "output-not-mp4", scenes(OK_SCENE) + "output: {path: final.gif}\n", [".mp4", "output.path"]
    ),
    Case("yaml-syntax", scenes("  - {id: a, motion: [unclosed}"), ["YAML syntax error"], line=4),
    Case(
        "yaml-duplicate-key",
        "title: a\ntitle: b\nreference: ref.png\nscenes:\n" + OK_SCENE + "\n",
        ["duplicate key 'title'"],
        line=2,
    ),
    Case("empty-file", "", ["empty"]),
    Case("not-a-mapping", "- just\n- a list\n", ["must be a YAML mapping"]),
    Case("bad-preset", scenes(OK_SCENE) + "output: {preset: turbo}\n", ["output.preset", "turbo"]),
]


def _prepare(case: Case, root: Path) -> Path:
    make_image(root / "ref.png")
    if case.setup:
        case.setup(root)
    path = root / "story.yaml"
    path.write_text(case.story)
    return path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_story_is_rejected_with_a_located_message(case: Case, tmp_path: Path) -> None:
    story = _prepare(case, tmp_path)
    runner = CliRunner()
    for command in ("validate", "render"):
        args = [command, str(story)] + (
            ["--out", str(tmp_path / "out")] if command == "render" else []
        )
        result = runner.invoke(app, args)
        output = result.output
        assert result.exit_code == 2, output
        assert "Traceback" not in output
        assert "error:" in output
        for text in case.expect:
            assert text in output, f"{text!r} not in:\n{output}"
        assert str(story) in output or "line" in output or case.id == "empty-file"
        if case.line is not None:
            assert f"{story}:{case.line}" in output, output
        if case.scene is not None:
            assert f"scene '{case.scene}'" in output, output
    assert not (tmp_path / "out").exists(), "render created a work directory for a bad story"

    backend = RecordingBackend()
    with pytest.raises(videokit.StoryError) as caught:
        videokit.Pipeline(story, backend=backend, out=tmp_path / "out2").run()
    assert caught.value.exit_code == 2
    assert backend.calls == [], "a job was submitted for a bad story"
    assert not (tmp_path / "out2").exists()


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    story = _prepare(
        Case(
            "many",
            scenes("  - {id: a, motion: m, frames: 80}", "  - {id: a, motion: m, from: zz}"),
            [],
        ),
        tmp_path,
    )
    with pytest.raises(videokit.StoryError) as caught:
        videokit.Pipeline(story).plan()
    messages = [p.message for p in caught.value.problems]
    assert any("4k+1" in m for m in messages)
    assert any("duplicate scene id" in m for m in messages)
    assert any("unknown scene 'zz'" in m for m in messages)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_reference(tmp_path: Path) -> None:
    story = _prepare(
        Case("unreadable", "title: t\nreference: locked.png\nscenes:\n" + OK_SCENE + "\n", []),
        tmp_path,
    )
    make_image(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    result = CliRunner().invoke(app, ["validate", str(story)])
    assert result.exit_code == 2
    assert "not readable" in result.output


def test_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """The real console script, in a real process: exit 2, message on stderr, nothing on stdout."""
    story = _prepare(CASES[11], tmp_path)  # frames not 4k+1
    proc = subprocess.run(
        [sys.executable, "-m", "videokit", "render", str(story), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "4k+1" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_missing_story_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "story file not found" in result.output


def test_json_errors_are_machine_readable(tmp_path: Path) -> None:
    import json

    story = _prepare(CASES[11], tmp_path)
    result = CliRunner().invoke(app, ["validate", str(story), "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout.splitlines()[0])
    assert document["ok"] is False
    problem = document["problems"][0]
    assert problem["field"] == "scenes[0].frames"
    assert problem["scene"] == "a"
    assert problem["line"] == 4
