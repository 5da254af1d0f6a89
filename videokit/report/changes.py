"""What changed since the previous render: which scenes differ, whether this render re-made them,
and why (prompt, seed, input frame, settings, endpoint or model, forced, not in the cache).

Both renders are read from their manifests: a stage's cache key names its whole request, so equal
keys mean the same result was asked for; the parameters say what differs when they are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from videokit.pipeline.manifest import Manifest, SceneRecord, StageRecord

__all__ = ["SceneChange", "made_by_run", "scene_change"]

# Request parameters that are not prompts or seeds; a difference there reads as "settings".
_PROMPTS = ("prompt", "negative_prompt")
_NOT_SETTINGS = frozenset({"kind", "seed", *_PROMPTS})


@dataclass(frozen=True)
class SceneChange:
    """How one scene differs from the previous render. ``reasons`` are short tags (``prompt``,
    ``seed``, ``input frame``, ``settings``, ``endpoint or model``, ``forced``, ``new scene``,
    ``not in the cache``, ``unfinished before``); ``details`` say it in words."""

    scene: str
    remade: bool
    reasons: tuple[str, ...]
    details: tuple[str, ...]


def made_by_run(record: SceneRecord, run_id: str | None) -> bool:
    """Whether the render ``run_id`` ran a job for ``record`` (a continued run included)."""
    return run_id is not None and any(
        stage is not None and stage.run_id == run_id for stage in (record.edit, record.animate)
    )


def scene_change(scene_id: str, current: Manifest, previous: Manifest) -> SceneChange | None:
    """How ``scene_id`` differs from ``previous``; None when it is the same result as then."""
    record = current.scenes[scene_id]
    run_id = current.run.id if current.run is not None else None
    remade = made_by_run(record, run_id)
    before = previous.scenes.get(scene_id)
    if before is None:
        return SceneChange(scene_id, remade, ("new scene",), ())
    found = _Reasons()
    add = found.add
    if record.input_sha256 != before.input_sha256:
        add("input frame", f"the frame it starts from ({record.source}) is not the one it was")
    for stage, now, then in (
        ("edit", record.edit, before.edit),
        ("animate", record.animate, before.animate),
    ):
        _stage_differences(stage, now, then, found)
    if not found.reasons and _keys(record) != _keys(before):
        add("endpoint or model")
    if remade:
        if current.run is not None and scene_id in current.run.forced:
            add("forced")
        elif before.status != "done":
            add("unfinished before", f"the previous render left it {before.status}")
        elif not found.reasons:
            add("not in the cache", "the previous result was not in the result store")
    if not found.reasons:
        return None
    return SceneChange(scene_id, remade, tuple(found.reasons), tuple(found.details))


def _keys(record: SceneRecord) -> tuple[str | None, str | None]:
    return (
        record.edit.key if record.edit is not None else None,
        record.animate.key if record.animate is not None else None,
    )


def _stage_differences(
    stage: str,
    now: StageRecord | None,
    then: StageRecord | None,
    found: _Reasons,
) -> None:
    add = found.add
    what = "edit" if stage == "edit" else "motion"
    if now is None and then is None:
        return
    if now is None or then is None:
        add("prompt", f"edit {'added' if then is None else 'removed'}")
        return
    if now.seed != then.seed:
        add("seed", f"{stage} seed {then.seed} → {now.seed}")
    for name in _PROMPTS:
        old, new = then.params.get(name), now.params.get(name)
        if old != new:
            label = f"{what} prompt" if name == "prompt" else f"{what} negative prompt"
            add("prompt", f"{label}: {_quote(old)} → {_quote(new)}")
    changed = sorted(
        name
        for name in set(now.params) | set(then.params)
        if name not in _NOT_SETTINGS and now.params.get(name) != then.params.get(name)
    )
    for name in changed:
        add("settings", f"{stage} {name}: {then.params.get(name)} → {now.params.get(name)}")


def _quote(value: object) -> str:
    return "none" if value in (None, "") else f"“{value}”"


class _Reasons:
    """Reasons in the order found, each once, and the details that explain them."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.details: list[str] = []

    def add(self, reason: str, detail: str | None = None) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
        if detail is not None:
            self.details.append(detail)
