"""Loading stories from YAML with errors that point at the line, the field and the scene.

PyYAML's safe loader drops positions, so we compose the node tree ourselves and record the line of
every value by its path, e.g. ``("scenes", 2, "frames") -> 14``. Pydantic errors are then mapped to
:class:`~videokit.errors.Problem` objects that name the file, line, field path and scene id, with a
hint on how to fix it.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from videokit.errors import Problem, StoryError
from videokit.story.model import Story

__all__ = ["format_field", "load_story", "parse_story", "problems_from_validation"]

Loc = tuple[str | int, ...]

MAX_STORY_BYTES = 2_000_000

_HINTS: dict[str, str] = {
    "frames": "clips have 4k+1 frames (e.g. 33, 49, 65, 81); or give 'duration' in seconds",
    "duration": "seconds per clip, e.g. 5; it is converted to the nearest 4k+1 frame count",
    "width": "a multiple of 16 between 128 and 1920, e.g. 832",
    "height": "a multiple of 16 between 128 and 1920, e.g. 480",
    "fps": "frames per second, 1 to 60 (Wan is trained at 16)",
    "transition": "use 'cut' or a mapping like {crossfade: 0.5}",
    "from": "'reference', a scene id, '<scene-id>.edit' or an image path",
    "id": "letters, digits, '-' and '_', starting with a letter or digit",
    "seed": "a whole number from 0 to 4294967295",
    "reference": "an image path (relative to the story file) or a list of them",
    "motion": "describe what moves, e.g. 'she turns and smiles, camera slowly pushes in'",
    "prompt": "describe the change, e.g. 'same person, now wearing a tuxedo, in a casino'",
    "scenes": "a list of scenes, each with at least 'id' and 'motion'",
    "preset": "one of ultrafast, superfast, veryfast, faster, fast, medium, slow, slower",
}


def format_field(loc: Loc) -> str:
    """``("scenes", 2, "edit", "prompt")`` -> ``scenes[2].edit.prompt``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def load_story(path: str | Path) -> Story:
    """Read, parse and validate the schema of a story file. Raises :class:`StoryError`."""
    path = Path(path)
    if not path.exists():
        raise StoryError([Problem("story file not found", file=path, hint="check the path")])
    if path.is_dir():
        raise StoryError([Problem("this is a directory, not a story file", file=path)])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoryError(
            [Problem(f"cannot read the story file: {exc.strerror}", file=path)]
        ) from exc
    if len(raw) > MAX_STORY_BYTES:
        raise StoryError([Problem(f"story file is over {MAX_STORY_BYTES} bytes", file=path)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StoryError(
            [Problem("story file is not UTF-8 text", file=path, hint="save it as UTF-8 YAML")]
        ) from exc
    return parse_story(text, source=path)


def parse_story(text: str, *, source: Path | None = None, base_dir: Path | None = None) -> Story:
    """Parse YAML text into a :class:`Story`; relative paths resolve against ``base_dir``."""
    base = base_dir or (source.resolve().parent if source is not None else Path.cwd())
    data, lines = _compose(text, source)
    if not isinstance(data, dict):
        raise StoryError(
            [
                Problem(
                    "a story must be a YAML mapping",
                    file=source,
                    line=lines.get((), None),
                    hint="start with 'title:', 'reference:' and 'scenes:' (see `videokit schema`)",
                )
            ]
        )
    try:
        story = Story.model_validate(data)
    except ValidationError as exc:
        raise StoryError(problems_from_validation(exc, data, lines, source)) from None
    return story.with_origin(source=source, base_dir=base, lines=lines)


def _compose(text: str, source: Path | None) -> tuple[Any, dict[Loc, int]]:
    loader = yaml.SafeLoader(text)
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    try:
        node = loader.get_single_node()
        if node is None:
            raise StoryError([Problem("story file is empty", file=source)])
        data = _construct(loader, node, (), lines, problems, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or "syntax error"
        raise StoryError(
            [
                Problem(
                    f"YAML syntax error: {what}",
                    file=source,
                    line=line,
                    hint="check indentation and quoting on this line or the one above",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise StoryError([Problem(f"YAML error: {exc}", file=source)]) from None
    finally:
        loader.dispose()
    if problems:
        raise StoryError(problems)
    return data, lines


def _construct(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    loc: Loc,
    lines: dict[Loc, int],
    problems: list[Problem],
    source: Path | None,
) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<:` merge keys
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int) or isinstance(key, bool):
                problems.append(
                    Problem(
                        f"keys must be plain names, got {key!r}",
                        file=source,
                        line=key_node.start_mark.line + 1,
                        field=format_field(loc) or None,
                    )
                )
                continue
            if key in result:
                problems.append(
                    Problem(
                        f"duplicate key '{key}' (the later value would silently win)",
                        file=source,
                        line=key_node.start_mark.line + 1,
                        field=format_field((*loc, key)),
                        hint="remove one of the two",
                    )
                )
                continue
            result[key] = _construct(loader, value_node, (*loc, key), lines, problems, source)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*loc, i), lines, problems, source)
            for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def problems_from_validation(
    exc: ValidationError,
    data: Any,
    lines: Mapping[Loc, int],
    source: Path | None,
) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per field."""
    problems: dict[Loc, Problem] = {}
    for error in exc.errors():
        loc = _data_loc(error, data)
        if loc in problems:
            continue  # a union reports one error per branch; one message per field is enough
        problems[loc] = Problem(
            _message(error, loc, data),
            file=source,
            line=_line_of(lines, loc),
            field=format_field(loc) or None,
            scene=_scene_of(loc, data),
            hint=_hint(error, loc),
        )
    return list(problems.values())


def _data_loc(error: ErrorDetails, data: Any) -> Loc:
    """The error's location with union-branch tags (``literal['cut']``, ``Crossfade``) removed."""
    loc: list[str | int] = []
    node = data
    parts = list(error["loc"])
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        # Two branches, not one `or`: mypy narrows `part` to int only in the list branch.
        if isinstance(node, dict) and part in node:  # noqa: SIM114
            loc.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            loc.append(part)
            node = node[part]
        elif last and error["type"] in ("missing", "extra_forbidden"):
            loc.append(part)
        elif isinstance(node, dict) and error["type"] == "missing":
            loc.append(part)
            break
    return tuple(loc)


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


def _message(error: ErrorDetails, loc: Loc, data: Any) -> str:
    kind = error["type"]
    field = loc[-1] if loc else "story"
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1])
        close = difflib.get_close_matches(str(field), known, n=1)
        guess = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown key '{field}'{guess}"
    if kind == "missing":
        return f"missing required key '{field}'"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind in _TYPE_ERRORS or kind.endswith("_type") or kind.startswith(("literal", "union")):
        shown = _value_at(data, loc)
        return f"{message[:1].lower()}{message[1:]}, got {shown!r}"
    return message[:1].lower() + message[1:]


_TYPE_ERRORS = {"int_parsing", "float_parsing", "bool_parsing", "model_type", "literal_error"}


def _hint(error: ErrorDetails, loc: Loc) -> str | None:
    if error["type"] == "extra_forbidden":
        return "see `videokit schema` for every key a story accepts"
    for part in reversed(loc):
        if isinstance(part, str) and part in _HINTS:
            return _HINTS[part]
    return None


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
        field = next(
            (f for name, f in model.model_fields.items() if part in (name, f.alias)),
            None,
        )
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None
