"""Outputs never destroy what videokit did not make, and ``--only`` leaves nothing stale.

Real renders on the preview backend with real ffmpeg; the CLI runs as its own process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import videokit
from tests.conftest import RecordingBackend, make_image
from tests.test_cli import videokit as videokit_cli
from videokit.errors import ConfigError, StoryError

TINY = """\
title: tiny
reference: ref.png
defaults: {width: 128, height: 128, frames: 5, fps: 8}
scenes:
  - {id: a, motion: the camera drifts}
  - {id: b, motion: it turns}
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png", (128, 128))
    story = tmp_path / "tiny.yaml"
    story.write_text(TINY)
    return story


# -- the final video's path ----------------------------------------------------------------------


def test_an_output_path_at_a_file_videokit_did_not_write_is_refused(
    tiny: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "holiday.mp4"
    mine.write_bytes(b"my own film, not videokit's" * 100)
    before = mine.read_bytes()
    tiny.write_text(TINY + "output: {path: holiday.mp4}\n")
    refused = videokit_cli("render", str(tiny), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "holiday.mp4 exists and was not written by videokit" in refused.stderr
    assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert mine.read_bytes() == before
    assert not (tmp_path / "out" / "tiny" / "scenes").exists(), "nothing was rendered"

    # The same file named on the command line is refused the same way...
    again = videokit_cli("render", str(tiny), "--output", str(mine), cwd=tmp_path)
    assert again.returncode == 2 and mine.read_bytes() == before

    # ...and replaced when the user says so. Later renders may replace what videokit wrote.
    forced = videokit_cli("render", str(tiny), "--overwrite", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.strip() == str(mine)
    assert mine.read_bytes() != before
    tiny.write_text(TINY.replace("it turns", "it turns left") + "output: {path: holiday.mp4}\n")
    rerendered = videokit_cli("render", str(tiny), cwd=tmp_path)
    assert rerendered.returncode == 0, rerendered.stderr

    # A file put there by someone else after that is theirs again.
    mine.write_bytes(before)
    assert videokit_cli("render", str(tiny), "--force", cwd=tmp_path).returncode == 2
    assert mine.read_bytes() == before


def test_the_default_final_video_is_protected_too(tiny: Path, tmp_path: Path) -> None:
    final = tmp_path / "out" / "tiny" / "final.mp4"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"not a video")
    with pytest.raises(ConfigError, match="not written by videokit"):
        videokit.Pipeline(tiny, out=final.parent).check_workdir()
    assert final.read_bytes() == b"not a video"


def test_a_story_file_may_not_write_outside_its_folder_or_the_work_dir(
    tiny: Path, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere" / "film.mp4"
    outside.parent.mkdir()
    tiny.write_text(TINY + f"output: {{path: {outside}}}\n")
    refused = videokit_cli("render", str(tiny), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert "outside the story's folder and the work directory" in refused.stderr
    assert f"{tiny}:" in refused.stderr and "output.path" in refused.stderr
    assert not outside.exists()
    # Relative paths climbing out are caught the same way.
    tiny.write_text(TINY + "output: {path: ../film.mp4}\n")
    with pytest.raises(StoryError, match="outside the story's folder"):
        videokit.Pipeline(tiny).check_workdir()
    # The user may send the film anywhere by naming the path themselves.
    named = videokit_cli("render", str(tiny), "--output", str(outside), cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert outside.is_file() and named.stdout.strip() == str(outside)
    # Inside the work dir is fine for a story too.
    tiny.write_text(TINY + f"output: {{path: {tmp_path / 'w' / 'cut.mp4'}}}\n")
    inside = videokit_cli("render", str(tiny), "--out", str(tmp_path / "w"), cwd=tmp_path)
    assert inside.returncode == 0, inside.stderr


# -- work dirs of stories built in Python --------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path) -> Iterator[Path]:
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)


def test_two_python_stories_do_not_share_a_default_work_dir(
    in_tmp: Path, recording: RecordingBackend
) -> None:
    make_image(in_tmp / "me.png", (128, 128))
    make_image(in_tmp / "you.png", (128, 128), color=(10, 200, 30))
    scenes = [videokit.Scene(id="intro", motion="a wave", frames=5)]
    first = videokit.Pipeline(scenes, reference="me.png", backend=recording).run()
    assert first.workdir == in_tmp / "out" / "intro"  # titled after the first scene
    assert first.final_video is not None
    film = first.final_video.read_bytes()
    # Another notebook: same first scene, another picture. It would overwrite the first one.
    other = videokit.Pipeline(scenes, reference="you.png", backend=recording)
    with pytest.raises(ConfigError, match="another story built in Python"):
        other.run()
    assert first.final_video.read_bytes() == film
    # The same story again (an edited prompt) is the same render; out= gives another its own.
    edited = [videokit.Scene(id="intro", motion="a bigger wave", frames=5)]
    videokit.Pipeline(edited, reference="me.png", backend=recording).run()
    own = videokit.Pipeline(scenes, reference="you.png", backend=recording, out="out/you").run()
    assert own.final_video is not None and own.final_video.is_file()
    # A story file is told apart from a Python story too.
    (in_tmp / "intro.yaml").write_text(
        "reference: me.png\nscenes:\n  - {id: intro, motion: a wave, frames: 5}\n"
    )
    with pytest.raises(ConfigError, match="a story built in Python"):
        videokit.Pipeline(in_tmp / "intro.yaml", backend=recording).run()


# -- the manifest's paths ------------------------------------------------------------------------


def _strings(value: object) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                yield str(key), item
            else:
                yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_every_path_in_the_manifest_is_relative_to_the_work_dir(
    tiny: Path, tmp_path: Path, recording: RecordingBackend
) -> None:
    tiny.write_text(TINY + "  - {id: c, motion: it waves, edit: now at night}\n")
    result = videokit.Pipeline(tiny, backend=recording, out=tmp_path / "work").run()
    manifest = json.loads(result.manifest.read_text())
    paths = [
        (key, value)
        for key, value in _strings(manifest)
        if key in {"path", "story", "contact_sheet"} or value.endswith((".mp4", ".png", ".yaml"))
    ]
    assert len(paths) > 10
    for key, value in paths:
        assert not value.startswith("/"), (key, value)
        assert (result.workdir / value).exists(), (key, value)
    assert manifest["story"] == "../tiny.yaml"
    # The result's paths are absolute, wherever the render was started from.
    assert result.workdir.is_absolute() and result.manifest.is_absolute()
    assert result.final_video is not None and result.final_video.is_absolute()
    for scene in result.scenes.values():
        assert scene.clip.is_absolute() and scene.last_frame.is_absolute()


# -- --only --------------------------------------------------------------------------------------

CHAIN = """\
title: chain
reference: ref.png
defaults: {width: 128, height: 128, frames: 5, fps: 8}
scenes:
  - {id: a, motion: the camera drifts}
  - {id: b, motion: it turns}
  - {id: c, motion: it waves}
  - {id: side, from: reference, motion: a branch}
timeline: [a, b, c]
"""


def test_only_restitches_the_film_from_the_current_clips(
    write_story: Callable[..., Path], recording: RecordingBackend
) -> None:
    story = write_story(CHAIN)
    make_image(story.parent / "other.png", (128, 128), color=(20, 40, 220))
    out = story.parent / "out"
    videokit.Pipeline(story, backend=recording, out=out).run()
    # Change a's picture: b and c start from its last frame, so they are stale after --only a.
    changed = CHAIN.replace("{id: a, motion", "{id: a, from: other.png, motion")
    story.write_text(changed)
    recording.calls.clear()
    film = (out / "final.mp4").read_bytes()
    partial = videokit.Pipeline(story, backend=recording, out=out, only=["a"]).run()
    assert recording.calls == [("animate", "a")]
    assert partial.rendered == ["a"]
    assert partial.stale == ["b", "c"]
    assert partial.final_video is None
    assert (out / "final.mp4").read_bytes() == film, "the film was left as it was"
    (warning,) = partial.warnings
    assert "not stitched again" in warning and "b, c" in warning
    assert "render without --only" in warning
    assert "side" in partial.scenes and partial.scenes["side"].cached  # still current

    # Then the scenes that depend on a: nothing else is paid for, and the film is stitched.
    recording.calls.clear()
    full = videokit.Pipeline(story, backend=recording, out=out).run()
    assert sorted(recording.scenes()) == ["b", "c"]
    assert full.final_video is not None and full.stale == []
    assert (out / "final.mp4").read_bytes() != film

    # --only on a scene whose change nothing depends on: every other scene is current.
    story.write_text(changed.replace("a branch", "a slow branch"))
    recording.calls.clear()
    again = videokit.Pipeline(story, backend=recording, out=out, only=["side"]).run()
    assert recording.calls == [("animate", "side")]
    assert again.final_video is not None and again.stale == []


def test_only_prints_just_the_clips_it_made_then_the_film(tiny: Path, tmp_path: Path) -> None:
    tiny.write_text(TINY + "  - {id: c, from: b, motion: it waves}\n")
    first = videokit_cli("render", str(tiny), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    only = videokit_cli("render", str(tiny), "--only", "b", cwd=tmp_path)
    assert only.returncode == 0, only.stderr
    work = tmp_path / "out" / "tiny"
    assert only.stdout.splitlines() == [str(work / "scenes/b/clip.mp4"), str(work / "final.mp4")]
    # b's picture changed: c starts from its last frame, so --only b cannot bring the film up
    # to date.
    make_image(tmp_path / "other.png", (128, 128), color=(20, 40, 220))
    tiny.write_text(
        TINY.replace("{id: b, motion", "{id: b, from: other.png, motion")
        + "  - {id: c, from: b, motion: it waves}\n"
    )
    stale = videokit_cli("render", str(tiny), "--only", "b", cwd=tmp_path)
    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.splitlines() == [str(work / "scenes/b/clip.mp4")]
    assert "the film was not stitched again" in " ".join(stale.stderr.split())


# -- fitting the starting image ------------------------------------------------------------------


def test_the_starting_image_is_fitted_as_the_story_says(
    tmp_path: Path, recording: RecordingBackend
) -> None:
    from PIL import Image

    make_image(tmp_path / "square.png", (200, 200), color=(250, 250, 250))
    story = tmp_path / "fit.yaml"
    base = (
        "reference: square.png\n"
        "defaults: {width: 256, height: 128, frames: 5, fps: 8, fit: %s}\n"
        "scenes:\n  - {id: a, motion: still}\n"
    )
    firsts: dict[str, Image.Image] = {}
    for mode in ("pad", "crop", "stretch"):
        story.write_text(base % mode)
        result = videokit.Pipeline(story, backend=recording, out=tmp_path / mode).run()
        # The contact sheet's first frame is the clip's frame 0: the fitted picture.
        with Image.open(result.scenes["a"].first_frame) as image:
            firsts[mode] = image.convert("RGB")
        assert firsts[mode].size == (256, 128)
    # pad: the square sits between black bars on the left and right.
    assert max(firsts["pad"].getpixel((2, 64))) < 40  # type: ignore[arg-type]
    assert max(firsts["pad"].getpixel((128, 64))) > 60  # type: ignore[arg-type]
    # crop and stretch fill the frame: no bars.
    for mode in ("crop", "stretch"):
        assert max(firsts[mode].getpixel((2, 64))) > 60, mode  # type: ignore[arg-type]
    # Each mode is its own input, so its own cache entry.
    assert len(set(recording.scenes("animate"))) == 1 and len(recording.calls) == 3


def test_validate_warns_what_the_default_crop_cuts(tmp_path: Path) -> None:
    make_image(tmp_path / "square.png", (200, 200))
    story = tmp_path / "crop.yaml"
    story.write_text(
        "reference: square.png\ndefaults: {width: 256, height: 128, frames: 5}\n"
        "scenes:\n  - {id: a, motion: still}\n"
    )
    checked = videokit_cli("validate", str(story), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    said = " ".join(checked.stderr.split())
    assert "square.png is 200x200" in said and "top and bottom" in said and "fit: pad" in said
    story.write_text(story.read_text().replace("frames: 5}", "frames: 5, fit: crop}"))
    assert "warning" not in videokit_cli("validate", str(story), cwd=tmp_path).stderr
