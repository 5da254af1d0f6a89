"""One `validate` reports every problem a story has, not one kind of problem per run.

A schema problem (a misspelled key, a value of the wrong type) no longer hides the checks of
planning (files, `from` references, the timeline): the loader plans a salvaged copy of the story,
whose placeholders never add problems of their own, and reports everything at once, in file order.
Also here: an untitled story is named after its file, and a crossfade that does not fit is
reported once, on the scene that asks for it, in seconds.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import make_image
from tests.test_story_errors import huge_png
from videokit.cli.app import app
from videokit.errors import Problem, StoryError
from videokit.story import Scene, Story, load_story, parse_story, plan_story
from videokit.story.plan import sorted_problems

# Everything at once: no title, a misspelled key, a value of the wrong type, a duplicate scene
# id, a `from` naming no scene, a reference that does not exist, an edit image that is a
# decompression bomb.
ACCEPTANCE = """\
reference: nope.png
defaults:
  fps: 16
  framez: 49
scenes:
  - id: hello
    motion: the robot waves
    frames: eighty
  - id: hello
    motion: again
  - id: beach
    from: nowhere
    motion: waves roll in
    edit:
      prompt: the same robot on a beach
      images: [bomb.png]
"""

# (line, field, scene, text in the message), in the order they are reported.
EXPECTED = [
    (1, "reference", None, "nope.png: file not found"),
    (4, "defaults.framez", None, "unknown key 'framez'; did you mean 'frames'?"),
    (8, "scenes[0].frames", "hello", "valid integer, got 'eighty'"),
    (9, "scenes[1].id", "hello", "duplicate scene id 'hello'"),
    (12, "scenes[2].from", "beach", "unknown scene 'nowhere'"),
    (16, "scenes[2].edit.images[0]", "beach", "bomb.png: the header claims more pixels"),
]


@pytest.fixture
def acceptance(tmp_path: Path) -> Path:
    huge_png(tmp_path / "bomb.png")
    story = tmp_path / "robbie-dresses-up.yaml"
    story.write_text(ACCEPTANCE)
    return story


def _check(problems: list[Problem], story: Path) -> None:
    assert len(problems) == len(EXPECTED), "\n".join(p.render() for p in problems)
    for problem, (line, field, scene, text) in zip(problems, EXPECTED, strict=True):
        assert (problem.file, problem.line, problem.field, problem.scene) == (
            story,
            line,
            field,
            scene,
        ), problem.render()
        assert text in problem.message, problem.render()
        assert problem.hint, problem.render()


def test_every_problem_is_reported_by_loading_the_story(acceptance: Path) -> None:
    with pytest.raises(StoryError) as caught:
        load_story(acceptance)
    _check(caught.value.problems, acceptance)


def test_validate_reports_every_problem_and_exits_2(acceptance: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(acceptance)])
    assert result.exit_code == 2, result.output
    assert f"invalid story ({len(EXPECTED)} problems)" in result.output
    for line, field, scene, text in EXPECTED:
        where = Problem("", file=acceptance, line=line, field=field, scene=scene).location()
        assert f"- {where}: " in result.output, (where, result.output)
        assert text in result.output

    result = CliRunner().invoke(app, ["validate", str(acceptance), "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout.splitlines()[-1])
    problems = [Problem(**{**p, "file": Path(p["file"])}) for p in document["problems"]]
    _check(problems, acceptance)


# -- placeholders add no problems ----------------------------------------------------------------

HEAD = "title: t\nreference: ref.png\nscenes:\n"

ONLY_THE_SCHEMA_PROBLEM = [
    pytest.param(
        HEAD + "  - {id: 'my scene', motion: m}\n  - {id: b, motion: m, from: my scene}\n",
        "scenes[0].id",
        id="invalid-id-still-names-the-scene",
    ),
    pytest.param(
        HEAD + "  - {id: a}\n  - {id: b, motion: m, from: a}\n",
        "scenes[0].motion",
        id="missing-motion",
    ),
    pytest.param(
        HEAD + "  - {motion: m}\n  - {id: b, motion: m}\n",
        "scenes[0].id",
        id="missing-id",
    ),
    pytest.param(
        HEAD + "  - just a string\n  - {id: b, motion: m}\ntimeline: [b]\n",
        "scenes[0]",
        id="scene-not-a-mapping",
    ),
    pytest.param(
        HEAD + "  - {id: a, motion: m, edit: 5}\n  - {id: b, motion: m, from: a.edit}\n",
        "scenes[0].edit",
        id="invalid-edit-still-has-an-edited-frame",
    ),
    pytest.param(
        HEAD + "  - {id: a, motion: m, edit: '  '}\n  - {id: b, motion: m, from: a.edit}\n",
        "scenes[0].edit.prompt",
        id="blank-shorthand-edit",
    ),
    pytest.param(
        HEAD + "  - {id: a, motion: m, from: b}\n  - {id: b, motion: m, from: 5}\n",
        "scenes[1].from",
        id="invalid-from-closes-no-loop",
    ),
    pytest.param(
        HEAD + "  - {id: a, motion: m, transition: {crossfade: -1}}\n  - {id: b, motion: m}\n",
        "scenes[0].transition.crossfade",
        id="invalid-crossfade",
    ),
    pytest.param(
        "title: t\nscenes:\n  - {id: a, motion: m}\n",
        "reference",
        id="missing-reference",
    ),
    pytest.param(
        "title: t\nreference: [ref.png, 5]\nscenes:\n  - {id: a, motion: m, edit: p}\n",
        "reference[1]",
        id="reference-item-not-a-path",
    ),
    pytest.param(
        HEAD + "  - {id: a, motion: m}\ntimeline: [a, 7]\n",
        "timeline[1]",
        id="timeline-item-not-an-id",
    ),
    pytest.param(
        HEAD + "  - {id: reference, motion: m}\n  - {id: b, motion: m, from: reference}\n",
        "scenes[0].id",
        id="reserved-id",
    ),
]


@pytest.mark.parametrize(("text", "field"), ONLY_THE_SCHEMA_PROBLEM)
def test_placeholders_add_no_problems(story_dir: Path, text: str, field: str) -> None:
    with pytest.raises(StoryError) as caught:
        parse_story(text, base_dir=story_dir)
    (problem,) = caught.value.problems
    assert problem.field == field, problem.render()
    assert "placeholder" not in problem.render()
    assert not re.search(r"scene-\d", problem.render()), "a placeholder id is shown"


def test_a_placeholder_scene_is_named_as_the_schema_problem_names_it(story_dir: Path) -> None:
    text = HEAD + "  - {id: a, motion: m}\n  - {motion: m, from: nowhere}\n"
    with pytest.raises(StoryError) as caught:
        parse_story(text, base_dir=story_dir)
    assert [(p.scene, p.field) for p in caught.value.problems] == [
        ("#2", "scenes[1].id"),
        ("#2", "scenes[1].from"),  # planned under a placeholder id, shown as the user sees it
    ]
    assert "unknown scene 'nowhere'" in caught.value.problems[1].message


def test_a_duplicate_key_does_not_stop_the_other_checks(story_dir: Path) -> None:
    text = "title: t\ntitle: u\nreference: gone.png\nscenes:\n  - {id: a, motion: m, frames: 8}\n"
    with pytest.raises(StoryError) as caught:
        parse_story(text, base_dir=story_dir)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (2, "title"),
        (3, "reference"),
        (5, "scenes[0].frames"),
    ]


def test_a_story_without_scenes_reports_only_what_the_schema_says(story_dir: Path) -> None:
    with pytest.raises(StoryError) as caught:
        parse_story("title: t\nreference: gone.png\nscenez: []\n", base_dir=story_dir)
    # Nothing to plan: the file is not checked. A missing key is located at the top (line 1).
    assert [p.field for p in caught.value.problems] == ["scenes", "scenez"]


def test_a_loop_is_reported_with_the_other_problems(story_dir: Path) -> None:
    text = HEAD + (
        "  - {id: a, motion: m, from: b, frames: 8}\n"
        "  - {id: b, motion: m, from: a}\n"
        "  - {id: c, motion: m, from: gone.png}\n"
    )
    with pytest.raises(StoryError) as caught:
        plan_story(parse_story(text, base_dir=story_dir))
    loop, frames, missing = caught.value.problems
    assert (loop.field, loop.message) == (
        "scenes[0].from",
        "scenes start from each other in a loop: a -> b -> a",
    )
    assert frames.field == "scenes[0].frames" and "4k+1" in frames.message
    assert missing.field == "scenes[2].from"
    assert missing.message.endswith("gone.png: file not found")


# -- file order ----------------------------------------------------------------------------------


def test_problems_come_out_in_file_order(story_dir: Path) -> None:
    text = textwrap.dedent(
        """\
        title: t
        reference: gone.png
        scenes:
          - {id: a, motion: m, from: nowhere}
          - {id: b, motion: m, frames: eighty}
          - {id: c, motion: m, from: also-gone.png}
        timeline: [a, b, c, zz]
        defaults: {widht: 832}
        """
    )
    with pytest.raises(StoryError) as caught:
        parse_story(text, base_dir=story_dir)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (2, "reference"),
        (4, "scenes[0].from"),
        (5, "scenes[1].frames"),
        (6, "scenes[2].from"),
        (7, "timeline[3]"),
        (8, "defaults.widht"),
    ]


def test_sorted_problems_puts_those_without_a_line_last_and_drops_repeats() -> None:
    late, early = Problem("late", line=9), Problem("early", line=2)
    nowhere, other = Problem("nowhere"), Problem("other", line=2)
    assert sorted_problems([nowhere, late, early, other, late]) == [early, other, late, nowhere]


# -- the title -----------------------------------------------------------------------------------

UNTITLED = "reference: ref.png\nscenes:\n  - {id: hello, motion: m}\n"


@pytest.mark.parametrize(
    ("name", "title"),
    [
        ("robbie-dresses-up.yaml", "robbie dresses up"),
        ("my_first__story.yml", "my first story"),
        ("plain.yaml", "plain"),
    ],
)
def test_an_untitled_story_file_is_named_after_the_file(
    story_dir: Path, name: str, title: str
) -> None:
    path = story_dir / name
    path.write_text(UNTITLED)
    story = load_story(path)
    assert story.title == title
    assert story.slug() == path.stem
    assert "title" not in story.model_dump(exclude_unset=True), "the title stays derived"
    assert plan_story(story).story.title == title


def test_an_untitled_story_in_python_is_named_after_its_first_scene(story_dir: Path) -> None:
    story = Story(reference="ref.png", scenes=[Scene(id="hello", motion="m")])
    assert story.title == "hello" and story.slug() == "hello"
    assert parse_story(UNTITLED, base_dir=story_dir).title == "hello"


def test_a_given_title_is_kept_and_an_empty_one_is_reported(story_dir: Path) -> None:
    path = story_dir / "story.yaml"
    path.write_text("title: Robbie\n" + UNTITLED)
    assert load_story(path).title == "Robbie"
    path.write_text("title: ''\n" + UNTITLED)
    with pytest.raises(StoryError) as caught:
        load_story(path)
    (problem,) = caught.value.problems
    assert (problem.line, problem.field) == (1, "title")
    assert problem.hint is not None and "leave it out" in problem.hint


# -- crossfades that do not fit ------------------------------------------------------------------


def _problems(story_dir: Path, scenes: str, timeline: str = "") -> list[Problem]:
    with pytest.raises(StoryError) as caught:
        plan_story(parse_story(HEAD + textwrap.dedent(scenes) + timeline, base_dir=story_dir))
    return caught.value.problems


def test_a_crossfade_is_blamed_on_its_scene_in_seconds(story_dir: Path) -> None:
    # a is long enough; the 4 s crossfade overflows the next clip, beach.
    problems = _problems(
        story_dir,
        """\
          - {id: a, motion: m, duration: 10, transition: {crossfade: 4}}
          - {id: beach, motion: m, duration: 2.5, transition: {crossfade: 0.5}}
          - {id: c, motion: m}
        """,
    )
    assert [(p.scene, p.field, p.line) for p in problems] == [
        ("a", "scenes[0].transition", 4),
        ("beach", "scenes[1].transition", 5),
    ]
    into_beach, out_of_beach = problems
    assert into_beach.message == (
        "the crossfade of 4 s into 'beach' does not fit: 'beach' is 2.562 s (41 frames at 16 fps) "
        "and also fades out for 0.5 s"
    )
    assert into_beach.hint == "use a crossfade of at most 2.0 s here, or lengthen the clips"
    # beach's own crossfade has no room left beside a's: said once, on beach, in seconds.
    assert out_of_beach.message == (
        "the crossfade of 0.5 s into 'c' does not fit: 'beach' is 2.562 s (41 frames at 16 fps) "
        "and also fades in for 4 s"
    )
    assert out_of_beach.hint is not None and "the other crossfade" in out_of_beach.hint


def test_a_crossfade_too_long_for_both_clips_is_one_problem(story_dir: Path) -> None:
    (problem,) = _problems(
        story_dir,
        """\
          - {id: a, motion: m, frames: 9, transition: {crossfade: 2}}
          - {id: b, motion: m, frames: 17}
        """,
    )
    assert (problem.scene, problem.field) == ("a", "scenes[0].transition")
    assert problem.message == (
        "the crossfade of 2 s into 'b' does not fit: 'a' is 0.562 s (9 frames at 16 fps); "
        "'b' is 1.062 s (17 frames at 16 fps)"
    )
    assert problem.hint == "use a crossfade of at most 0.5 s here, or lengthen the clips"


def test_a_crossfade_follows_the_timeline_not_the_file(story_dir: Path) -> None:
    (problem,) = _problems(
        story_dir,
        """\
          - {id: a, motion: m, frames: 9}
          - {id: b, motion: m, from: reference, transition: {crossfade: 1}}
        """,
        timeline="timeline: [b, a]\n",
    )
    assert (problem.scene, problem.field, problem.line) == ("b", "scenes[1].transition", 5)
    assert problem.message.startswith("the crossfade of 1 s into 'a' does not fit: 'a' is 0.562 s")
    assert problem.hint == "use a crossfade of at most 0.5 s here, or lengthen the clips"


def test_a_crossfade_that_fits_exactly_is_fine_and_one_frame_more_is_not(
    story_dir: Path,
) -> None:
    # 0.5 s = 8 frames into a 9-frame clip leaves one frame alone: it fits.
    fits = HEAD + "  - {id: a, motion: m, transition: {crossfade: 0.5}}\n  - {id: b, frames: 9, "
    plan = plan_story(parse_story(fits + "motion: m}\n", base_dir=story_dir))
    assert [e.crossfade for e in plan.timeline] == [0, 8]
    (problem,) = _problems(
        story_dir,
        """\
          - {id: a, motion: m, transition: {crossfade: 0.5625}}
          - {id: b, motion: m, frames: 9}
        """,
    )
    assert problem.scene == "a" and "0.5625 s into 'b'" in problem.message


def test_the_last_scene_with_a_crossfade_is_reported_as_before(story_dir: Path) -> None:
    (problem,) = _problems(story_dir, "  - {id: a, motion: m, transition: {crossfade: 0.5}}\n")
    assert problem.message.startswith("the last scene on the timeline has a crossfade, but no clip")


@pytest.fixture
def story_dir(tmp_path: Path) -> Path:
    # The frames' aspect ratio, so that no crop warning is in the way.
    make_image(tmp_path / "ref.png", (416, 240))
    return tmp_path
