"""Salvaging an invalid story, so that one run reports every problem it has.

When the data has schema problems, a repaired copy (invalid values dropped for their defaults,
placeholders for required ones) is planned too, so that a missing file or an unknown ``from`` is
reported along with a misspelled key, not after it is fixed. The copy only ever feeds that report.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from videokit.story.field_paths import Loc, deepest_errors, field_of, owner_of
from videokit.story.model import Scene, Story

__all__ = ["salvage_story"]


#: Rounds of validate-and-repair: a repair can uncover an error that an earlier one hid (a field
#: validator only runs once its neighbours are valid), but not many.
_SALVAGE_ROUNDS = 8
_PLACEHOLDER_TEXT = "(placeholder for an invalid value)"


def salvage_story(data: dict[str, Any]) -> tuple[Story | None, dict[str, str]]:
    """A valid story as close to ``data`` as repairs allow, or ``None`` when there is none; and
    the placeholder ids it gave scenes, with the label a problem shows for each (``#3``).

    Each error is repaired where it is: an unknown key is dropped, an invalid value of a field
    with a default is dropped for the default, a required one gets a placeholder. List items are
    never removed, so that every index still points at the user's line. The result is only good
    for locating more problems; its placeholders are at the fields the schema problems name.
    """
    salvaged = copy.deepcopy(data)
    raw_ids = _raw_ids(data)
    replaced: set[int] = set()
    for _ in range(_SALVAGE_ROUNDS):
        try:
            story = Story.model_validate(salvaged)
        except ValidationError as exc:
            changed = False
            for loc, error in deepest_errors(exc):
                changed |= _repair(salvaged, loc, error, raw_ids, replaced)
            if not changed:
                return None, {}
            continue
        for index in replaced:
            # The user's id, even if invalid, is what other scenes' `from` and the timeline name.
            raw = raw_ids.get(index)
            if isinstance(raw, str) and index < len(story.scenes):
                story.scenes[index].id = raw
        raw_names = {raw for raw in raw_ids.values() if isinstance(raw, str)}
        labels = {s.id: f"#{i + 1}" for i, s in enumerate(story.scenes) if s.id not in raw_names}
        return story, labels
    return None, {}


def _raw_ids(data: dict[str, Any]) -> dict[int, Any]:
    scenes = data.get("scenes")
    if not isinstance(scenes, list):
        return {}
    return {i: s.get("id") for i, s in enumerate(scenes) if isinstance(s, dict) and "id" in s}


def _repair(
    data: dict[str, Any], loc: Loc, error: ErrorDetails, raw_ids: dict[int, Any], replaced: set[int]
) -> bool:
    """Make ``data`` valid at ``loc``; whether anything changed."""
    if not loc:
        return False
    parent = _container(data, loc[:-1])
    key = loc[-1]
    if error["type"] == "extra_forbidden":
        if isinstance(parent, dict) and key in parent:
            del parent[key]
            return True
        return False
    if isinstance(key, int):
        return _repair_item(parent, loc, raw_ids)
    owner = owner_of(loc)
    if owner is None:
        return False
    model, name = owner
    field = field_of(model, name)
    assert field is not None
    if model is Scene and name == "from":
        # Its default (the previous scene) could close a loop the user never wrote.
        return _put(parent, name, "reference")
    if model is Scene and name == "edit":
        # Without an edit, a `from: <this scene>.edit` elsewhere would be reported as well.
        return _put(parent, name, {"prompt": _PLACEHOLDER_TEXT})
    if not field.is_required():
        if isinstance(parent, dict) and name in parent:
            del parent[name]
            return True
        return False
    scenes = data.get("scenes")
    if not isinstance(scenes, list):
        scenes = []
    placeholder = _placeholder(model, name, loc, scenes, raw_ids)
    if placeholder is not None:
        if model is Scene and name == "id" and isinstance(loc[-2], int):
            replaced.add(loc[-2])
        return _put(parent, name, placeholder)
    # A required value without a placeholder ({crossfade: -1}): the nearest optional block
    # around it goes back to its default.
    for end in range(len(loc) - 1, 0, -1):
        outer = owner_of(loc[:end])
        outer_field = field_of(*outer) if outer is not None else None
        container = _container(data, loc[: end - 1])
        if (
            outer_field is not None
            and not outer_field.is_required()
            and isinstance(loc[end - 1], str)
            and isinstance(container, dict)
            and loc[end - 1] in container
        ):
            del container[loc[end - 1]]
            return True
    return False


def _repair_item(items: Any, loc: Loc, raw_ids: dict[int, Any]) -> bool:
    index = loc[-1]
    if not isinstance(items, list) or not isinstance(index, int) or index >= len(items):
        return False
    if loc[:-1] == ("scenes",):
        if isinstance(items[index], dict):
            return False  # its own fields carry the errors
        items[index] = {"id": _unique_id(items, raw_ids, index), "motion": _PLACEHOLDER_TEXT}
        return True
    if isinstance(items[index], str):
        return False
    items[index] = str(items[index])  # a timeline entry or an image path
    return True


def _placeholder(
    model: type[BaseModel], name: str, loc: Loc, scenes: list[Any], raw_ids: dict[int, Any]
) -> Any:
    if model is Scene and name == "id" and isinstance(loc[-2], int):
        return _unique_id(scenes, raw_ids, loc[-2])
    if (model.__name__, name) in (("Scene", "motion"), ("Edit", "prompt")):
        return _PLACEHOLDER_TEXT
    if model is Story and name == "reference":
        # Any path: the file check it fails is at `reference`, which the schema problem covers.
        return "reference.png"
    return None


def _unique_id(scenes: list[Any], raw_ids: dict[int, Any], index: int) -> str:
    """``scene-<n>``, where n counts from 1, unless the user's ids or other placeholders have it."""
    now = [scene.get("id") for scene in scenes if isinstance(scene, dict)]
    taken = {value for value in [*raw_ids.values(), *now] if isinstance(value, str)}
    candidate, n = f"scene-{index + 1}", 1
    while candidate in taken:
        n += 1
        candidate = f"scene-{index + 1}-{n}"
    return candidate


def _container(data: Any, loc: Loc) -> Any:
    """The value at ``loc``; a shorthand string there (``edit: "..."``) is spelled out first."""
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict):
            inside = part in node
        else:
            inside = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not inside:
            return None
        child = node[part]
        if isinstance(child, str) and part == "edit" and i + 1 == len(loc):
            child = node[part] = {"prompt": child}
        node = child
    return node


def _put(container: Any, key: str, value: Any) -> bool:
    if not isinstance(container, dict) or (key in container and container[key] == value):
        return False
    container[key] = value
    return True
