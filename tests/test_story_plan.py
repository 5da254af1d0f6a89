"""Planning: settings merged over the defaults, extra references, warnings, and the wire contract.

A plan must never yield a job the wire models refuse: the property test below builds the real
requests (``videokit.pipeline.requests``) for random stories at the edges of every range.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import ValidationError

import videokit
from tests.conftest import RecordingBackend, make_image
from videokit.backends.base import JobContext
from videokit.errors import StoryError
from videokit.media.images import encode_png
from videokit.pipeline.requests import animate_request, edit_request
from videokit.protocol import (
    MAX_FRAMES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MIN_FRAMES,
    EditRequest,
    EditResult,
    MediaInput,
)
from videokit.story import load_story, parse_story, plan_story
from videokit.story.model import MAX_EDIT_IMAGES
from videokit.story.plan import unwritable_reason

WriteStory = Callable[..., Path]


@pytest.fixture
def story_dir(tmp_path: Path) -> Path:
    # The frames' aspect ratio (832x480): a reference that would be cropped draws a warning, and
    # these tests count warnings (tests/test_fit.py tests that one).
    make_image(tmp_path / "ref.png", (416, 240))
    return tmp_path


def test_a_partial_animate_override_keeps_the_other_defaults(write_story: WriteStory) -> None:
    plan = plan_story(
        load_story(
            write_story(
                """
                title: t
                reference: ref.png
                defaults:
                  animate: {steps: 40, guidance: 4.0, guidance_2: 3.0}
                scenes:
                  - {id: a, motion: m, animate: {guidance: 5.0}}
                  - {id: b, motion: m, animate: {steps: 4}}
                  - {id: c, motion: m, animate: {}}
                  - {id: d, motion: m}
                """
            )
        )
    )
    settings_of = {s: (p.steps, p.guidance, p.guidance_2) for s, p in plan.scenes.items()}
    assert settings_of == {
        "a": (40, 5.0, 3.0),  # only guidance was written
        "b": (4, 4.0, 3.0),  # 4 is also the class default: written, so it still wins
        "c": (40, 4.0, 3.0),
        "d": (40, 4.0, 3.0),
    }


def test_a_partial_edit_override_keeps_the_other_defaults(write_story: WriteStory) -> None:
    plan = plan_story(
        load_story(
            write_story(
                """
                title: t
                reference: ref.png
                defaults:
                  edit: {steps: 4, guidance: 2.5, negative_prompt: smudges}
                scenes:
                  - {id: a, motion: m, edit: {prompt: p, guidance: 3.0}}
                  - {id: b, motion: m, edit: {prompt: p, steps: 8}}
                """
            )
        )
    )
    a, b = plan.scenes["a"].edit, plan.scenes["b"].edit
    assert a is not None and b is not None
    assert (a.steps, a.guidance, a.negative_prompt) == (4, 3.0, "smudges")
    assert (b.steps, b.guidance, b.negative_prompt) == (8, 2.5, "smudges")


NEGATIVE_STORY = """
title: t
reference: ref.png
defaults:
  negative_prompt: blurry, low quality
  {edit_defaults}
scenes:
  - {{id: plain, motion: m, edit: p}}
  - {{id: own, motion: m, negative_prompt: static, edit: {{prompt: p, negative_prompt: text}}}}
  - {{id: anim-only, motion: m, negative_prompt: static, edit: p}}
