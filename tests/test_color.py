"""Colour that holds across a chain: Lab conversions, ΔE, Reinhard matching, the story's ``color``
option, and matching in a real preview render with a known drift (``ColorDrift``).

Clips are small (256×144, 9-17 frames) and go through the bundled ffmpeg, so the module runs in
well under a minute on two cores.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

import videokit
from tests.conftest import RecordingBackend
from videokit.backends.base import JobContext
from videokit.backends.preview import ColorDrift, PreviewBackend
from videokit.backends.preview_drift import drift_from_env
from videokit.errors import ConfigError
from videokit.media.color import (
    ColorTransfer,
    cast_delta_e,
    delta_e,
    lab_stats,
    lab_to_srgb,
    srgb_to_lab,
)
from videokit.media.color_clip import match_clip, match_png
from videokit.media.ffmpeg import RawVideoWriter, run_ffmpeg
from videokit.media.images import decode_png_array, encode_png
from videokit.media.probe import probe_video, read_frames
from videokit.protocol import AnimateRequest, MediaInput

Frame = npt.NDArray[np.uint8]
W, H = 256, 144
DRIFT = ColorDrift(gain=(1.07, 1.0, 0.93), offset=(2.0, 0.0, -2.0))


def picture(width: int = W, height: int = H) -> Frame:
    """A smooth picture with structure: a sky gradient and coloured discs."""
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(40 + 150 * y // height, 110, 200 - 140 * y // height))
    for i in range(6):
        x, y, r = i * width // 6, height // 3 + (i % 2) * height // 5, width // 16
        draw.ellipse((x, y, x + 2 * r, y + 2 * r), fill=(240, 190 - 25 * i, 50 + 30 * i))
    return np.asarray(img, dtype=np.uint8).copy()


def drifted(frame: Frame, gain: tuple[float, float, float], offset: float = 0.0) -> Frame:
    return np.clip(np.rint(frame * np.array(gain) + offset), 0, 255).astype(np.uint8)


# -- conversions and ΔE ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "lab"),
    [
        ((255, 255, 255), (100.0, 0.0, 0.0)),
        ((0, 0, 0), (0.0, 0.0, 0.0)),
        ((128, 128, 128), (53.585, 0.0, 0.0)),
        ((255, 0, 0), (53.241, 80.092, 67.203)),
        ((0, 255, 0), (87.735, -86.183, 83.179)),
        ((0, 0, 255), (32.297, 79.188, -107.860)),
    ],
)
def test_known_lab_values(rgb: tuple[int, int, int], lab: tuple[float, float, float]) -> None:
    # Reference values: CIE L*a*b* of sRGB colours under D65 (Lindbloom's calculator).
    got = srgb_to_lab(np.array([rgb], dtype=np.uint8))[0]
    assert got == pytest.approx(lab, abs=0.01)


def test_srgb_lab_round_trip_is_exact() -> None:
    levels = np.arange(0, 256, 3, dtype=np.uint8)  # 86³ colours, black and white included
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    assert np.array_equal(lab_to_srgb(srgb_to_lab(grid)), grid)


def test_delta_e_of_identical_images_is_zero_and_black_to_white_is_100() -> None:
    frame = picture()
    assert delta_e(frame, frame.copy()) == 0.0
    assert cast_delta_e(frame, frame) == 0.0
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert delta_e(black, white) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="one size"):
        delta_e(black, picture())


# -- matching frames -------------------------------------------------------------------------------


def test_matching_removes_an_injected_drift() -> None:
    frame = picture()
    shifted = drifted(frame, (1.08, 1.0, 0.9), 6)
    before = delta_e(shifted, frame)
    matched = ColorTransfer(frame).apply(shifted)
    after = delta_e(matched, frame)
    assert before > 5
    # A gain per RGB channel is not an affine map in Lab, so pixel by pixel about a third of the
    # difference is left; the colour cast (what compounds along a chain) is gone.
    assert after < before / 2.5
    assert cast_delta_e(matched, frame) < 0.3


def test_the_fast_path_is_reinhards_transfer_in_lab() -> None:
    """The float32 tables-and-blocks path against the textbook formula in float64."""
    anchor = picture()
    frame = drifted(np.roll(anchor, 40, axis=1), (1.1, 0.95, 0.85), -4)
    target = lab_stats(anchor)
    lab = srgb_to_lab(frame).reshape(-1, 3)
    matched = (lab - lab.mean(axis=0)) / lab.std(axis=0) * target.std + target.mean
    textbook = lab_to_srgb(matched).reshape(frame.shape)
    fast = ColorTransfer(target).apply(frame)
    assert np.abs(fast.astype(int) - textbook).max() <= 1
    assert (fast != textbook).mean() < 0.01


def test_strength_zero_is_identity_and_a_half_goes_half_way() -> None:
    anchor = picture()
    frame = drifted(anchor, (1.1, 1.0, 0.9))
    assert np.array_equal(ColorTransfer(anchor, strength=0.0).apply(frame), frame)
    full = cast_delta_e(frame, anchor)
    half = cast_delta_e(ColorTransfer(anchor, strength=0.5).apply(frame), anchor)
    assert 0.4 * full < half < 0.6 * full
    with pytest.raises(ValueError, match="between 0 and 1"):
        ColorTransfer(anchor, strength=1.5)


def test_a_frame_matched_to_itself_is_unchanged_and_works_in_place() -> None:
    frame = picture()
    copy = frame.copy()
    assert ColorTransfer(frame).apply(copy, out=copy) is copy
    assert np.array_equal(copy, frame)


def test_a_flat_frame_is_shifted_not_blown_up() -> None:
    flat = np.full((32, 48, 3), (90, 60, 40), np.uint8)
    matched = ColorTransfer(picture()).apply(flat)
    assert np.ptp(matched.reshape(-1, 3), axis=0).max() <= 1  # still flat
    assert cast_delta_e(matched, picture()) < cast_delta_e(flat, picture())


# -- matching clips --------------------------------------------------------------------------------


def _clip(path: Path, frames: list[Frame], *, audio: bool = False) -> Path:
    if not audio:
        with RawVideoWriter(path, width=W, height=H, fps=12, crf=14, preset="veryfast") as out:
            for frame in frames:
                out.write(frame)
        return path
    silent = _clip(path.with_name("silent.mp4"), frames)
    run_ffmpeg(
        ["-i", str(silent), "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
         "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(path)]
    )  # fmt: skip
    return path


def test_a_matched_clip_keeps_its_frames_size_rate_and_audio(tmp_path: Path) -> None:
    anchor = picture()
    source = [drifted(anchor, (1 + 0.01 * i, 1.0, 1 - 0.01 * i)) for i in range(9)]
    clip = _clip(tmp_path / "drift.mp4", source, audio=True)
    result = match_clip(clip, tmp_path / "matched.mp4", ColorTransfer(anchor))
    info, before = probe_video(result.path), probe_video(clip)
    assert (info.frames, info.width, info.height, info.fps) == (9, W, H, 12)
    assert info.has_audio and before.has_audio
    assert result.frames == 9
    frames = list(read_frames(result.path))
    decoded = list(read_frames(clip))
    assert cast_delta_e(frames[-1], anchor) < cast_delta_e(decoded[-1], anchor) / 4


def test_an_unchanged_clip_comes_back_unchanged(tmp_path: Path) -> None:
    """The decoder and the encoder use the same YUV matrix: no colour shift from the round trip."""
    anchor = picture()
    clip = _clip(tmp_path / "still.mp4", [anchor] * 5)
    matched = match_clip(clip, tmp_path / "matched.mp4", ColorTransfer(anchor))
    for before, after in zip(read_frames(clip), read_frames(matched.path), strict=True):
        assert delta_e(before, after) < 1.0


def test_strength_zero_copies_the_clip_and_the_frame(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "a.mp4", [picture()] * 5)
    matched = match_clip(clip, tmp_path / "b.mp4", ColorTransfer(picture(), strength=0.0))
    assert matched.path.read_bytes() == clip.read_bytes()
    png = encode_png(picture())
    assert match_png(png, ColorTransfer(picture(), strength=0.0)) == png


# -- the preview's test drift ----------------------------------------------------------------------


def test_the_preview_drift_ramps_through_a_clip_and_compounds_along_a_chain() -> None:
    backend = PreviewBackend(drift=DRIFT)
    assert backend.identity("animate") == (
        "preview/animatic@2+drift(gain=1.07,1,0.93;offset=2,0,-2)"
    )
    assert PreviewBackend().identity("animate") == "preview/animatic@2"
    start = encode_png(picture())

    def animate(image: bytes) -> bytes:
        request = AnimateRequest(
            image=MediaInput.from_bytes(image), prompt="push in", width=W, height=H,
            frames=9, fps=12, seed=1,
        )  # fmt: skip
        result = asyncio.run(backend.animate(request, JobContext("s", "animate")))
        return result.last_frame.decode()

    first = animate(start)
    second = animate(first)
    r0, r1, r2 = (decode_png_array(png)[..., 0].mean() for png in (start, first, second))
    b0, b1, b2 = (decode_png_array(png)[..., 2].mean() for png in (start, first, second))
    assert r0 < r1 < r2 and b0 > b1 > b2  # red up and blue down, clip after clip
    assert cast_delta_e(decode_png_array(second), picture()) > 1.5 * cast_delta_e(
        decode_png_array(first), picture()
    )


def test_the_drift_variable_is_parsed_or_refused() -> None:
    assert drift_from_env({}) is None
    assert drift_from_env({"VIDEOKIT_PREVIEW_DRIFT": "1.04,1,0.96"}) == ColorDrift(
        gain=(1.04, 1.0, 0.96)
    )
    both = drift_from_env({"VIDEOKIT_PREVIEW_DRIFT": "gain=1.1,1,1; offset=3,0,-3"})
    assert both == ColorDrift(gain=(1.1, 1.0, 1.0), offset=(3.0, 0.0, -3.0))
    for bad in ("warm", "1.04,1", "gain=3,1,1", "hue=1,1,1"):
        with pytest.raises(ConfigError) as caught:
            drift_from_env({"VIDEOKIT_PREVIEW_DRIFT": bad})
        assert "VIDEOKIT_PREVIEW_DRIFT" in caught.value.message
        assert caught.value.hint is not None and "tests only" in caught.value.hint


# -- the story option ------------------------------------------------------------------------------

STORY = """\
reference: ref.png
defaults: {{width: 256, height: 144, frames: 9, fps: 12{defaults}}}
scenes:
{scenes}
"""


@pytest.fixture
def chain(story_dir: Path) -> Callable[..., Path]:
    """A story of ``count`` chained scenes over a structured reference picture."""
    Image.fromarray(picture(320, 180)).save(story_dir / "ref.png")

    def write(
        defaults: str = "", count: int = 3, extra: dict[int, str] | None = None, frames: int = 9
    ) -> Path:
        lines = []
        for i in range(count):
            more = (extra or {}).get(i, "")
            lines.append(f"  - {{id: s{i}, motion: the camera pushes in, frames: {frames}{more}}}")
        path = story_dir / "story.yaml"
        path.write_text(STORY.format(defaults=defaults, scenes="\n".join(lines)))
        return path

    return write


@pytest.mark.parametrize(
    ("defaults", "field", "message", "hint"),
    [
        (", color: {match: refrence}", "defaults.color.match",
         "input should be 'reference', 'previous' or 'off', got 'refrence'", "previous (match"),
        (", color: {match: on}", "defaults.color.match", "'on' (true) is not a colour match",
         "'reference' (the story's reference frame)"),
        (", color: {strength: 1.5}", "defaults.color.strength",
         "less than or equal to 1, got 1.5", "from 0 to 1"),
        (", color: {match: reference, strenght: 0.5}", "defaults.color.strenght",
         "unknown key 'strenght'; did you mean 'strength'?", None),
        (", color: sepia", "defaults.color.match", "got 'sepia'", "reference"),
    ],
)  # fmt: skip
def test_bad_color_options_are_refused_with_where_and_how(
    chain: Callable[..., Path], defaults: str, field: str, message: str, hint: str | None
) -> None:
    story = chain(defaults)
    with pytest.raises(videokit.StoryError) as caught:
        videokit.Pipeline(story).plan()
    (problem,) = caught.value.problems
    assert problem.field == field and problem.line == 2 and problem.file == story
    assert message in problem.message
    if hint is not None:
        assert problem.hint is not None and hint in problem.hint


def test_a_bad_scene_color_names_the_scene(chain: Callable[..., Path]) -> None:
    story = chain(extra={1: ", color: {strength: -0.1}"})
    with pytest.raises(videokit.StoryError) as caught:
        videokit.Pipeline(story).plan()
    (problem,) = caught.value.problems
    assert (problem.scene, problem.field, problem.line) == ("s1", "scenes[1].color.strength", 5)


def test_scene_color_overrides_the_defaults_field_by_field(chain: Callable[..., Path]) -> None:
    story = chain(
        ", color: {match: reference, strength: 0.8}",
        count=5,
        extra={1: ", color: {strength: 0.5}", 2: ", color: off", 3: ", color: previous"},
    )
    plan = videokit.Pipeline(story).plan()
    got = {s: (c.match, c.strength) if (c := plan.scenes[s].color) else None for s in plan.scenes}
    assert got == {
        "s0": ("reference", 0.8),
        "s1": ("reference", 0.5),
        "s2": None,  # YAML reads a bare `off` as false: still off
        "s3": ("previous", 0.8),
        "s4": ("reference", 0.8),
    }
    assert plan.scenes["s0"].color.reference == story.parent / "ref.png"
    defaults_off = videokit.Pipeline(chain(extra={0: ", color: {match: reference}"})).plan()
    assert defaults_off.scenes["s0"].color is not None and defaults_off.scenes["s1"].color is None


def test_the_schema_has_the_option_and_its_shorthand() -> None:
    schema = videokit.Story.model_json_schema(by_alias=True)
    settings = schema["$defs"]["ColorSettings"]["properties"]
    assert settings["match"]["enum"] == ["reference", "previous", "off"]
    assert (settings["strength"]["minimum"], settings["strength"]["maximum"]) == (0.0, 1.0)
    scene = schema["$defs"]["Scene"]["properties"]["color"]["anyOf"]
    assert {"enum": ["reference", "previous", "off"], "type": "string"} in scene


# -- in a render -----------------------------------------------------------------------------------


def _manifest(out: Path) -> dict[str, Any]:
    scenes: dict[str, Any] = json.loads((out / "manifest.json").read_text())["scenes"]
    return scenes


def _last_frame_cast(out: Path, scene: str, reference: Frame) -> float:
    return cast_delta_e(
        decode_png_array((out / "scenes" / scene / "last.png").read_bytes()), reference
    )


def test_color_off_changes_no_cache_key(chain: Callable[..., Path], tmp_path: Path) -> None:
    plain = videokit.Pipeline(chain(), out=tmp_path / "out").run()
    keys = {s: r["animate"]["key"] for s, r in _manifest(tmp_path / "out").items()}
    explicit = videokit.Pipeline(
        chain(", color: {match: off, strength: 0.3}"), out=tmp_path / "out"
    ).run()
    assert plain.rendered == ["s0", "s1", "s2"] and explicit.cached == ["s0", "s1", "s2"]
    records = _manifest(tmp_path / "out")
    assert {s: r["animate"]["key"] for s, r in records.items()} == keys
    assert all(r["animate"]["color"] is None for r in records.values())
    assert explicit.final_video is not None and plain.final_video is not None
    assert not list((tmp_path / "out" / "scenes" / "s0").glob("*uncorrected*"))


def test_matching_holds_a_drifting_chain_to_the_reference(
    chain: Callable[..., Path], tmp_path: Path
) -> None:
    reference = picture(W, H)  # ref.png is 320x180: the same picture at frame size
    backend = PreviewBackend(drift=DRIFT)
    off = tmp_path / "off"
    videokit.Pipeline(chain(count=4), out=off, backend=backend).run()
    on = tmp_path / "on"
    result = videokit.Pipeline(
        chain(", color: {match: reference}", count=4), out=on, backend=backend
    ).run()
    drift = [_last_frame_cast(off, f"s{i}", reference) for i in range(4)]
    matched = [_last_frame_cast(on, f"s{i}", reference) for i in range(4)]
    assert drift[3] > drift[0] * 2  # the drift compounds along the chain
    assert max(matched) < drift[3] / 3 and matched[3] < 1.5
    # The first scene's model clip is the same job either way: matching changed no animate key.
    off_records, on_records = _manifest(off), _manifest(on)
    assert on_records["s0"]["animate"]["key"] == off_records["s0"]["animate"]["key"]
    color = on_records["s3"]["animate"]["color"]
    assert color["match"] == "reference" and color["strength"] == 1.0
    assert color["delta_e_after"] < color["delta_e_before"] / 3
    # The film and the clips handed on are the corrected ones; the model's are kept beside them.
    scene = on / "scenes" / "s3"
    assert (scene / "clip-uncorrected.mp4").is_file() and (scene / "last-uncorrected.png").is_file()
    film = list(read_frames(result.final_video))
    assert cast_delta_e(film[-1], reference) < 2.0
    assert probe_video(scene / "clip.mp4").frames == 9
    # The report says what was matched, and how far the last frame moved.
    before, after = color["delta_e_before"], color["delta_e_after"]
    assert (
        f"matched to the reference (strength 1): last frame ΔE {before:.1f} → {after:.1f}"
        in (on / "report.html").read_text()
    )
    # The contact sheet's (and the report's) first frame is the corrected clip's too.
    first = decode_png_array((scene / "first.png").read_bytes())
    assert np.array_equal(first, next(iter(read_frames(scene / "clip.mp4"))))


def test_a_corrected_clip_is_reused_and_survives_a_lost_store(
    chain: Callable[..., Path], tmp_path: Path
) -> None:
    story = chain(", color: {match: previous, strength: 0.7}")
    out = tmp_path / "out"
    recording = RecordingBackend(inner=PreviewBackend(drift=DRIFT))
    videokit.Pipeline(story, out=out, backend=recording).run()
    first = _manifest(out)
    digests = {
        s: hashlib.sha256((out / "scenes" / s / "clip.mp4").read_bytes()).hexdigest() for s in first
    }
    assert all(r["animate"]["color"]["cached"] is False for r in first.values())

    again = videokit.Pipeline(story, out=out, backend=recording).run()
    assert again.cached == ["s0", "s1", "s2"]
    for record in _manifest(out).values():
        color = record["animate"]["color"]
        assert color["cached"] is True and color["seconds"] is None  # reused, not re-corrected

    # The store is lost (pruned, another machine): both the model's clips and the corrected ones
    # come back from the work dir's own files, without a job, byte for byte.
    shutil.rmtree(Path(os.environ["VIDEOKIT_CACHE_DIR"]) / "store")  # see conftest
    calls = len(recording.calls)
    restored = videokit.Pipeline(story, out=out, backend=recording).run()
    assert len(recording.calls) == calls and restored.cached == ["s0", "s1", "s2"]
    assert all(r["animate"]["color"]["cached"] for r in _manifest(out).values())
    assert {
        s: hashlib.sha256((out / "scenes" / s / "clip.mp4").read_bytes()).hexdigest() for s in first
    } == digests


def test_turning_matching_off_hands_on_the_models_frames_again(
    chain: Callable[..., Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    backend = PreviewBackend(drift=DRIFT)
    videokit.Pipeline(chain(", color: reference"), out=out, backend=backend).run()
    model_last = (out / "scenes" / "s0" / "last-uncorrected.png").read_bytes()
    videokit.Pipeline(chain(), out=out, backend=backend).run()
    scene = out / "scenes" / "s0"
    assert (scene / "last.png").read_bytes() == model_last
    assert not (scene / "last-uncorrected.png").exists()
    assert _manifest(out)["s0"]["animate"]["color"] is None


def test_plan_forecasts_the_chain_from_the_corrected_frames(
    chain: Callable[..., Path], tmp_path: Path
) -> None:
    story = chain(", color: reference")
    backend = PreviewBackend(drift=DRIFT)
    videokit.Pipeline(story, out=tmp_path / "out", backend=backend).run()
    guess = videokit.Pipeline(story, out=tmp_path / "out", backend=backend).estimate()
    assert [s.animate for s in guess.scenes.values()] == ["cached", "cached", "cached"]


def test_the_option_in_yaml_end_to_end(story_dir: Path, tmp_path: Path) -> None:
    """`color: previous` on one scene, strength from the defaults: the record says what ran."""
    Image.fromarray(picture(320, 180)).save(story_dir / "ref.png")
    story = story_dir / "story.yaml"
    story.write_text(
        textwrap.dedent(
            """\
            reference: ref.png
            defaults: {width: 256, height: 144, frames: 9, fps: 12, color: {strength: 0.6}}
            scenes:
              - {id: a, motion: a slow push in}
              - {id: b, motion: a slow push in, color: {match: previous}}
            """
        )
    )
    out = tmp_path / "out"
    videokit.Pipeline(story, out=out, backend=PreviewBackend(drift=DRIFT)).run()
    records = _manifest(out)
    assert records["a"]["animate"]["color"] is None
    color = records["b"]["animate"]["color"]
    assert (color["match"], color["strength"]) == ("previous", 0.6)
    start = (out / "scenes" / "a" / "last.png").read_bytes()
    assert color["anchor_sha256"] == hashlib.sha256(start).hexdigest()
