"""Job input documents → native wire requests, and native results → the caller's output style.

A worker accepts four input dialects, so that clients written for the workers videokit replaces
keep working unchanged (their models, limits and defaults are in :mod:`videokit.dialects`):

* **native**: an ``EditRequest`` / ``AnimateRequest`` dump (:mod:`videokit.protocol`; it carries
  ``"kind"``). Answered with the result model's JSON dump.
* **lightx2v-worker** (animate): ``image_base64, prompt, negative_prompt, num_frames,
  num_inference_steps, guidance_scale, seed, fps, height, width``. Answered in that worker's output
  shape (``video_base64``, ``last_frame_base64``, ``resolution``...).
* **comfy-wan-worker** (animate): ``image_url`` or ``image_base64``, ``prompt, negative_prompt,
  cfg, width, height, frames, fps, steps``, checked against that worker's documented limits.
  Answered in its own shape: ``video_base64`` and ``metadata{width, height, frames, fps, cfg,
  steps}`` (plus ``seed``, so a render can be reproduced).
* **qwen-edit-worker** (edit): ``image_base64`` plus optional ``images_base64`` references,
  ``prompt, negative_prompt, num_inference_steps, guidance_scale, seed``. Answered with
  ``edited_image_base64``.

An animate document is a comfy-wan-worker one when it uses a field only that worker has
(``image_url, cfg, frames, steps``), else a lightx2v-worker one; mixing the two is an error.

Dialects are parsed strictly: an unknown field is an error that names it (with a suggestion),
never silently ignored, because a typo such as ``num_frame`` would otherwise quietly render the
wrong clip. Every validation failure becomes one readable :class:`JobInputError` ("field: problem"),
with the field named as the caller spelled it, never a pydantic dump (which would echo the input,
base64 and all, into the job's error blob).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ValidationError

from videokit.backends.base import Stage
from videokit.dialects import (
    ComfyWanInput,
    ComfyWanMetadata,
    ComfyWanOutput,
    DialectInput,
    DialectName,
    LightX2VInput,
    LightX2VOutput,
    QwenEditInput,
    QwenEditOutput,
)
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult
from videokit.worker.errors import JobInputError

__all__ = [
    "OutputStyle",
    "Warmup",
    "format_output",
    "input_fields",
    "parse_job_input",
]

#: How a job's result is written back: the native result dump, or one of the dialects' shapes.
OutputStyle = Literal["native", DialectName]

# At most this many problems are listed in one message; the rest are counted. Field names come
# from the caller and are cut to _MAX_NAME_CHARS, so a hostile document cannot inflate the message.
_MAX_PROBLEMS = 6
_MAX_NAME_CHARS = 40

# Field names only one of the two animate dialects uses: they tell the dialects apart.
_COMFY_WAN_ONLY: Final = frozenset(ComfyWanInput.model_fields) - set(LightX2VInput.model_fields)
_LIGHTX2V_ONLY: Final = frozenset(LightX2VInput.model_fields) - set(ComfyWanInput.model_fields)

# Names a validation error's location (a pydantic ``loc``) the way the caller spelled the field.
_Label = Callable[[tuple[int | str, ...]], str]


@dataclass(frozen=True)
class Warmup:
    """A ``{"warmup": true}`` job: answer as soon as the engine is loaded, run nothing."""


# -- parsing ---------------------------------------------------------------------------------------


def parse_job_input(
    stage: Stage, document: object
) -> tuple[EditRequest | AnimateRequest | Warmup, OutputStyle]:
    """Turn a job's ``input`` document into a native request and the style to answer in.

    Raises :class:`JobInputError` with one readable message for anything invalid.
    """
    if not isinstance(document, dict):
        raise JobInputError(
            f"the job input must be a JSON object, got {_json_type(document)}",
            hint='send {"input": {...}} with the request fields inside',
        )
    if "warmup" in document:
        if document != {"warmup": True}:
            raise JobInputError('a warmup job is exactly {"warmup": true}, with no other fields')
        return Warmup(), "native"
    if "kind" in document:
        return _parse_native(stage, document), "native"
    present = _present(document)
    if stage == "edit":
        return _parse_dialect(QwenEditInput, present, EditRequest), "qwen-edit-worker"
    comfy, lightx2v = set(present) & _COMFY_WAN_ONLY, set(present) & _LIGHTX2V_ONLY
    if comfy and lightx2v:
        raise JobInputError(
            f"the fields mix two request formats: {_names(lightx2v)} (num_frames style) and "
            f"{_names(comfy)} (frames/cfg style)",
            hint="use one format: num_frames/num_inference_steps/guidance_scale, "
            "or frames/steps/cfg",
        )
    # Without a distinguishing field, lightx2v-worker is assumed: it is the animate worker's
    # documented API (and accepts everything the two share).
    if comfy:
        return _parse_dialect(ComfyWanInput, present, AnimateRequest), "comfy-wan-worker"
    return _parse_dialect(LightX2VInput, present, AnimateRequest), "lightx2v-worker"


def input_fields(style: OutputStyle, request: EditRequest | AnimateRequest) -> list[str]:
    """The caller's name for each input image of ``request``, in order (for error messages)."""
    if isinstance(request, AnimateRequest):
        if style == "native":
            return ["image"]
        # Only comfy-wan-worker has image_url; a URL input in a dialect came from it.
        return ["image_url" if request.image.url is not None else "image_base64"]
    if style == "native":
        return [f"images[{i}]" for i in range(len(request.images))]
    return ["image_base64", *(f"images_base64[{i}]" for i in range(len(request.images) - 1))]