"""


@pytest.mark.parametrize(
    ("edit_defaults", "story_wide_for_edits"),
    [("", "blurry, low quality"), ("edit: {negative_prompt: ''}", ""), ("edit: {steps: 8}", None)],
    ids=["inherited", "explicitly-none", "other-edit-settings"],
)
def test_negative_prompt_inheritance(
    write_story: WriteStory, edit_defaults: str, story_wide_for_edits: str | None
) -> None:
    """The most specific negative prompt wins; the story-wide one reaches edits too, unless
    ``defaults.edit.negative_prompt`` is written (even as '')."""
    expected_edit_default = (
        "blurry, low quality" if story_wide_for_edits is None else story_wide_for_edits
    )
    plan = plan_story(load_story(write_story(NEGATIVE_STORY.format(edit_defaults=edit_defaults))))
    negatives = {
        sid: (p.negative_prompt, p.edit.negative_prompt if p.edit else None)
        for sid, p in plan.scenes.items()
    }
    assert negatives == {
        "plain": ("blurry, low quality", expected_edit_default),
        "own": ("static", "text"),
        # A scene's negative_prompt is its animation's; its edit keeps the story's.
        "anim-only": ("static", expected_edit_default),
    }


def test_edit_guidance_without_any_negative_prompt_is_a_warning(write_story: WriteStory) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        scenes:
          - {id: a, motion: m, edit: {prompt: p, guidance: 4.0}}
        """
    )
    (warning,) = plan_story(load_story(story)).warnings
    assert warning.startswith(f"{story}:4, scene 'a', scenes[0].edit.guidance: edit guidance 4")
    inherited = write_story(
        """
        title: t
        reference: ref.png
        defaults: {negative_prompt: blurry}
        scenes:
          - {id: a, motion: m, edit: {prompt: p, guidance: 4.0}}
        """,
        name="inherited.yaml",
    )
    assert plan_story(load_story(inherited)).warnings == ()


class _EditRecorder(RecordingBackend):
    """The preview backend, keeping every edit request it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.edits: dict[str, EditRequest] = {}

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        self.edits[ctx.scene] = request
        return await super().edit(request, ctx)


def test_extra_references_reach_every_edit_after_its_own_images(
    write_story: WriteStory, story_dir: Path, tmp_path: Path
) -> None:
    for name, color in (("style.png", (0, 0, 200)), ("own.png", (0, 200, 0))):
        make_image(story_dir / name, (160, 96), color)
    story = write_story(
        """
        title: t
        reference: [ref.png, style.png]
        defaults: {width: 128, height: 128, frames: 5}
        scenes:
          - {id: a, motion: m, edit: now at night}
          - {id: b, motion: m, edit: {prompt: p, images: [own.png]}}
          - {id: c, motion: m}
        """
    )
    plan = plan_story(load_story(story))
    a, b = plan.scenes["a"].edit, plan.scenes["b"].edit
    assert a is not None and b is not None
    assert a.images == (story_dir / "style.png",)
    assert b.images == (story_dir / "own.png", story_dir / "style.png")

    backend = _EditRecorder()
    videokit.Pipeline(story, backend=backend, out=tmp_path / "out").run()
    sent = {
        scene: [media.decode() for media in request.images[1:]]
        for scene, request in backend.edits.items()
    }
    style, own = (story_dir / "style.png").read_bytes(), (story_dir / "own.png").read_bytes()
    assert sent == {"a": [style], "b": [own, style]}
    assert all(len(r.images) <= MAX_EDIT_IMAGES for r in backend.edits.values())


def test_edit_images_limit_matches_the_wire_model() -> None:
    image = MediaInput.from_bytes(b"x")
    EditRequest(images=[image] * MAX_EDIT_IMAGES, prompt="p", seed=0)
    with pytest.raises(ValidationError, match="at most"):
        EditRequest(images=[image] * (MAX_EDIT_IMAGES + 1), prompt="p", seed=0)


def test_extra_references_without_edits_are_a_warning(
    write_story: WriteStory, story_dir: Path
) -> None:
    make_image(story_dir / "s.png")
    story = write_story(
        """
        title: t
        reference: [ref.png, s.png]
        scenes:
          - {id: a, motion: m}
        """
    )
    (warning,) = plan_story(load_story(story)).warnings
    assert f"{story}:2, reference[1]: the extra reference images are given to edits" in warning


@pytest.mark.parametrize(
    ("duration", "frames", "bound"),
    [(0.01, MIN_FRAMES, "at least"), (60.0, MAX_FRAMES, "at most")],
)
def test_a_clamped_duration_is_a_warning(
    write_story: WriteStory, duration: float, frames: int, bound: str
) -> None:
    story = write_story(
        f"""
        title: t
        reference: ref.png
        scenes:
          - {{id: a, motion: m, duration: {duration}}}
          - {{id: b, motion: m, duration: 2}}
        """
    )
    plan = plan_story(load_story(story))
    assert plan.scenes["a"].frames == frames and plan.scenes["b"].frames == 33
    (warning,) = plan.warnings
    assert warning.startswith(f"{story}:4, scene 'a', scenes[0].duration: {duration:g} s at 16")
    assert f"a clip has {bound} {frames} frames" in warning


def test_a_clamping_default_duration_is_said_once(write_story: WriteStory) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        defaults: {duration: 0.1}
        scenes:
          - {id: a, motion: m}
          - {id: b, motion: m}
        """
    )
    (warning,) = plan_story(load_story(story)).warnings
    assert warning.startswith(f"{story}:3, defaults.duration: 0.1 s at 16 fps is 1.6 frames")


