"""A starting image of another aspect ratio is never cropped without a word.

``fit`` (crop, pad or stretch; in ``defaults`` or on a scene) says how such an image becomes a
frame; while it is left at the default, crop, planning warns about what will be cut.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import make_image
from videokit.errors import StoryError
from videokit.media.images import (
    FIT_MODES,
    cover_fit,
    crop_loss,
    encode_png,
    fit_image,
    fit_png,
)
from videokit.story import load_story, plan_story

BLACK = (0, 0, 0)
RED = (220, 30, 30)


def _solid(size: tuple[int, int], color: tuple[int, int, int] = RED) -> Image.Image:
    return Image.new("RGB", size, color)


# -- fit_image, fit_png, crop_loss ---------------------------------------------------------------


@pytest.mark.parametrize("mode", FIT_MODES)
@pytest.mark.parametrize("size", [(1024, 1024), (300, 100), (64, 480), (832, 480)])
def test_every_mode_makes_an_rgb_frame_of_exactly_the_size(
    mode: str, size: tuple[int, int]
) -> None:
    fitted = fit_image(_solid(size), 832, 480, mode)
    assert (fitted.size, fitted.mode) == ((832, 480), "RGB")


@pytest.mark.parametrize("mode", FIT_MODES)
def test_an_image_of_the_exact_size_is_unchanged(mode: str, tmp_path: Path) -> None:
    with Image.open(make_image(tmp_path / "exact.png", (160, 96))) as image:
        assert fit_image(image, 160, 96, mode).tobytes() == image.convert("RGB").tobytes()


def test_crop_is_cover_fit() -> None:
    image = _gradient((640, 640))
    assert fit_image(image, 320, 176, "crop").tobytes() == cover_fit(image, 320, 176).tobytes()


def test_pad_centres_the_whole_picture_on_black_bars() -> None:
    # 200x100 into 100x100: scaled to 100x50, with 25 rows of black above and below.
    padded = fit_image(_solid((200, 100)), 100, 100, "pad")
    assert padded.getpixel((50, 10)) == BLACK and padded.getpixel((50, 90)) == BLACK
    assert padded.getpixel((50, 50)) == RED
    assert padded.getpixel((0, 30)) == RED and padded.getpixel((99, 70)) == RED
    top = padded.crop((0, 0, 100, 25)).getcolors()
    assert top == [(2500, BLACK)]
    # And sideways: a tall picture gets bars left and right.
    tall = fit_image(_solid((50, 100)), 100, 100, "pad")
    assert tall.getpixel((10, 50)) == BLACK and tall.getpixel((90, 50)) == BLACK
    assert tall.getpixel((50, 0)) == RED and tall.getpixel((50, 99)) == RED


def test_stretch_fills_the_frame_with_the_whole_picture() -> None:
    stretched = fit_image(_solid((50, 100)), 100, 100, "stretch")
    assert stretched.getcolors() == [(10_000, RED)]
    # The picture's left and right halves stay left and right: nothing is cut.
    halves = Image.new("RGB", (40, 100), BLACK)
    halves.paste(_solid((20, 100)), (20, 0))
    wide = fit_image(halves, 200, 100, "stretch")
    assert wide.getpixel((10, 50)) == BLACK and wide.getpixel((190, 50)) == RED


def test_transparency_is_flattened_onto_white() -> None:
    clear = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    for mode in FIT_MODES:
        fitted = fit_image(clear, 100, 50, mode)
        assert fitted.mode == "RGB"
        assert fitted.getpixel((50, 25)) == (255, 255, 255)


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="crop, pad, stretch"):
        fit_image(_solid((10, 10)), 20, 20, "cover")


def test_fit_png_returns_an_exactly_sized_image_as_it_is() -> None:
    data = _png(_gradient((160, 96)), optimize=True)  # not the bytes encode_png would write
    for mode in FIT_MODES:
        assert fit_png(data, 160, 96, mode) is data


def test_fit_png_fits_and_encodes_deterministically() -> None:
    data = _png(_gradient((300, 300)))
    for mode in FIT_MODES:
        fitted = fit_png(data, 160, 96, mode)
        assert fitted == fit_png(data, 160, 96, mode)
        decoded = Image.open(io.BytesIO(fitted))
        assert (decoded.format, decoded.size) == ("PNG", (160, 96))
        assert fitted == encode_png(fit_image(_gradient((300, 300)), 160, 96, mode))


def test_crop_loss_says_what_crop_cuts() -> None:
    square = crop_loss(1024, 1024, 832, 480)
    assert (square.sides, square.pixels) == ("top and bottom", 217)  # 1024 - 590.8 rows, halved
    assert square.fraction == pytest.approx(1 - 480 / 832)
    wide = crop_loss(2000, 500, 832, 480)
    assert (wide.sides, wide.pixels) == ("left and right", 567)  # 2000 - 866.7 columns, halved
    assert wide.fraction == pytest.approx(1 - (500 * 832 / 480) / 2000)
    assert crop_loss(1664, 960, 832, 480) == ("", 0, 0.0)  # only scaled


# -- the story side ------------------------------------------------------------------------------


@pytest.fixture
def story_dir(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png", (1024, 1024))
    return tmp_path


ONE_SCENE = "title: t\nreference: ref.png\nscenes: [{id: a, motion: m}]\n"


def _write(story_dir: Path, text: str, name: str = "story.yaml") -> Path:
    path = story_dir / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _warnings(story_dir: Path, text: str) -> tuple[str, ...]:
    return plan_story(load_story(_write(story_dir, text))).warnings


def test_a_square_reference_with_the_default_fit_is_a_warning(story_dir: Path) -> None:
    story = _write(
        story_dir,
        """
        title: t
        reference: ref.png
        scenes:
          - {id: a, motion: m}
          - {id: b, motion: m, from: reference}
          - {id: c, motion: m, from: reference, fit: pad}
        """,
    )
    (warning,) = plan_story(load_story(story)).warnings  # once for the image, not per scene
    assert warning == (
        f"{story}:2, reference: {story_dir / 'ref.png'} is 1024x1024 and frames are 832x480: it "
        "will be cropped, losing 217 px from the top and bottom each (42% of the picture)\n"
        "  hint: set fit: pad (black bars) or fit: stretch in defaults or on this scene, or crop "
        "the image yourself; fit: crop silences this"
    )


@pytest.mark.parametrize(
    ("defaults", "scene"),
    [
        ("defaults: {fit: crop}", ""),
        ("defaults: {fit: pad}", ""),
        ("defaults: {fit: stretch}", ""),
        ("", ", fit: crop"),
        ("", ", fit: pad"),
    ],
    ids=["explicit-crop", "pad", "stretch", "scene-crop", "scene-pad"],
)
def test_a_chosen_fit_is_not_a_warning(story_dir: Path, defaults: str, scene: str) -> None:
    text = f"title: t\nreference: ref.png\n{defaults}\nscenes:\n  - {{id: a, motion: m{scene}}}\n"
    assert _warnings(story_dir, text) == ()


def test_a_reference_of_the_frames_aspect_ratio_is_only_scaled(story_dir: Path) -> None:
    make_image(story_dir / "ref.png", (1664, 960))
    assert _warnings(story_dir, ONE_SCENE) == ()


def test_an_image_in_from_is_warned_about_once_at_its_first_use(story_dir: Path) -> None:
    make_image(story_dir / "ref.png", (832, 480))
    make_image(story_dir / "shots" / "wide.png", (2000, 500))
    story = _write(
        story_dir,
        """
        title: t
        reference: [ref.png]
        scenes:
          - {id: a, motion: m}
          - {id: b, motion: m, from: shots/wide.png, fit: stretch}
          - {id: c, motion: m, from: shots/wide.png}
          - {id: d, motion: m, from: shots/wide.png}
        """,
    )
    (warning,) = plan_story(load_story(story)).warnings
    assert warning.startswith(
        f"{story}:6, scenes[2].from: {story_dir / 'shots' / 'wide.png'} is 2000x500 and frames "
        "are 832x480: it will be cropped, losing 567 px from the left and right each (57% of"
    )


def test_an_invalid_fit_is_reported_with_the_choices(story_dir: Path) -> None:
    story = _write(story_dir, ONE_SCENE.replace("motion: m", "motion: m, fit: x"))
    with pytest.raises(StoryError) as caught:
        load_story(story)
    (problem,) = caught.value.problems
    assert problem.field == "scenes[0].fit"
    assert problem.hint is not None and "crop, pad or stretch" in problem.hint


def test_scene_plans_resolve_fit_over_the_defaults(story_dir: Path) -> None:
    plan = plan_story(
        load_story(
            _write(
                story_dir,
                """
                title: t
                reference: ref.png
                defaults: {fit: pad}
                scenes:
                  - {id: a, motion: m}
                  - {id: b, motion: m, fit: stretch}
                  - {id: c, motion: m, fit: crop}
                """,
            )
        )
    )
    assert {s: p.fit for s, p in plan.scenes.items()} == {"a": "pad", "b": "stretch", "c": "crop"}
    default = _write(story_dir, ONE_SCENE)
    assert plan_story(load_story(default)).scenes["a"].fit == "crop"


def test_the_plan_knows_the_size_of_every_image_it_read(story_dir: Path) -> None:
    make_image(story_dir / "style.png", (64, 48))
    make_image(story_dir / "own.png", (80, 60))
    make_image(story_dir / "start.png", (320, 180))
    story = _write(
        story_dir,
        """
        title: t
        reference: [ref.png, style.png]
        defaults: {fit: pad}
        scenes:
          - {id: a, motion: m, edit: {prompt: p, images: [own.png]}}
          - {id: b, motion: m, from: start.png}
        """,
    )
    plan = plan_story(load_story(story))
    assert dict(plan.image_sizes) == {
        story_dir / "ref.png": (1024, 1024),
        story_dir / "style.png": (64, 48),
        story_dir / "own.png": (80, 60),
        story_dir / "start.png": (320, 180),
    }
    assert plan_story(load_story(story), check_files=False).image_sizes == {}


def _gradient(size: tuple[int, int]) -> Image.Image:
    return Image.linear_gradient("L").resize(size).convert("RGB")


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()
