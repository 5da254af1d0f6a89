"""Property tests of the scene graph and of planning over random stories (hypothesis)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import make_image
from videokit.errors import StoryError
from videokit.story import CycleError, SceneGraph, Story, plan_story

Parents = dict[str, str | None]


@st.composite
def forests(draw: st.DrawFn) -> tuple[list[str], Parents]:
    """Random acyclic graphs: each scene's parent is an earlier scene or none, ids shuffled."""
    n = draw(st.integers(min_value=1, max_value=25))
    ids = [f"s{i}" for i in range(n)]
    parent: Parents = {}
    for i, scene in enumerate(ids):
        parent[scene] = draw(st.one_of(st.none(), st.sampled_from(ids[:i]))) if i else None
    order = draw(st.permutations(ids))
    return list(order), parent


@st.composite
def any_graphs(draw: st.DrawFn) -> tuple[list[str], Parents]:
    """Any parent for any scene: itself, a later one, nothing. Cycles are common."""
    n = draw(st.integers(min_value=1, max_value=12))
    ids = [f"s{i}" for i in range(n)]
    parent = {scene: draw(st.one_of(st.none(), st.sampled_from(ids))) for scene in ids}
    return ids, parent


def _chain(parent: Parents, scene: str) -> list[str]:
    """The from-references followed by hand (assumes no cycle)."""
    chain: list[str] = []
    node = parent[scene]
    while node is not None:
        chain.append(node)
        node = parent[node]
    return chain


def _on_a_cycle(parent: Parents) -> set[str]:
    """Scenes from which following parents comes back to themselves, by brute force."""
    looped: set[str] = set()
    for start in parent:
        node = parent[start]
        for _ in range(len(parent)):
            if node is None:
                break
            if node == start:
                looped.add(start)
                break
            node = parent[node]
    return looped


@given(forests())
def test_topological_order_puts_parents_first(graph: tuple[list[str], Parents]) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    order = g.topological()
    assert sorted(order) == sorted(ids)
    position = {scene: i for i, scene in enumerate(order)}
    for scene, dep in parent.items():
        if dep is not None:
            assert position[dep] < position[scene]


@given(forests())
def test_ancestors_are_the_chain_of_parents(graph: tuple[list[str], Parents]) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    for scene in ids:
        ancestors = g.ancestors(scene)
        assert ancestors == _chain(parent, scene)
        assert scene not in ancestors and len(set(ancestors)) == len(ancestors)
        assert not ancestors or g.parent[ancestors[-1]] is None  # it ends at a root


@given(forests(), st.data())
def test_downstream_is_exactly_the_descendants(
    graph: tuple[list[str], Parents], data: st.DataObject
) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    changed = data.draw(st.sampled_from(ids))
    expected = {s for s in ids if s == changed or changed in _chain(parent, s)}
    assert g.downstream([changed]) == expected


@given(forests())
def test_longest_chain_is_a_chain_and_longest(graph: tuple[list[str], Parents]) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    chain = g.longest_chain()
    assert parent[chain[0]] is None
    for earlier, later in itertools.pairwise(chain):
        assert parent[later] == earlier
    assert len(chain) == max(len(_chain(parent, s)) + 1 for s in ids)


@given(any_graphs())
def test_a_cycle_is_reported_iff_one_exists(graph: tuple[list[str], Parents]) -> None:
    ids, parent = graph
    looped = _on_a_cycle(parent)
    if not looped:
        g = SceneGraph.build(ids, parent)
        assert sorted(g.topological()) == sorted(ids)
        return
    with pytest.raises(CycleError) as caught:
        SceneGraph.build(ids, parent)
    cycle = caught.value.cycle
    assert len(set(cycle)) == len(cycle), "a cycle lists each scene once"
    assert set(cycle) <= looped
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert parent[a] == b
    assert str(caught.value) == " -> ".join([*cycle, cycle[0]])


def _story(ref: Path, scenes: list[dict[str, object]], timeline: list[str] | None) -> Story:
    data: dict[str, object] = {"title": "p", "reference": str(ref), "scenes": scenes}
    if timeline is not None:
        data["timeline"] = timeline
    story = Story.model_validate(data)
    return story.with_origin(source=None, base_dir=ref.parent)


def _evaluate(formula: str) -> tuple[int, int]:
    """``49 + (49 - 1 seam) - 8 crossfade = 97 frames = ...`` -> (value of the sum, 97)."""
    left, stated = formula.split(" = ")[:2]
    arithmetic = re.sub(r"\s*(seam|crossfade)", "", left)
    assert re.fullmatch(r"[\d+\-() ]+", arithmetic), arithmetic
    return int(eval(arithmetic)), int(stated.split()[0])  # only digits, + - and parentheses


IMAGES = ("shots/p0.png", "shots/p1.png")
CROSSFADE_S = 0.25  # 4 frames at 16 fps: fits in any clip of 9 frames or more
#: The frames' aspect ratio (832x480), so that no starting image is cropped (and warned about).
IMAGE_SIZE = (416, 240)


@pytest.fixture
def story_dir(tmp_path: Path) -> Path:
    make_image(tmp_path / "ref.png", IMAGE_SIZE)
    return tmp_path


@settings(
    max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.data())
