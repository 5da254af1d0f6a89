"""Loading stories from YAML with errors that point at the line, the field and the scene.

PyYAML's safe loader drops positions, so we compose the node tree ourselves and record the line of
every value by its path, e.g. ``("scenes", 2, "frames") -> 14``. Pydantic errors are then mapped to
:class:`~videokit.errors.Problem` objects that name the file, line, field path and scene id, with a
hint on how to fix it.
"""

from __future__ import annotations

import difflib
import functools
import json
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from videokit.errors import Problem, StoryError
from videokit.protocol import (
    MAX_FRAMES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_FRAMES,
    MIN_SIDE,
)
from videokit.story.model import MAX_EDIT_IMAGES, STORY_ERROR, Story

__all__ = ["format_field", "load_story", "parse_story", "problems_from_validation"]

Loc = tuple[str | int, ...]

MAX_STORY_BYTES = 2_000_000


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
        raise StoryError(
            [
                Problem(
                    "this is a directory, not a story file",
                    file=path,
                    hint="give the YAML file inside it, e.g. story.yaml",
                )
            ]
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoryError(
            [
                Problem(
                    f"cannot read the story file: {exc.strerror}",
                    file=path,
                    hint="check the file's permissions",
                )
            ]
        ) from exc
    if len(raw) > MAX_STORY_BYTES:
        raise StoryError(
            [
                Problem(
                    f"story file is over {MAX_STORY_BYTES:,} bytes",
                    file=path,
                    hint="a story is a short YAML file; images and audio go in files it names",
                )
            ]
        )
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
    builder = _Builder(loader, source)
    try:
        node = loader.get_single_node()
        if node is None:
            raise StoryError(
                [
                    Problem(
                        "story file is empty",
                        file=source,
                        hint="start with 'title:', 'reference:' and 'scenes:' "
                        "(see examples/story.yaml)",
                    )
                ]
            )
        data = builder.build(node, ())
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
        raise StoryError(
            [Problem(f"YAML error: {exc}", file=source, hint="check the YAML syntax")]
        ) from None
    except RecursionError:
        # PyYAML composes nested collections recursively; thousands of `[[[[` end up here.
        raise StoryError(
            [
                Problem(
                    "the story is nested too deeply to read",
                    file=source,
                    hint=f"a story needs a few levels of nesting; keep it under {MAX_DEPTH}",
                )
            ]
        ) from None
    finally:
        loader.dispose()
    if builder.problems:
        # An anchor with a problem, repeated by aliases, is one problem.
        unique = {(p.line, p.message): p for p in reversed(builder.problems)}
        raise StoryError(list(reversed(unique.values())))
    return data, builder.lines


#: Values (mappings, lists and scalars) a story may expand to. A real story has hundreds; YAML
#: aliases nested in each other multiply (five levels of ten `*x` in a 1 kB file are 100000
#: values and 250 MB), so expanding stops here instead of running out of memory.
MAX_NODES = 100_000
#: Nesting levels of mappings and lists (a story needs about five).
MAX_DEPTH = 40

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Builder:
    """Builds plain data from PyYAML's node tree, recording the line of every value by its path.

    Aliases are expanded (the data is then validated like any other), but never without bound:
    :data:`MAX_NODES` caps the expansion and an alias inside its own anchor is refused.
    Merge keys (``<<: *base``) are resolved here too, so that a key given next to a merge
    overrides the merged one instead of being reported as a duplicate.
    """

    def __init__(self, loader: yaml.SafeLoader, source: Path | None) -> None:
        self.loader = loader
        self.source = source
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self.count = 0
        self.active: set[int] = set()  # collections being built: an alias back to one loops
        self.merged: dict[int, dict[Any, tuple[yaml.Node, yaml.Node]]] = {}

    def _refuse(self, message: str, node: yaml.Node, loc: Loc, hint: str) -> StoryError:
        # An alias's node carries the line of its anchor; the top-level key it sits under is
        # where a reader finds it.
        line = self.lines.get(loc[:1]) if loc else None
        return StoryError(
            [
                Problem(
                    message,
                    file=self.source,
                    line=line or node.start_mark.line + 1,
                    field=format_field(loc) or None,
                    hint=hint,
                )
            ]
        )

    def _enter(self, node: yaml.Node, loc: Loc) -> None:
        if id(node) in self.active:
            raise self._refuse(
                "a YAML alias (*name) refers to a value that contains it, which never ends",
                node,
                loc,
                "an alias can only repeat a value defined outside it",
            )
        if len(loc) > MAX_DEPTH:
            raise self._refuse(
                f"the story nests more than {MAX_DEPTH} levels deep",
                node,
                loc,
                "a story needs a few levels of nesting; check for runaway indentation or aliases",
            )
        self.active.add(id(node))

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self._refuse(
                f"the story expands to more than {MAX_NODES:,} values "
                "(YAML aliases repeated inside each other multiply)",
                node,
                loc,
                "write the values out, or repeat them with fewer nested aliases (*name)",
            )
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            self._enter(node, loc)
            try:
                return self._mapping(node, loc)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self._enter(node, loc)
            try:
                return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self.loader.construct_object(node, deep=True)

    def _key(self, key_node: yaml.Node, loc: Loc) -> str | int | None:
        key = (
            self.loader.construct_object(key_node, deep=True)
            if isinstance(key_node, yaml.ScalarNode)
            else None
        )
        if isinstance(key, str | int) and not isinstance(key, bool):
            return key
        shown = repr(key) if isinstance(key_node, yaml.ScalarNode) else "a mapping or a list"
        self.problems.append(
            Problem(
                f"keys must be plain names, got {shown}",
                file=self.source,
                line=key_node.start_mark.line + 1,
                field=format_field(loc) or None,
                hint="write keys as names, e.g. `motion:`; quote a key that looks like a number",
            )
        )
        return None

    def _entries(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        """The mapping's own keys over the keys it merges, each key once (explicit keys win)."""
        merged: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        explicit: dict[Any, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, loc):
                    for key, pair in self._merged_entries(source, loc).items():
                        merged.setdefault(key, pair)  # YAML: an earlier merged mapping wins
                continue
            key = self._key(key_node, loc)
            if key is None:
                continue
            if key in explicit:
                self.problems.append(
                    Problem(
                        f"duplicate key '{key}' (the later value would silently win)",
                        file=self.source,
                        line=key_node.start_mark.line + 1,
                        field=format_field((*loc, key)),
                        hint="remove one of the two",
                    )
                )
                continue
            explicit[key] = (key_node, value_node)
        return {**merged, **explicit}

    def _merge_sources(self, value_node: yaml.Node, loc: Loc) -> list[yaml.MappingNode]:
        if isinstance(value_node, yaml.MappingNode):
            return [value_node]
        if isinstance(value_node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in value_node.value
        ):
            return [item for item in value_node.value if isinstance(item, yaml.MappingNode)]
        raise self._refuse(
            "a merge key (<<) needs a mapping or a list of mappings",
            value_node,
            loc,
            "write `<<: *name` where `&name` marks a mapping",
        )

    def _merged_entries(
        self, node: yaml.MappingNode, loc: Loc
    ) -> dict[Any, tuple[yaml.Node, yaml.Node]]:
        # Memoized: merging the same anchor many times costs its keys once, not once per use.
        if id(node) not in self.merged:
            self._enter(node, loc)
            try:
                self.count += len(node.value)
                self.merged[id(node)] = self._entries(node, loc)
            finally:
                self.active.discard(id(node))
        return self.merged[id(node)]

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        return {
            key: self.build(value_node, (*loc, key))
            for key, (_, value_node) in self._entries(node, loc).items()
        }


def problems_from_validation(
    exc: ValidationError,
    data: Any,
    lines: Mapping[Loc, int],
    source: Path | None,
) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per field."""
    errors = [(_data_loc(error), error) for error in exc.errors()]
    # A union reports one error per branch. The branch that got furthest into the input is the
    # one the user meant ({crossfade: -1} is a bad crossfade, not a bad 'cut'), and one message
    # per field is enough.
    deepest = [
        (loc, error)
        for loc, error in errors
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors)
    ]
    problems: dict[Loc, Problem] = {}
    for loc, error in deepest:
        if loc in problems:
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


def _data_loc(error: ErrorDetails) -> Loc:
    """The error's location as a path into the story, without pydantic's union-branch tags.

    pydantic inserts tags such as ``literal['cut']`` or ``Crossfade`` into the location of an
    error in a union; walking the models alongside tells a field name from a tag. A location that
    goes on past a plain value (``edit: "..."`` is shorthand for ``edit: {prompt: "..."}``) keeps
    the field it names, so the error lands on ``edit.prompt``.
    """
    loc: list[str | int] = []
    model: type[BaseModel] | None = Story
    parts = list(error["loc"])
    for i, part in enumerate(parts):
        if isinstance(part, int):
            loc.append(part)
            continue
        field = _field_of(model, part) if model is not None else None
        if field is not None:
            loc.append(part)
            model = _model_in(field.annotation)
        elif i == len(parts) - 1 and error["type"] in ("missing", "extra_forbidden"):
            loc.append(part)  # a key the model does not have: the user's own spelling
        else:
            tagged = _model_named(model, part)  # a union branch: follow it if it is a model
            if tagged is not None:
                model = tagged
    return tuple(loc)


def _field_of(model: type[BaseModel], key: str) -> FieldInfo | None:
    return next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)


def _model_named(model: type[BaseModel] | None, tag: str) -> type[BaseModel] | None:
    if model is not None and model.__name__ == tag:
        return model
    return None


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
    owner = _owner_of(loc)
    if owner is None:
        return None
    model, key = owner
    return _HINTS.get((model.__name__, key))


def _owner_of(loc: Loc) -> tuple[type[BaseModel], str] | None:
    """The model that declares the field at ``loc``, and the field's key."""
    model: type[BaseModel] | None = Story
    owner: tuple[type[BaseModel], str] | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = _field_of(model, part)
        if field is None:
            return None
        owner = (model, part)
        model = _model_in(field.annotation)
    return owner


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
        field = _field_of(model, part)
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
            inner = _model_in(field.annotation)
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


# -- hints, per field ----------------------------------------------------------------------------

_SIDE = (
    f"a multiple of 16 from {MIN_SIDE} to {MAX_SIDE}, with width x height at most {MAX_PIXELS:,} "
    "pixels (e.g. 832x480, 1280x720, 1920x1088)"
)
_FRAMES = (
    f"clips have 4k+1 frames from {MIN_FRAMES} to {MAX_FRAMES} (e.g. 33, 49, 65, 81); "
    "or give 'duration' in seconds"
)
_DURATION = (
    "seconds per clip, more than 0 and at most 60, e.g. 5; it becomes the nearest 4k+1 frame count"
)
_SEED = f"a whole number from 0 to {MAX_SEED}; leave it out to derive one from the scene id"
_NEGATIVE = (
    f"text naming what to avoid, e.g. 'blurry, distorted, low quality' (at most "
    f"{MAX_PROMPT_CHARS} characters)"
)
_EDIT_STEPS = "denoising steps from 1 to 100: 8 (or 4) with the Lightning LoRA, about 40 without"
_EDIT_GUIDANCE = (
    "true_cfg_scale from 0 to 20: 1 (no CFG) with the Lightning LoRA, about 4 without; "
    "CFG only runs with a negative prompt"
)
_ENDPOINT = "a RunPod endpoint id, or a `videokit serve` URL such as http://gpu-box:8000/v2/edit"

#: A hint for every field, by (model, key). tests/test_story_errors.py checks none is missing.
_HINTS: dict[tuple[str, str], str] = {
    ("Story", "title"): "a short name for the story (1 to 200 characters), e.g. 'Robbie dances'",
    ("Story", "reference"): "an image path (relative to the story file) or a list of them",
    ("Story", "defaults"): "a mapping of what every scene inherits, e.g. {width: 832, frames: 81}",
    ("Story", "scenes"): "a list of scenes, each with at least 'id' and 'motion'",
    ("Story", "timeline"): "a list of scene ids in playback order, e.g. [hello, tuxedo]",
    ("Story", "output"): "a mapping like {path: final.mp4, audio: theme.m4a, crf: 18}",
    ("Story", "endpoints"): "a mapping like {edit: ENDPOINT_ID, animate: ENDPOINT_ID}",
    ("Defaults", "width"): _SIDE,
    ("Defaults", "height"): _SIDE,
    ("Defaults", "fps"): "frames per second, a whole number from 1 to 60 (Wan is trained at 16)",
    ("Defaults", "frames"): _FRAMES,
    ("Defaults", "duration"): _DURATION,
    ("Defaults", "seed"): f"a whole number from 0 to {MAX_SEED}; scene seeds are derived from it",
    ("Defaults", "negative_prompt"): _NEGATIVE,
    ("Defaults", "animate"): "a mapping like {steps: 4, guidance: 1.0}",
    ("Defaults", "edit"): "a mapping like {steps: 8, guidance: 1.0}",
    ("AnimateSettings", "steps"): (
        "denoising steps from 1 to 100: 4 with the LightX2V LoRA, about 40 without"
    ),
    ("AnimateSettings", "guidance"): (
        "CFG scale of the high-noise expert, from 0 to 20: 1 with the LightX2V LoRA, about 4 "
        "without"
    ),
    ("AnimateSettings", "guidance_2"): (
        "CFG scale of the low-noise expert, from 0 to 20; leave it out to use 'guidance'"
    ),
    ("EditSettings", "steps"): _EDIT_STEPS,
    ("EditSettings", "guidance"): _EDIT_GUIDANCE,
    ("EditSettings", "negative_prompt"): _NEGATIVE,
    ("Edit", "prompt"): (
        "describe the change, e.g. 'same person, now wearing a tuxedo, in a casino' "
        f"(at most {MAX_PROMPT_CHARS} characters)"
    ),
    ("Edit", "images"): (
        f"a list of at most {MAX_EDIT_IMAGES - 1} image paths: an edit takes {MAX_EDIT_IMAGES} "
        "images in all, the frame it edits included"
    ),
    ("Edit", "steps"): _EDIT_STEPS,
    ("Edit", "guidance"): _EDIT_GUIDANCE,
    ("Edit", "negative_prompt"): _NEGATIVE,
    ("Edit", "seed"): _SEED,
    ("Crossfade", "crossfade"): (
        "seconds of overlap with the next clip, more than 0 and at most 5, e.g. {crossfade: 0.5}"
    ),
    ("Scene", "id"): "letters, digits, '-' and '_' (at most 64), starting with a letter or digit",
    ("Scene", "motion"): (
        "describe what moves, e.g. 'she turns and smiles, camera slowly pushes in' "
        f"(at most {MAX_PROMPT_CHARS} characters)"
    ),
    ("Scene", "edit"): "a prompt (edit: now at night) or a mapping like {prompt: ..., images: []}",
    ("Scene", "from"): "'reference', a scene id, '<scene-id>.edit' or an image path",
    ("Scene", "frames"): _FRAMES,
    ("Scene", "duration"): _DURATION,
    ("Scene", "seed"): _SEED,
    ("Scene", "negative_prompt"): _NEGATIVE,
    ("Scene", "animate"): "a mapping like {steps: 4, guidance: 1.0}; left-out fields keep defaults",
    ("Scene", "transition"): "use 'cut' or a mapping like {crossfade: 0.5}",
    ("Output", "path"): "a file name ending in .mp4 (relative to the story file), e.g. final.mp4",
    ("Output", "audio"): "an audio file (relative to the story file), e.g. theme.m4a",
    ("Output", "audio_fade_out"): "seconds of fade-out at the end of the audio, from 0 to 10",
    ("Output", "crf"): "x264 quality, a whole number from 0 to 51: lower is better (18 is great)",
    ("Output", "preset"): "ultrafast, superfast, veryfast, faster, fast, medium, slow or slower",
    ("Endpoints", "edit"): _ENDPOINT,
    ("Endpoints", "animate"): _ENDPOINT,
    ("Endpoints", "base_url"): "the API base URL, e.g. http://gpu-box:8000/v2 (default: RunPod's)",
}