def test_a_crossfade_off_the_timeline_is_a_warning(write_story: WriteStory) -> None:
    story = write_story(
        """
        title: t
        reference: ref.png
        scenes:
          - {id: a, motion: m}
          - {id: b, motion: m, transition: {crossfade: 0.5}}
        timeline: [a]
        """
    )
    (warning,) = plan_story(load_story(story)).warnings
    assert warning.startswith(f"{story}:5, scene 'b', scenes[1].transition: 'b' is not on")


def test_output_directories_are_creatable_without_being_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper"
    assert unwritable_reason(target) is None
    assert not (tmp_path / "new").exists(), "checking must not create anything"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert (
        unwritable_reason(tmp_path / "file" / "sub")
        == f"{tmp_path / 'file'} is a file, not a folder"
    )
    if Path("/proc").is_dir():
        # Root passes every permission check, yet nothing can be created in /proc.
        reason = unwritable_reason(Path("/proc/videokit"))
        assert reason is not None and "/proc" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_a_read_only_directory_is_unwritable(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert unwritable_reason(locked / "out") == f"no permission to create files in {locked}"
    finally:
        locked.chmod(0o700)


def test_merge_keys_override_instead_of_duplicating(story_dir: Path) -> None:
    story = parse_story(
        """
title: t
reference: ref.png
scenes:
  - &shot {id: a, motion: the camera drifts, frames: 33}
  - <<: *shot
    id: b
  - <<: [*shot]
    id: c
    frames: 49
""",
        base_dir=story_dir,
    )
    assert [(s.id, s.motion, s.frames) for s in story.scenes] == [
        ("a", "the camera drifts", 33),
        ("b", "the camera drifts", 33),
        ("c", "the camera drifts", 49),
    ]


def test_nested_merges_cost_their_keys_once(story_dir: Path) -> None:
    # Each level merges the previous one ten times: PyYAML's flatten_mapping would build
    # 10**8 key pairs; resolving merges key by key keeps it at ten.
    lines = ["x0: &x0 {" + ", ".join(f"k{i}: {i}" for i in range(10)) + "}"]
    for level in range(1, 9):
        lines.append(f"x{level}: &x{level} {{<<: [" + ", ".join([f"*x{level - 1}"] * 10) + "]}")
    text = "\n".join(lines) + "\ntitle: t\nreference: ref.png\nscenes: [{id: a, motion: m}]\n"
    started = time.monotonic()
    with pytest.raises(StoryError) as caught:
        parse_story(text, base_dir=story_dir)
    assert time.monotonic() - started < 2
    assert {p.message for p in caught.value.problems} == {f"unknown key 'x{i}'" for i in range(9)}


# -- the wire contract -----------------------------------------------------------------------------

_SIDES = st.sampled_from([128, 480, 832, 1088, 1280, 1440, 1920])
_FRAMES = st.sampled_from([MIN_FRAMES, 9, 81, MAX_FRAMES])


@st.composite
def _prompts(draw: st.DrawFn, *, blank_ok: bool = False) -> str:
    size = draw(st.sampled_from([1, MAX_PROMPT_CHARS - 1, MAX_PROMPT_CHARS]))
    text = draw(st.sampled_from(["a", "é", "🙂"])) * size
    return text if not blank_ok or draw(st.booleans()) else ""


@st.composite
def _edge_stories(draw: st.DrawFn) -> dict[str, object]:
    """Stories with values at the edges of what the story format accepts."""
    length: dict[str, object] = (
        {"frames": draw(_FRAMES)}
        if draw(st.booleans())
        else {"duration": draw(st.sampled_from([0.01, 0.3, 2.5, 15.0, 60.0]))}
    )
    defaults: dict[str, object] = {
        "width": draw(_SIDES),
        "height": draw(_SIDES),
        "fps": draw(st.sampled_from([1, 16, 60])),
        "seed": draw(st.sampled_from([0, MAX_SEED])),
        "negative_prompt": draw(_prompts(blank_ok=True)),
        "animate": {
            "steps": draw(st.sampled_from([1, 100])),
            "guidance": draw(st.sampled_from([0.0, 20.0])),
            "guidance_2": draw(st.sampled_from([0.0, 20.0, None])),
        },
        "edit": {
            "steps": draw(st.sampled_from([1, 100])),
            "guidance": draw(st.sampled_from([0.0, 20.0])),
        },
        **length,
    }
    scene: dict[str, object] = {
        "id": "s",
        "motion": draw(_prompts()),
        "seed": draw(st.sampled_from([0, MAX_SEED, None])),
        "animate": {"guidance_2": draw(st.sampled_from([0.0, 20.0]))},
    }
    if draw(st.booleans()):
        scene["edit"] = {
            "prompt": draw(_prompts()),
            "negative_prompt": draw(_prompts(blank_ok=True)),
            "seed": draw(st.sampled_from([0, MAX_SEED])),
            "images": ["ref.png"] * draw(st.integers(0, MAX_EDIT_IMAGES - 1)),
        }
    return {"title": "edges", "reference": "ref.png", "defaults": defaults, "scenes": [scene]}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(_edge_stories())
def test_every_planned_scene_makes_valid_wire_requests(
    story_dir: Path, data: dict[str, object]
) -> None:
    """Whatever plans builds requests the workers accept; what the workers would refuse is
    refused by planning (here: only frames larger than the pixel budget)."""
    defaults = data["defaults"]
    assert isinstance(defaults, dict)
    too_big = int(defaults["width"]) * int(defaults["height"]) > MAX_PIXELS
    story = videokit.Story.model_validate(data).with_origin(source=None, base_dir=story_dir)
    if too_big:
        with pytest.raises(StoryError, match="pixels per frame"):
            plan_story(story)
        return
    plan = plan_story(story)
    frame = encode_png(Image.new("RGB", (16, 16), (10, 20, 30)))
    for scene in plan.scenes.values():
        try:
            if scene.edit is not None:
                edit_request(scene, frame)
            animate_request(scene, frame)
        except ValidationError as exc:  # pragma: no cover - the failure message is the point
            pytest.fail(f"planned scene {scene.id} makes a request the workers refuse: {exc}")


def test_the_preview_backend_runs_a_planned_edge_story(
    write_story: WriteStory, tmp_path: Path
) -> None:
    """The smallest legal clip, the extreme seeds and step counts: planned, sent, rendered."""
    story = write_story(
        f"""
        title: t
        reference: ref.png
        defaults: {{width: 128, height: 128, duration: 0.01, seed: {MAX_SEED}, animate: {{steps: 1}}}}
        scenes:
          - {{id: a, motion: m, edit: {{prompt: p, seed: {MAX_SEED}}}}}
        """
    )
    backend = RecordingBackend()
    result = videokit.Pipeline(story, backend=backend, out=tmp_path / "o").run()
    assert backend.calls == [("edit", "a"), ("animate", "a")]
    assert result.scenes["a"].frames == MIN_FRAMES
    assert result.frames == MIN_FRAMES


# -- the loader never crashes ----------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(["id", "motion", "edit", "prompt", "steps", "x"]), inner),
    ),
    max_leaves=12,
)
_PLACES = st.sampled_from(
    [
        ("title",),
        ("reference",),
        ("defaults",),
        ("defaults", "animate"),
        ("defaults", "steps"),
        ("scenes",),
        ("scenes", 0, "edit"),
        ("scenes", 0, "transition"),
        ("scenes", 0, "animate"),
        ("scenes", 0, "images"),
        ("timeline",),
        ("output",),
        ("endpoints",),
        ("bogus",),
    ]
)


@settings(max_examples=300, deadline=None)
@given(_PLACES, _VALUES)
def test_any_value_anywhere_is_a_located_story_error(
    place: tuple[str | int, ...], value: object
) -> None:
    import json

    data: dict[str, object] = {
        "title": "t",
        "reference": "ref.png",
        "scenes": [{"id": "a", "motion": "m"}],
    }
    node: Any = data
    for part in place[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[place[-1]] = value
    try:
        parse_story(json.dumps(data))  # JSON is YAML
    except StoryError as exc:
        for problem in exc.problems:
            assert problem.message and problem.line is not None, problem
            assert problem.hint, problem