def test_planning_random_stories(story_dir: Path, data: st.DataObject) -> None:
    """Random `from` (default, reference, a scene, a scene's edit, an image), edits, frames,
    crossfades and timelines: the plan mirrors the story, or says exactly what is wrong."""
    for name in IMAGES:
        if not (story_dir / name).exists():
            make_image(story_dir / name, IMAGE_SIZE)
    n = data.draw(st.integers(min_value=1, max_value=9))
    ids = [f"c{i}" for i in range(n)]
    kinds = ["default", "reference", "scene", "edit", "image"]
    scenes: list[dict[str, object]] = []
    for i in range(n):
        scene: dict[str, object] = {"id": ids[i], "motion": "m"}
        scene["frames"] = data.draw(st.sampled_from([9, 13, 17, 33]))
        choice = data.draw(st.sampled_from(kinds))
        if choice == "reference":
            scene["from"] = "reference"
        elif choice == "scene":
            scene["from"] = data.draw(st.sampled_from(ids))
        elif choice == "edit":
            scene["from"] = data.draw(st.sampled_from(ids)) + ".edit"
        elif choice == "image":
            scene["from"] = data.draw(st.sampled_from(IMAGES))
        if data.draw(st.booleans()):
            scene["edit"] = "a change"
        scenes.append(scene)
    timeline: list[str] | None = None
    if data.draw(st.booleans()):
        timeline = data.draw(st.lists(st.sampled_from(ids), min_size=1, unique=True))
    order = timeline if timeline is not None else ids
    for scene in scenes:
        # A crossfade needs a next clip; off the timeline it is allowed, and warned about.
        if scene["id"] != order[-1] and data.draw(st.booleans()):
            scene["transition"] = {"crossfade": CROSSFADE_S}
    story = _story(story_dir / "ref.png", scenes, timeline)
    by_id = {str(s["id"]): s for s in scenes}

    parents: Parents = {}
    self_refs: list[str] = []
    bad_edits: list[str] = []
    for i, scene in enumerate(scenes):
        ref = scene.get("from")
        sid = str(scene["id"])
        if ref is None:
            parents[sid] = ids[i - 1] if i else None
        elif ref == "reference" or ref in IMAGES:
            parents[sid] = None
        else:
            target = str(ref).removesuffix(".edit")
            parents[sid] = target
            if target == sid:
                self_refs.append(sid)
            elif str(ref).endswith(".edit") and "edit" not in by_id[target]:
                bad_edits.append(sid)

    if self_refs or bad_edits:
        event("refused: self reference or edit of a scene without one")
        with pytest.raises(StoryError) as caught:
            plan_story(story)
        problems = {(p.scene, p.message) for p in caught.value.problems}
        for sid in self_refs:
            assert (sid, "a scene cannot start from itself") in problems
        for sid in bad_edits:
            assert any(scene == sid and "has no edit" in m for scene, m in problems)
        return
    looped = _on_a_cycle(parents)
    if looped:
        event("refused: loop")
        with pytest.raises(StoryError) as caught:
            plan_story(story)
        (problem,) = caught.value.problems
        assert "loop" in problem.message
        named = re.findall(r"c\d+", problem.message)
        assert named[0] == named[-1] and set(named) <= looped
        for a, b in itertools.pairwise(named):
            assert parents[a] == b
        return

    event("planned")
    plan = plan_story(story)
    assert dict(plan.graph.parent) == parents
    position = {scene: i for i, scene in enumerate(plan.graph.topological())}
    for sid in ids:
        assert plan.graph.ancestors(sid) == _chain(parents, sid)
        if parents[sid] is not None:
            assert position[str(parents[sid])] < position[sid]
        source = plan.scenes[sid].source
        ref = by_id[sid].get("from")
        if ref in IMAGES:
            assert source.kind == "file" and source.path == story_dir / str(ref)
        elif isinstance(ref, str) and ref.endswith(".edit"):
            assert source.kind == "scene_edit" and source.scene == parents[sid]
        elif parents[sid] is None:
            assert source.kind == "reference"
        else:
            assert source.kind == "scene" and source.scene == parents[sid]

    assert [e.scene for e in plan.timeline] == order
    assert set(plan.branches) == set(ids) - set(order)
    expected_frames = 0
    for pos, sid in enumerate(order):
        scene = by_id[sid]
        frames = int(str(scene["frames"]))
        prev = by_id[order[pos - 1]] if pos else None
        entry = plan.timeline[pos]
        crossfade = round(CROSSFADE_S * 16) if prev is not None and "transition" in prev else 0
        # A continuous shot: no edit, starts from the last frame of the clip just before it.
        continuous = (
            prev is not None
            and not crossfade
            and "edit" not in scene
            and plan.scenes[sid].source.kind == "scene"
            and parents[sid] == prev["id"]
        )
        assert (entry.crossfade, entry.drop_head) == (crossfade, int(continuous))
        expected_frames += frames - crossfade - int(continuous)
    assert plan.final_frames == expected_frames
    assert _evaluate(plan.frame_formula()) == (expected_frames, expected_frames)
    off_timeline_fades = {s for s in plan.branches if "transition" in by_id[s]}
    warned = {s for s in off_timeline_fades if any(f"scene '{s}'" in w for w in plan.warnings)}
    assert warned == off_timeline_fades
    assert len(plan.warnings) == len(off_timeline_fades)
