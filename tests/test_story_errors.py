"""Bad input is rejected with one readable message and exit code 2, before any job is submitted.

Every case runs twice: through the CLI (``videokit validate`` and ``videokit render``: exit code 2,
the message names the file, the line, the scene and the field path with a hint, no traceback) and
through the Python API with an observing backend (zero jobs submitted, no work directory created,
the problem located exactly where the case says).
"""

from __future__ import annotations

import json
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
from videokit.errors import Problem

BASE_HEAD = """\
title: Bad input
reference: ref.png
"""


def scenes(*lines: str) -> str:
    return BASE_HEAD + "scenes:\n" + "\n".join(lines) + "\n"


OK_SCENE = "  - {id: a, motion: the camera drifts}"


def huge_png(path: Path, width: int = 100_000, height: int = 100_000) -> None:
    """A PNG whose header claims width x height pixels, with 64 bytes of pixel data.

    Every chunk CRC is right, so only decoding finds out: a decompression bomb when the size is
    huge, a truncated image when it is merely larger than the data.
    """

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
    """A bad story and where its problem must be reported.

    ``line``, ``field`` and ``scene`` are exactly what the first problem's location says (None
    where the input does not have one); ``field_prefix`` when only the start of the field path
    is stable. ``count`` is how many problems the story has; ``absent`` must not be printed.
    """

    id: str
    story: str
    expect: list[str]
    line: int | None
    field: str | None
    scene: str | None = None
    setup: Callable[[Path], None] | None = None
    count: int = 1
    absent: list[str] = field(default_factory=list)
    field_prefix: bool = False


def _text_file(name: str, text: str = "hello, not media\n") -> Callable[[Path], None]:
    return lambda root: (root / name).write_text(text)


