"""Pydantic's validation errors as :class:`~videokit.errors.Problem` objects a person can act on.

Each problem names the file, line, field path and scene, says what is wrong in the story's terms
(an unknown key gets a did-you-mean, or the place where that key belongs) and how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from videokit.errors import Problem
from videokit.story.field_hints import FIELD_HINTS
from videokit.story.field_paths import (
    Loc,
    deepest_errors,
    field_of,
    format_field,
    model_in,
    owner_of,
)
from videokit.story.model import STORY_ERROR, Story

__all__ = ["problems_from_validation"]


def problems_from_validation(
    exc: ValidationError,
    data: Any,
    lines: Mapping[Loc, int],
    source: Path | None,
) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per field."""
    problems: dict[Loc, Problem] = {}
    for loc, error in deepest_errors(exc):
        if loc in problems:  # the branches of a union that failed alike: one message is enough
            continue
        problems[loc] = Problem(
            _message(error, loc),
            file=source,
            line=_line_of(lines, loc),
            field=format_field(loc) or None,
            scene=_scene_of(loc, data),
            hint=_hint(error, loc, data),
        )
    return list(problems.values())


def _line_of(lines: Mapping[Loc, int], loc: Loc) -> int | None:
    probe = loc
    while True:
        if probe in lines:
            return lines[probe]
        if not probe:
            return None
        probe = probe[:-1]


def _scene_of(loc: Loc, data: Any) -> str | None:
    if len(loc) >= 2 and loc[0] == "scenes" and isinstance(loc[1], int):
        scenes = data.get("scenes") if isinstance(data, dict) else None
        if isinstance(scenes, list) and loc[1] < len(scenes):
            scene = scenes[loc[1]]
            if isinstance(scene, dict) and isinstance(scene.get("id"), str):
                return str(scene["id"])
            return f"#{loc[1] + 1}"
    return None


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind = error["type"]
    field = loc[-1] if loc else "story"
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        moved = _elsewhere(loc)
        if moved:
            where = format_field(loc[:-1]) or "the top level"
            return f"'{field}' is not a setting of {where}; did you mean {_either(moved)}?"
        known = _known_fields(loc[:-1])
        close = difflib.get_close_matches(str(field), known, n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key '{field}'{guess}"
    if kind == "missing":
        return f"missing required key '{field}'"
    value = error.get("input")
    if kind == "string_too_long":
        length = f"{len(value)} characters" if isinstance(value, str) else "too long"
        return f"too long: {length}, at most {ctx.get('max_length')} allowed"
    if kind == "too_long":
        return f"too many items: at most {ctx.get('max_length')}, got {ctx.get('actual_length')}"
    if kind == "model_type":
        # pydantic says "a valid dictionary or instance of Edit"; a story has mappings.
        return f"expected a mapping (key: value pairs), got {value!r}"
    if kind == "too_short":
        count = len(value) if isinstance(value, list | str) else 0
        return f"too few items: at least {ctx.get('min_length')} item(s) needed, got {count}"
    if kind == STORY_ERROR:
        return str(ctx.get("message", error["msg"]))
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    message = message[:1].lower() + message[1:]
    if kind == "value_error":
        return message
    return f"{message}, got {value!r}"


def _hint(error: ErrorDetails, loc: Loc, data: Any) -> str | None:
    kind = error["type"]
    if kind == "extra_forbidden":
        moved = _elsewhere(loc)
        if moved:
            return f"move it there: {_example(moved[0], loc, data)}"
        return "see `videokit schema` for every key a story accepts"
    own = (error.get("ctx") or {}).get("hint") if kind == STORY_ERROR else None
    if own:
        return str(own)
    owner = owner_of(loc)
    if owner is None:
        return None
    model, key = owner
    return FIELD_HINTS.get((model.__name__, key))


def _value_at(data: Any, loc: Loc) -> Any:
    node = data
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _known_fields(loc: Loc) -> list[str]:
    """Field names (aliases included) accepted at ``loc``, for did-you-mean suggestions."""
    model: type[BaseModel] | None = Story
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = field_of(model, part)
        model = model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


# -- keys in the wrong place ---------------------------------------------------------------------

_ITEM = "[]"  # a list item in a schema path: scenes[].motion


@functools.cache
def _schema_paths() -> dict[str, tuple[tuple[str, ...], ...]]:
    """Every key a story accepts, with the paths where it is accepted: steps -> defaults.edit..."""
    found: dict[str, list[tuple[str, ...]]] = {}

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            key = field.alias or name
            path = (*prefix, key)
            found.setdefault(key, []).append(path)
            inner = model_in(field.annotation)
            if inner is not None:
                is_list = typing.get_origin(field.annotation) is list
                walk(inner, (*path, _ITEM) if is_list else path)

    walk(Story, ())
    return {key: tuple(paths) for key, paths in found.items()}


def _pattern(loc: Loc) -> tuple[str, ...]:
    return tuple(_ITEM if isinstance(part, int) else part for part in loc)


def _elsewhere(loc: Loc) -> list[Loc]:
    """Where an unknown key at ``loc`` is a known one: inside the same block first, else nearest.

    ``defaults: {steps: 8}`` -> ``defaults.animate.steps``, ``defaults.edit.steps``; a scene's
    ``width`` -> ``defaults.width``.
    """
    if not loc or not isinstance(loc[-1], str):
        return []
    parent = loc[:-1]
    paths = _schema_paths().get(loc[-1], ())
    prefix = _pattern(parent)
    inside = [p for p in paths if p[: len(prefix)] == prefix and len(p) > len(prefix) + 1]
    if inside:
        chosen = inside
    elif paths:
        shortest = min(len(p) for p in paths)
        chosen = [p for p in paths if len(p) == shortest]
    else:
        return []
    return [_located(path, parent) for path in chosen]


def _located(path: tuple[str, ...], parent: Loc) -> Loc:
    """A schema path with the list indices of ``parent`` filled in where they line up."""
    result: list[str | int] = []
    for i, part in enumerate(path):
        if part == _ITEM and i < len(parent) and isinstance(parent[i], int):
            result.append(parent[i])
        else:
            result.append(part)
    return tuple(result)


def _either(paths: list[Loc]) -> str:
    names = [format_field(p).replace(f".{_ITEM}", _ITEM) for p in paths]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _example(target: Loc, loc: Loc, data: Any) -> str:
    """``defaults: {animate: {steps: 8}}``: the user's value written where it belongs."""
    value = _value_at(data, loc)
    text = json.dumps(value) if isinstance(value, str | int | float | bool) else "..."
    # Written from the innermost list item of the target down: scenes[0].edit.guidance becomes
    # `edit: {guidance: 3}` in scenes[0].
    start = max(
        (i + 1 for i, part in enumerate(target) if isinstance(part, int) or part == _ITEM),
        default=0,
    )
    keys = [str(part) for part in target[start:]]
    for key in reversed(keys[1:]):
        text = f"{{{key}: {text}}}"
    snippet = f"{keys[0]}: {text}"
    if start == 0:
        return snippet
    if target[start - 1] == _ITEM:
        return f"{snippet} in each of {format_field(target[: start - 1])}"
    return f"{snippet} in {format_field(target[:start])}"