def _parse_native(stage: Stage, document: dict[str, Any]) -> EditRequest | AnimateRequest:
    kind = document.get("kind")
    if kind != stage:
        expected = "edit" if stage == "edit" else "animate"
        raise JobInputError(
            f'kind: this is the {stage} worker; it runs "kind": "{expected}" requests, '
            f"got {_short(repr(kind))}",
            hint="send edit requests to the edit endpoint and animate requests to the animate one",
        )
    model: type[EditRequest | AnimateRequest] = EditRequest if stage == "edit" else AnimateRequest
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        # `from None`: the chained ValidationError's text echoes the input (base64 included) and
        # would land in the job's error traceback.
        raise JobInputError(_describe_errors(exc, _native_label, model)) from None


def _parse_dialect(
    model: type[DialectInput],
    present: dict[str, Any],
    native: type[EditRequest] | type[AnimateRequest],
) -> EditRequest | AnimateRequest:
    """Validate ``present`` with the dialect's model, then map it onto the native request."""
    table = model.NATIVE_NAMES
    _refuse_unknown(present, table, native)
    try:
        parsed = model.model_validate(present)
    except ValidationError as exc:
        # The dialect model's fields are the caller's names, so its locations need no renaming.
        message = _describe_errors(exc, _native_label, model, extra_fields=table)
        raise JobInputError(message) from None
    labels = {native_name: name for name, native_name in table.items() if native_name}
    labels["image"] = "image_url" if getattr(parsed, "image_url", None) else "image_base64"
    labels["seed"] = "seed"
    try:
        return parsed.to_request()  # the native limits (frames 4k+1, the pixel budget...)
    except ValidationError as exc:
        label = _dialect_label(labels)
        raise JobInputError(_describe_errors(exc, label, native, extra_fields=table)) from None


def _present(document: dict[str, Any]) -> dict[str, Any]:
    # JSON clients often send null for "not given"; treat it as absent (so the default applies).
    return {key: value for key, value in document.items() if value is not None}


def _refuse_unknown(
    present: Mapping[str, Any], table: Mapping[str, str | None], model: type[BaseModel]
) -> None:
    unknown = sorted(set(present) - set(table))
    if not unknown:
        return
    # Credentials first, with the protocol's own explanation: validating just the unknown fields
    # runs the model's "before" validators (the credential refusal) ahead of field validation, and
    # its refusal is the only error that is not tied to a field (loc == ()).
    try:
        model.model_validate({key: present[key] for key in unknown})
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            if not error["loc"]:
                raise JobInputError(_clean_message(error["msg"])) from None
    problems = [f"{_short(key)}: {_unknown_field(key, table)}" for key in unknown]
    if len(problems) > _MAX_PROBLEMS:
        problems = [*problems[:_MAX_PROBLEMS], f"and {len(problems) - _MAX_PROBLEMS} more"]
    if any(not _suggestion(key, table) for key in unknown):
        problems.append(f"the known fields are: {', '.join(table)}")
    native = [key for key in unknown if key in model.model_fields]
    hint = None
    if native:
        kind = "edit" if model is EditRequest else "animate"
        plural = "a native videokit field name" if len(native) == 1 else "native field names"
        hint = f'{_names(native)}: {plural}; a native request also needs "kind": "{kind}"'
    raise JobInputError("; ".join(problems), hint=hint)


def _suggestion(name: str, known: Mapping[str, object] | Sequence[str]) -> str | None:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_field(name: str, known: Mapping[str, object] | Sequence[str]) -> str:
    suggestion = _suggestion(name, known)
    return f"unknown field (did you mean '{suggestion}'?)" if suggestion else "unknown field"