def _truncated(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    """An image of the format its name says, cut short (a download that stopped)."""

    def setup(root: Path) -> None:
        full = root / f"full{Path(name).suffix}"
        make_image(full, (256, 256))
        data = full.read_bytes()
        (root / name).write_bytes(data[: int(len(data) * keep)])

    return setup


def _images(*names: str) -> Callable[[Path], None]:
    def setup(root: Path) -> None:
        for name in names:
            make_image(root / name)

    return setup


def _alias_bomb(levels: int) -> str:
    """Under 1 kB of YAML that expands to 10**levels values."""
    lines = ["lol0: &lol0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


CASES = [
    Case(
        "unknown-top-key",
        "titel: x\n" + scenes(OK_SCENE),
        ["unknown key 'titel'", "did you mean 'title'"],
        line=1,
        field="titel",
    ),
    Case(
        "unknown-scene-key",
        scenes("  - id: a", "    motoin: drift", "    motion: drift"),
        ["unknown key 'motoin'", "did you mean 'motion'"],
        line=5,
        field="scenes[0].motoin",
        scene="a",
    ),
    Case(
        "frames-wrong-type",
        scenes("  - {id: a, motion: m, frames: eighty}"),
        ["valid integer", "'eighty'", "4k+1"],
        line=4,
        field="scenes[0].frames",
        scene="a",
    ),
    Case(
        "frames-string-number",
        scenes("  - {id: a, motion: m, frames: '81'}"),
        ["valid integer"],
        line=4,
        field="scenes[0].frames",
        scene="a",
    ),
    Case(
        "scenes-not-a-list",
        BASE_HEAD + "scenes: just one\n",
        ["valid list", "each with at least 'id' and 'motion'"],
        line=3,
        field="scenes",
    ),
    Case(
        "width-float",
        BASE_HEAD + "defaults: {width: 832.5}\n" + "scenes:\n" + OK_SCENE + "\n",
        ["valid integer", "multiple of 16"],
        line=3,
        field="defaults.width",
    ),
    Case(
        "duplicate-ids",
        scenes(OK_SCENE, "  - {id: a, motion: again}"),
        ["duplicate scene id 'a'", "unique id"],
        line=5,
        field="scenes[1].id",
        scene="a",
    ),
    Case(
        "unknown-from",
        scenes(OK_SCENE, "  - {id: b, motion: m, from: aa}"),
        ["unknown scene 'aa'", "did you mean 'a'"],
        line=5,
        field="scenes[1].from",
        scene="b",
    ),
    Case(
        "self-from",
        scenes("  - {id: a, motion: m, from: a}"),
        ["cannot start from itself"],
        line=4,
        field="scenes[0].from",
        scene="a",
    ),
    Case(
        "cycle",
        scenes("  - {id: a, motion: m, from: b}", "  - {id: b, motion: m, from: a}"),
        ["loop", "a -> b -> a"],
        line=4,
        field="scenes[0].from",
        scene="a",
    ),
    Case(
        "edit-of-scene-without-edit",
        scenes(OK_SCENE, "  - {id: b, motion: m, from: a.edit}"),
        ["has no edit", "use 'a' for its last frame"],
        line=5,
        field="scenes[1].from",
        scene="b",
    ),
    Case(
        "frames-not-4k1",
        scenes("  - {id: a, motion: m, frames: 80}"),
        ["4k+1", "use 81"],
        line=4,
        field="scenes[0].frames",
        scene="a",
    ),
    Case(
        "default-frames-not-4k1",
        BASE_HEAD + "defaults: {frames: 50}\nscenes:\n" + OK_SCENE + "\n",
        ["4k+1", "use 49"],
        line=3,
        field="defaults.frames",
    ),
    Case(
        "width-not-16",
        BASE_HEAD + "defaults: {width: 830}\nscenes:\n" + OK_SCENE + "\n",
        ["multiple of 16", "use 816 or 832"],
        line=3,
        field="defaults.width",
    ),
    Case(
        "height-too-big",
        BASE_HEAD + "defaults: {height: 4000}\nscenes:\n" + OK_SCENE + "\n",
        ["less than or equal to 1920", "got 4000"],
        line=3,
        field="defaults.height",
    ),
    Case(
        "width-too-small",
        BASE_HEAD + "defaults: {width: 64}\nscenes:\n" + OK_SCENE + "\n",
        ["greater than or equal to 128"],
        line=3,
        field="defaults.width",
    ),
    Case(
        "frame-over-pixel-budget",
        BASE_HEAD + "defaults:\n  width: 1920\n  height: 1920\nscenes:\n" + OK_SCENE + "\n",
        ["1920x1920 is 3,686,400 pixels per frame", "over the limit", "1920x1088"],
        line=5,
        field="defaults.height",
    ),
    Case(
        "frames-out-of-range",
        scenes("  - {id: a, motion: m, frames: 401}"),
        ["less than or equal to 241"],
        line=4,
        field="scenes[0].frames",
        scene="a",
    ),
    Case(
        "reference-missing",
        "title: t\nreference: nope.png\nscenes:\n" + OK_SCENE + "\n",
        ["nope.png", "file not found"],
        line=2,
        field="reference",
    ),
    Case(
        "reference-is-directory",
        "title: t\nreference: adir\nscenes:\n" + OK_SCENE + "\n",
        ["is a directory"],
        line=2,
        field="reference",
        setup=lambda root: (root / "adir").mkdir(),
    ),
    Case(
        "reference-not-image",
        "title: t\nreference: notes.png\nscenes:\n" + OK_SCENE + "\n",
        ["notes.png", "not an image"],
        line=2,
        field="reference",
        setup=_text_file("notes.png"),
    ),
    Case(
        "reference-truncated",
        "title: t\nreference: cut.png\nscenes:\n" + OK_SCENE + "\n",
        ["cut.png", "truncated"],
        line=2,
        field="reference",
        setup=_truncated("cut.png"),
    ),
    Case(
        "reference-truncated-webp",
        "title: t\nreference: cut.webp\nscenes:\n" + OK_SCENE + "\n",
        ["cut.webp", "corrupt"],
        line=2,
        field="reference",
        setup=_truncated("cut.webp", keep=0.9),
    ),
    Case(
        "from-truncated-jpeg",
        scenes("  - {id: a, motion: m, from: cut.jpg}"),
        ["cut.jpg", "truncated"],
        line=4,
        field="scenes[0].from",
        scene="a",
        setup=_truncated("cut.jpg", keep=0.9),
    ),
    Case(
        "edit-image-short-pixel-data",
        scenes(
            OK_SCENE, "  - id: b", "    motion: m", "    edit: {prompt: p, images: [short.png]}"
        ),
        ["short.png", "truncated"],
        line=7,
        field="scenes[1].edit.images[0]",
        scene="b",
        setup=lambda root: huge_png(root / "short.png", 2000, 2000),
    ),
    Case(
        "reference-bomb",
        "title: t\nreference: bomb.png\nscenes:\n" + OK_SCENE + "\n",
        ["bomb.png", "pixels"],
        line=2,
        field="reference",
        setup=lambda root: huge_png(root / "bomb.png"),
    ),
    Case(
        "second-reference-missing",
        "title: t\nreference: [ref.png, gone.png]\nscenes:\n" + OK_SCENE + "\n",
        ["gone.png", "file not found"],
        line=2,
        field="reference[1]",
    ),
    Case(
        "too-many-references",
        "title: t\nreference: [ref.png, s1.png, s2.png, s3.png]\nscenes:\n"
        "  - {id: a, motion: m, edit: now at night}\n",
        ["4 reference images", "at most 2 besides the frame"],
        line=2,
        field="reference",
        setup=_images("s1.png", "s2.png", "s3.png"),
    ),
    Case(
        "edit-images-plus-references-over-3",
        "title: t\nreference: [ref.png, s1.png]\nscenes:\n"
        + OK_SCENE
        + "\n  - id: b\n    motion: m\n    edit: {prompt: p, images: [e1.png, e2.png]}\n",
        ["would get 4 images", "at most 3", "at most 1 image"],
        line=7,
        field="scenes[1].edit.images",
        scene="b",
        setup=_images("s1.png", "e1.png", "e2.png"),
    ),
    Case(
        "edit-image-missing",
        scenes(
            OK_SCENE,
            "  - id: b",
            "    motion: m",
            "    edit: {prompt: now at night, images: [missing.jpg]}",
        ),
        ["missing.jpg", "file not found"],
        line=7,
        field="scenes[1].edit.images[0]",
        scene="b",
    ),
    Case(
        "edit-three-images",
        scenes(OK_SCENE, "  - {id: b, motion: m, edit: {prompt: p, images: [x, y, z]}}"),
        ["at most 2, got 3", "3 images in all"],
        line=5,
        field="scenes[1].edit.images",
        scene="b",
    ),
    Case(
        "from-path-not-image",
        scenes("  - {id: a, motion: m, from: frames/start.png}"),
        ["start.png", "not an image"],
        line=4,
        field="scenes[0].from",
        scene="a",
        setup=lambda root: (
            (root / "frames").mkdir(),
            (root / "frames" / "start.png").write_text("text"),
        )[0],
    ),
    Case(
        "empty-motion",
        scenes("  - {id: a, motion: ''}"),
        ["motion prompt is empty", "describe what should happen"],
        line=4,
        field="scenes[0].motion",
        scene="a",
    ),
    Case(
        "blank-edit-prompt",
        scenes(OK_SCENE, "  - {id: b, motion: m, edit: '   '}"),
        ["edit prompt is empty"],
        line=5,
        field="scenes[1].edit.prompt",
        scene="b",
    ),
    Case(
        "prompt-too-long",
        scenes("  - {id: a, motion: '" + "x" * 2001 + "'}"),
        ["2001 characters, at most 2000"],
        line=4,
        field="scenes[0].motion",
        scene="a",
    ),
    Case(
        "shorthand-edit-too-long",
        scenes(OK_SCENE, "  - id: b", "    motion: m", "    edit: '" + "x" * 2001 + "'"),
        ["2001 characters, at most 2000", "describe the change"],
        line=7,
        field="scenes[1].edit.prompt",
        scene="b",
        absent=["a list of scenes"],
    ),
    Case(
        "negative-prompt-not-text",
        scenes("  - {id: a, motion: m, negative_prompt: 5}"),
        ["valid string, got 5", "what to avoid"],
        line=4,
        field="scenes[0].negative_prompt",
        scene="a",
        absent=["a list of scenes"],
    ),
    Case(
        "animate-steps-zero",
        scenes("  - {id: a, motion: m, animate: {steps: 0}}"),
        ["greater than or equal to 1, got 0", "LightX2V"],
        line=4,
        field="scenes[0].animate.steps",
        scene="a",
        absent=["a list of scenes"],
    ),
    Case(
        "edit-guidance-too-high",
        scenes(OK_SCENE, "  - id: b", "    motion: m", "    edit: {prompt: p, guidance: 30}"),
        ["less than or equal to 20, got 30", "true_cfg_scale"],
        line=7,
        field="scenes[1].edit.guidance",
        scene="b",
        absent=["a list of scenes"],
    ),
    Case(
        "misplaced-steps-in-defaults",
        BASE_HEAD + "defaults:\n  fps: 16\n  steps: 8\nscenes:\n" + OK_SCENE + "\n",
        ["did you mean defaults.animate.steps or defaults.edit.steps", "{animate: {steps: 8}}"],
        line=5,
        field="defaults.steps",
    ),
    Case(
        "misplaced-width-in-scene",
        scenes("  - {id: a, motion: m, width: 1280}"),
        ["did you mean defaults.width", "defaults: {width: 1280}"],
        line=4,
        field="scenes[0].width",
        scene="a",
    ),
    Case(
        "missing-motion",
        scenes("  - {id: a}"),
        ["missing required key 'motion'", "describe what moves"],
        line=4,
        field="scenes[0].motion",
        scene="a",
    ),
    Case("missing-scenes", BASE_HEAD, ["missing required key 'scenes'"], line=1, field="scenes"),
    Case(
        "empty-scenes",
        BASE_HEAD + "scenes: []\n",
        ["at least 1 item", "each with at least 'id' and 'motion'"],
        line=3,
        field="scenes",
    ),
    Case(
        "bad-scene-id",
        scenes("  - {id: 'my scene', motion: m}"),
        ["pattern", "letters, digits"],
        line=4,
        field="scenes[0].id",
        scene="my scene",
    ),
    Case(
        "reserved-scene-id",
        scenes("  - {id: reference, motion: m}"),
        ["reserved", "choose another id"],
        line=4,
        field="scenes[0].id",
        scene="reference",
    ),
    Case(
        "negative-seed",
        scenes("  - {id: a, motion: m, seed: -3}"),
        ["greater than or equal to 0"],
        line=4,
        field="scenes[0].seed",
        scene="a",
    ),
    Case(
        "frames-and-duration",
        scenes("  - id: a", "    motion: m", "    frames: 33", "    duration: 2"),
        ["not both", "remove one"],
        line=7,
        field="scenes[0].duration",
        scene="a",
    ),
    Case(
        "bad-transition",
        scenes("  - {id: a, motion: m, transition: fade}", "  - {id: b, motion: m}"),
        ["'cut'", "{crossfade: 0.5}"],
        line=4,
        field="scenes[0].transition",
        scene="a",
    ),
    Case(
        "negative-crossfade",
        scenes("  - {id: a, motion: m, transition: {crossfade: -1}}", "  - {id: b, motion: m}"),
        ["greater than 0, got -1", "seconds of overlap"],
        line=4,
        field="scenes[0].transition.crossfade",
        scene="a",
        absent=["should be 'cut'"],
    ),
    Case(
        "crossfade-last",
        scenes("  - {id: a, motion: m, transition: {crossfade: 0.5}}"),
        ["no clip follows it"],
        line=4,
        field="scenes[0].transition",
        scene="a",
    ),
    Case(
        "crossfade-too-long",
        scenes(
            "  - {id: a, motion: m, frames: 9, transition: {crossfade: 2}}",
            "  - {id: b, motion: m, frames: 9}",
        ),
        [
            "the crossfade of 2 s into 'b' does not fit: 'a' is 0.562 s (9 frames at 16 fps); "
            "'b' is 0.562 s (9 frames at 16 fps)",
            "at most 0.5 s here",
        ],
        line=4,
        field="scenes[0].transition",
        scene="a",
        absent=["scene 'b'"],
    ),
    Case(
        "timeline-unknown",
        scenes(OK_SCENE) + "timeline: [a, b]\n",
        ["unknown scene 'b' on the timeline"],
        line=5,
        field="timeline[1]",
    ),
    Case(
        "timeline-duplicate",
        scenes(OK_SCENE) + "timeline: [a, a]\n",
        ["appears twice"],
        line=5,
        field="timeline[1]",
        scene="a",
    ),
    Case(
        "audio-not-audio",
        scenes(OK_SCENE) + "output: {audio: song.mp3}\n",
        ["song.mp3", "not an audio file"],
        line=5,
        field="output.audio",
        setup=_text_file("song.mp3"),
    ),
    Case(
        "audio-missing",
        scenes(OK_SCENE) + "output: {audio: song.m4a}\n",
        ["song.m4a", "file not found"],
        line=5,
        field="output.audio",
    ),
    Case(
        "output-is-directory",
        scenes(OK_SCENE) + "output: {path: renders}\n",
        ["is a directory"],
        line=5,
        field="output.path",
        setup=lambda root: (root / "renders").mkdir(),
    ),
    Case(
        "output-not-mp4",
        scenes(OK_SCENE) + "output: {path: final.gif}\n",
        [".mp4"],
        line=5,
        field="output.path",
    ),
    Case(
        "output-inside-a-file",
        scenes(OK_SCENE) + "output: {path: ref.png/final.mp4}\n",
        ["cannot be written", "ref.png is a file, not a folder"],
        line=5,
        field="output.path",
    ),
    Case(
        "output-in-unwritable-place",
        scenes(OK_SCENE) + "output: {path: /proc/final.mp4}\n",
        ["cannot be written to /proc/final.mp4", "/proc"],
        line=5,
        field="output.path",
    ),
    Case(
        "yaml-syntax",
        scenes("  - {id: a, motion: [unclosed}"),
        ["YAML syntax error"],
        line=4,
        field=None,
    ),
    Case(
        "yaml-duplicate-key",
        "title: a\ntitle: b\nreference: ref.png\nscenes:\n" + OK_SCENE + "\n",
        ["duplicate key 'title'"],
        line=2,
        field="title",
    ),
    Case(
        "yaml-alias-bomb",
        BASE_HEAD + _alias_bomb(6) + "scenes:\n" + OK_SCENE + "\n",
        ["expands to more than 100,000 values", "aliases"],
        line=7,
        field="lol4[",
        field_prefix=True,
    ),
    Case(
        "yaml-recursive-alias",
        BASE_HEAD + "loop: &loop [*loop]\nscenes:\n" + OK_SCENE + "\n",
        ["refers to a value that contains it"],
        line=3,
        field="loop[0]",
    ),
    Case("empty-file", "", ["empty"], line=None, field=None),
    Case("not-a-mapping", "- just\n- a list\n", ["must be a YAML mapping"], line=1, field=None),
    Case(
        "bad-preset",
        scenes(OK_SCENE) + "output: {preset: turbo}\n",
        ["'turbo'", "medium"],
        line=5,
        field="output.preset",
    ),
]


def _prepare(case: Case, root: Path) -> Path:
    make_image(root / "ref.png")
    if case.setup:
        case.setup(root)
    path = root / "story.yaml"
    path.write_text(case.story)
    return path


def _location(case: Case, story: Path) -> str:
    """The start of the problem's line as the CLI prints it: `- file:line, scene 'x', field`."""
    where = Problem("", file=story, line=case.line, field=case.field, scene=case.scene).location()
    return f"- {where}" + ("" if case.field_prefix else ": ")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_story_is_rejected_with_a_located_message(case: Case, tmp_path: Path) -> None:
    if case.id == "output-in-unwritable-place" and not Path("/proc").is_dir():
        pytest.skip("needs /proc")
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
        for text in case.absent:
            assert text not in output, f"{text!r} in:\n{output}"
        assert _location(case, story) in output, f"{_location(case, story)!r} not in:\n{output}"
    assert not (tmp_path / "out").exists(), "render created a work directory for a bad story"

    backend = RecordingBackend()
    with pytest.raises(videokit.StoryError) as caught:
        videokit.Pipeline(story, backend=backend, out=tmp_path / "out2").run()
    assert caught.value.exit_code == 2
    assert backend.calls == [], "a job was submitted for a bad story"
    assert not (tmp_path / "out2").exists()
    problems = caught.value.problems
    assert len(problems) == case.count, [p.render() for p in problems]
    first = problems[0]
    assert (first.file, first.line, first.scene) == (story, case.line, case.scene)
    if case.field_prefix:
        assert first.field is not None and case.field is not None
        assert first.field.startswith(case.field)
    else:
        assert first.field == case.field
    assert first.hint, "every problem says how to fix it"


def test_there_are_at_least_25_cases() -> None:
    assert len(CASES) >= 25


def test_every_field_has_its_own_hint() -> None:
    """No field falls back to another's hint ("a list of scenes..." for an animate setting)."""
    from pydantic import BaseModel

    from videokit.story.field_hints import FIELD_HINTS
    from videokit.story.field_paths import model_in
    from videokit.story.model import Story

    seen: set[str] = set()
    pending: list[type[BaseModel]] = [Story]
    while pending:
        model = pending.pop()
        if model.__name__ in seen:
            continue
        seen.add(model.__name__)
        for name, info in model.model_fields.items():
            assert (model.__name__, info.alias or name) in FIELD_HINTS, (model.__name__, name)
            inner = model_in(info.annotation)
            if inner is not None:
                pending.append(inner)
    assert {model for model, _ in FIELD_HINTS} == seen


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    story = _prepare(
        Case(
            "many",
            scenes("  - {id: a, motion: m, frames: 80}", "  - {id: a, motion: m, from: zz}"),
            [],
            line=None,
            field=None,
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
        Case(
            "unreadable",
            "title: t\nreference: locked.png\nscenes:\n" + OK_SCENE + "\n",
            [],
            line=2,
            field="reference",
        ),
        tmp_path,
    )
    make_image(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    result = CliRunner().invoke(app, ["validate", str(story)])
    assert result.exit_code == 2
    assert "not readable" in result.output


def test_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    """The real console script, in a real process: exit 2, message on stderr, nothing on stdout."""
    story = _prepare(_case("frames-not-4k1"), tmp_path)
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


def _case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def test_json_errors_are_machine_readable(tmp_path: Path) -> None:
    story = _prepare(_case("frames-not-4k1"), tmp_path)
    for command in ("validate", "render"):
        result = CliRunner().invoke(app, [command, str(story), "--json"])
        assert result.exit_code == 2
        lines = result.stdout.splitlines()
        assert len(lines) == 1, "a story error ends the stream at once, with one JSON line"
        document = json.loads(lines[-1])
        assert document["type"] == "error" and document["ok"] is False
        assert document["exit_code"] == 2 and document["error"] == "StoryError"
        (problem,) = document["problems"]
        assert problem == {
            "message": "frames must be 4k+1 (Wan's VAE packs 4 frames per latent); 80 is not",
            "file": str(story),
            "line": 4,
            "field": "scenes[0].frames",
            "scene": "a",
            "hint": "use 81, or give 'duration' in seconds instead",
        }
        assert "4k+1" in result.stderr, "the human message is on stderr as well"
