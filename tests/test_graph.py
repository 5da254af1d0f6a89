"""Property tests of the scene graph and of planning over random stories (hypothesis)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from videokit.errors import StoryError
from videokit.story import CycleError, SceneGraph, Story, plan_story


@st.composite
def forests(draw: st.DrawFn) -> tuple[list[str], dict[str, str | None]]:
    """Random acyclic graphs: each scene's parent is an earlier scene or none, ids shuffled."""
    n = draw(st.integers(min_value=1, max_value=25))
    ids = [f"s{i}" for i in range(n)]
    parent: dict[str, str | None] = {}
    for i, scene in enumerate(ids):
        parent[scene] = draw(st.one_of(st.none(), st.sampled_from(ids[:i]))) if i else None
    order = draw(st.permutations(ids))
    return list(order), parent


@given(forests())
def test_topological_order_puts_parents_first(
    graph: tuple[list[str], dict[str, str | None]],
) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    order = g.topological()
    assert sorted(order) == sorted(ids)
    position = {scene: i for i, scene in enumerate(order)}
    for scene, dep in parent.items():
        if dep is not None:
            assert position[dep] < position[scene]


@given(forests(), st.data())
def test_downstream_is_exactly_the_descendants(
    graph: tuple[list[str], dict[str, str | None]], data: st.DataObject
) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    changed = data.draw(st.sampled_from(ids))
    expected = {s for s in ids if s == changed or changed in g.ancestors(s)}
    assert g.downstream([changed]) == expected


@given(forests())
def test_depth_is_the_longest_chain(graph: tuple[list[str], dict[str, str | None]]) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    assert g.depth() == max(len(g.ancestors(s)) + 1 for s in ids)


@given(forests(), st.data())
def test_any_back_edge_makes_a_cycle_that_is_reported(
    graph: tuple[list[str], dict[str, str | None]], data: st.DataObject
) -> None:
    ids, parent = graph
    g = SceneGraph.build(ids, parent)
    # Point a root's parent at one of its own descendants (or itself): always a cycle.
    root = data.draw(st.sampled_from(g.roots()))
    target = data.draw(st.sampled_from(sorted(g.downstream([root]))))
    cyclic = dict(parent)
    cyclic[root] = target
    with pytest.raises(CycleError) as caught:
        SceneGraph.build(ids, cyclic)
    cycle = caught.value.cycle
    assert root in cycle
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert cyclic[a] == b


def _story(ref: Path, scenes: list[dict[str, object]]) -> Story:
    return Story.model_validate({"title": "p", "reference": str(ref), "scenes": scenes})


@settings(
    max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(st.data())
def test_planning_random_stories(story_dir: Path, data: st.DataObject) -> None:
    """Random `from` choices: valid ones plan with the graph mirroring `from`; loops are rejected."""
    n = data.draw(st.integers(min_value=1, max_value=10))
    scenes: list[dict[str, object]] = []
    for i in range(n):
        scene: dict[str, object] = {"id": f"c{i}", "motion": "m", "frames": 9}
        choice = data.draw(st.sampled_from(["default", "reference", "scene", "edit"]))
        if choice == "reference":
            scene["from"] = "reference"
        elif choice in ("scene", "edit"):
            scene["from"] = f"c{data.draw(st.integers(0, n - 1))}"
        if data.draw(st.booleans()):
            scene["edit"] = "a change"
        scenes.append(scene)
    story = _story(story_dir / "ref.png", scenes)
    parents: dict[str, str | None] = {}
    for i, scene in enumerate(scenes):
        ref = scene.get("from")
        parents[str(scene["id"])] = (
            None if ref == "reference" or (ref is None and i == 0) else str(ref or f"c{i - 1}")
        )
    has_self = any(parents[s] == s for s in parents)
    has_cycle = has_self
    if not has_self:
        try:
            SceneGraph.build(list(parents), parents)
        except CycleError:
            has_cycle = True
    if has_cycle:
        with pytest.raises(StoryError):
            plan_story(story)
        return
    plan = plan_story(story)
    assert dict(plan.graph.parent) == parents
    assert plan.final_frames == sum(e.frames - e.drop_head - e.crossfade for e in plan.timeline)
    # Only a scene without an edit that follows its own parent on the timeline drops its seam.
    for prev, entry in zip(plan.timeline, plan.timeline[1:], strict=False):
        scene = plan.scenes[entry.scene]
        continuous = scene.edit is None and parents[entry.scene] == prev.scene
        assert entry.drop_head == (1 if continuous else 0)
