"""Paths to a value in a story's data, and the models that declare the fields on them.

A path such as ``("scenes", 2, "edit", "prompt")`` is how lines, errors and repairs are keyed;
:func:`format_field` writes it as the user reads it, ``scenes[2].edit.prompt``. Pydantic's error
locations carry union-branch tags; :func:`deepest_errors` gives each error its path in the data.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from videokit.story.model import Story

__all__ = ["Loc", "data_loc", "deepest_errors", "field_of", "format_field", "model_in", "owner_of"]

Loc = tuple[str | int, ...]


def format_field(loc: Loc) -> str:
    """``("scenes", 2, "edit", "prompt")`` -> ``scenes[2].edit.prompt``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def deepest_errors(exc: ValidationError) -> list[tuple[Loc, ErrorDetails]]:
    """The errors with their locations in the data, less those of union branches not meant.

    A union reports one error per branch. The branch that got furthest into the input is the one
    the user meant ({crossfade: -1} is a bad crossfade, not a bad 'cut').
    """
    errors = [(data_loc(error), error) for error in exc.errors()]
    return [
        (loc, error)
        for loc, error in errors
        if not any(len(other) > len(loc) and other[: len(loc)] == loc for other, _ in errors)
    ]


def data_loc(error: ErrorDetails) -> Loc:
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
        field = field_of(model, part) if model is not None else None
        if field is not None:
            loc.append(part)
            model = model_in(field.annotation)
        elif i == len(parts) - 1 and error["type"] in ("missing", "extra_forbidden"):
            loc.append(part)  # a key the model does not have: the user's own spelling
        else:
            tagged = _model_named(model, part)  # a union branch: follow it if it is a model
            if tagged is not None:
                model = tagged
    return tuple(loc)


def field_of(model: type[BaseModel], key: str) -> FieldInfo | None:
    return next((f for name, f in model.model_fields.items() if key in (name, f.alias)), None)


def _model_named(model: type[BaseModel] | None, tag: str) -> type[BaseModel] | None:
    if model is not None and model.__name__ == tag:
        return model
    return None


def owner_of(loc: Loc) -> tuple[type[BaseModel], str] | None:
    """The model that declares the field at ``loc``, and the field's key."""
    model: type[BaseModel] | None = Story
    owner: tuple[type[BaseModel], str] | None = None
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = field_of(model, part)
        if field is None:
            return None
        owner = (model, part)
        model = model_in(field.annotation)
    return owner


def model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = model_in(arg)
            if found is not None:
                return found
    return None