# -- error messages --------------------------------------------------------------------------------


def _native_label(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            continue  # pydantic's marker for "this dict entry's key": the path names it already
        else:
            part = _short(part)
            text += f".{part}" if text else part
    return text


def _dialect_label(labels: Mapping[str, str]) -> _Label:
    def label(loc: tuple[int | str, ...]) -> str:
        if not loc:
            return ""
        head = loc[0]
        if head == "images":
            # images[0] is image_base64, images[i] is images_base64[i-1]; deeper parts (.base64)
            # are the inline data itself, which the caller did not name separately.
            if len(loc) >= 2 and isinstance(loc[1], int):
                return "image_base64" if loc[1] == 0 else f"images_base64[{loc[1] - 1}]"
            return "images_base64"
        if head == "image":
            return labels["image"]
        rest = _native_label(loc[1:])
        name = labels.get(str(head), str(head))
        if not rest:
            return name
        return f"{name}{rest}" if rest.startswith("[") else f"{name}.{rest}"

    return label


def _describe_errors(
    exc: ValidationError,
    label: _Label,
    model: type[BaseModel],
    *,
    extra_fields: Mapping[str, object] | None = None,
) -> str:
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        if kind == "missing":
            text = "required"
        elif kind == "extra_forbidden":
            text = _unknown_field(str(loc[-1]), extra_fields or list(model.model_fields))
        else:
            text = _clean_message(error["msg"])
        where = label(loc)
        problem = f"{where}: {text}" if where else text
        if problem not in problems:
            problems.append(problem)
    shown = problems[:_MAX_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(f"and {len(problems) - len(shown)} more")
    return "; ".join(shown)


def _clean_message(message: str) -> str:
    # pydantic prefixes our validators' messages with the error class name.
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME_CHARS else name[: _MAX_NAME_CHARS - 1] + "…"


def _names(names: Sequence[str] | set[str] | frozenset[str]) -> str:
    return ", ".join(f"'{_short(name)}'" for name in sorted(names))


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# -- output ----------------------------------------------------------------------------------------


def format_output(
    result: EditResult | AnimateResult,
    style: OutputStyle,
    request: EditRequest | AnimateRequest | None = None,
) -> dict[str, Any]:
    """Write ``result`` in the caller's style, through the dialect's output model.

    ``request`` is the one the result answers; the comfy-wan-worker style needs it (its metadata
    reports the cfg and steps asked for, which a result does not carry).

    Dialect outputs carry inline media as ``*_base64``; media uploaded to a presigned URL (a
    videokit extension the originals never had) appears as ``*_url`` instead, since the point of
    uploading is to keep the job output small. ``peak_memory_bytes`` (another extension) is added
    only when the engine measured it, so clients that check their key set see exactly the original
    keys from the CPU engines.
    """
    if style == "native":
        return result.model_dump(mode="json")
    output: BaseModel
    if isinstance(result, EditResult):
        if style != "qwen-edit-worker":
            raise ValueError(f"an edit result cannot be written as {style}")
        output = QwenEditOutput(
            edited_image_base64=result.image.base64,
            edited_image_url=result.image.url,
            seed=result.seed,
            inference_time_ms=result.inference_ms,
            width=result.width,
            height=result.height,
            peak_memory_bytes=result.peak_memory_bytes,
        )
    elif style == "lightx2v-worker":
        output = LightX2VOutput(
            video_base64=result.video.base64,
            video_url=result.video.url,
            last_frame_base64=result.last_frame.base64,
            last_frame_url=result.last_frame.url,
            seed=result.seed,
            inference_time_ms=result.inference_ms,
            num_frames=result.frames,
            fps=result.fps,
            resolution=f"{result.width}x{result.height}",
            video_size_bytes=result.video.size_bytes,
            peak_memory_bytes=result.peak_memory_bytes,
        )
    elif style == "comfy-wan-worker":
        if not isinstance(request, AnimateRequest):
            raise ValueError("the comfy-wan-worker output needs the animate request it answers")
        metadata = ComfyWanMetadata(
            width=result.width,
            height=result.height,
            frames=result.frames,
            fps=result.fps,
            cfg=request.guidance_scale,
            steps=request.steps,
            seed=result.seed,
        )
        output = ComfyWanOutput(
            video_base64=result.video.base64,
            video_url=result.video.url,
            metadata=metadata,
            peak_memory_bytes=result.peak_memory_bytes,
        )
    else:
        raise ValueError(f"an animate result cannot be written as {style}")
    return output.model_dump(mode="json", exclude_none=True)
