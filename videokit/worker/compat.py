"""Job input documents → native wire requests, and native results → the caller's output style.

A worker accepts four input dialects, so that clients written for the workers videokit replaces
keep working unchanged:

* **native**: an ``EditRequest`` / ``AnimateRequest`` dump (:mod:`videokit.protocol`; it carries
  ``"kind"``). Answered with the result model's JSON dump.
* **seed 001** (animate): ``image_base64, prompt, negative_prompt, num_frames,
  num_inference_steps, guidance_scale, seed, fps, height, width``. Answered with seed 001's output
  names (``video_base64``, ``last_frame_base64``, ``resolution``...).
* **seed 000** (animate): ``image_url`` or ``image_base64``, ``prompt, negative_prompt, cfg, width,
  height, frames, fps, steps``. Answered with seed 001's output names too: one animate worker, one
  seed output shape (a project decision; seed 000's own output had no last frame, which chaining
  needs).
* **seed 003** (edit): ``image_base64`` plus optional ``images_base64`` references, ``prompt,
  negative_prompt, num_inference_steps, guidance_scale, seed``. Answered with
  ``edited_image_base64``.

Defaults for omitted seed fields: the *shape* of the output (size, frame count, fps, negative
prompt) follows the seed's documented defaults, because that is what its clients expect back;
*sampler* settings (steps, guidance) follow the deployed engine's defaults (the native ones),
because seed 001's "40 steps, guidance 5.0" belong to a non-distilled model setup and would ruin a
4-step Lightning model's output. A client that wants them sends them, as seed 001's example does.

Seed formats are parsed strictly: an unknown field is an error that names it (with a suggestion),
never silently ignored, because a typo such as ``num_frame`` would otherwise quietly render the
wrong clip. Every validation failure becomes one readable :class:`JobInputError` ("field: problem"),
with the field named as the caller spelled it, never a pydantic dump (which would echo the input,
base64 and all, into the job's error blob).
"""

from __future__ import annotations

import difflib
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ValidationError

from videokit.backends.base import Stage
from videokit.protocol import (
    MAX_SEED,
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaOutput,
)
from videokit.worker.errors import JobInputError

__all__ = [
    "SEED000_NEGATIVE_PROMPT",
    "OutputStyle",
    "Warmup",
    "format_output",
    "input_fields",
    "parse_job_input",
]

#: How a job's result is written back: the native result dump, or one of the seeds' output shapes.
OutputStyle = Literal["native", "seed001", "seed003"]

#: Seed 000's default negative prompt: Wan's own (Chinese) negative prompt, which the model was
#: trained with. Seed 000 printed it over three lines; the line breaks were layout, not content.
SEED000_NEGATIVE_PROMPT: Final = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，"
    "整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# At most this many problems are listed in one message; the rest are counted. Field names come
# from the caller and are cut to _MAX_NAME_CHARS, so a hostile document cannot inflate the message.
_MAX_PROBLEMS = 6
_MAX_NAME_CHARS = 40


@dataclass(frozen=True)
class Warmup:
    """A ``{"warmup": true}`` job: answer as soon as the engine is loaded, run nothing."""


# -- seed field tables -----------------------------------------------------------------------------
#
# Each table maps the seed's field name to the native field it fills. Fields that need more than a
# rename (images, seeds, refused credentials) are handled in code and listed here as None.

_SEED001_FIELDS: Final[Mapping[str, str | None]] = {
    "image_base64": None,
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "num_frames": "frames",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance_scale",
    "seed": None,
    "fps": "fps",
    "height": "height",
    "width": "width",
    "outputs": "outputs",  # videokit extension: presigned upload targets
}
_SEED001_DEFAULTS: Final[Mapping[str, object]] = {
    "negative_prompt": "",
    "frames": 81,
    "fps": 16,
    "width": 832,
    "height": 480,
}

_SEED000_FIELDS: Final[Mapping[str, str | None]] = {
    "image_url": None,
    "image_base64": None,
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "cfg": "guidance_scale",
    "width": "width",
    "height": "height",
    "frames": "frames",
    "fps": "fps",
    "steps": "steps",
    "seed": None,  # seed 000 always randomised; accepting one makes its renders reproducible
    "outputs": "outputs",
}
_SEED000_DEFAULTS: Final[Mapping[str, object]] = {
    "negative_prompt": SEED000_NEGATIVE_PROMPT,
    "width": 512,
    "height": 512,
    "frames": 33,
    "fps": 16,
}

_SEED003_FIELDS: Final[Mapping[str, str | None]] = {
    "image_base64": None,
    "images_base64": None,
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "num_inference_steps": "steps",
    "guidance_scale": "true_cfg_scale",
    "seed": None,
    "outputs": "outputs",
}

# Field names only one of the two animate seeds uses: they tell the dialects apart.
_SEED000_ONLY: Final = frozenset({"image_url", "cfg", "frames", "steps"})
_SEED001_ONLY: Final = frozenset({"num_frames", "num_inference_steps", "guidance_scale"})

_MAX_EDIT_IMAGES = 3  # EditRequest.images: the image to edit plus up to two references

# Names a validation error's location (a pydantic ``loc``) the way the caller spelled the field.
_Label = Callable[[tuple[int | str, ...]], str]


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
    if stage == "animate":
        return _parse_animate_seed(document), "seed001"
    return _parse_seed003(document), "seed003"


def input_fields(style: OutputStyle, request: EditRequest | AnimateRequest) -> list[str]:
    """The caller's name for each input image of ``request``, in order (for error messages)."""
    if isinstance(request, AnimateRequest):
        if style == "native":
            return ["image"]
        # Only seed 000 has image_url; a URL input in seed style can only have come from it.
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


def _parse_animate_seed(document: dict[str, Any]) -> AnimateRequest:
    present = _present(document)
    seed000, seed001 = set(present) & _SEED000_ONLY, set(present) & _SEED001_ONLY
    if seed000 and seed001:
        raise JobInputError(
            f"the fields mix two request formats: {_names(seed001)} (num_frames style) and "
            f"{_names(seed000)} (frames/cfg style)",
            hint="use one format: num_frames/num_inference_steps/guidance_scale, "
            "or frames/steps/cfg",
        )
    # Without a distinguishing field, seed 001 is assumed: it is the animate worker's documented
    # API, and its output names are the ones returned either way.
    if seed000:
        table, defaults = _SEED000_FIELDS, _SEED000_DEFAULTS
    else:
        table, defaults = _SEED001_FIELDS, _SEED001_DEFAULTS
    _refuse_unknown(present, table, AnimateRequest)

    native: dict[str, Any] = dict(defaults)
    for name, value in present.items():
        target = table.get(name)
        if target is not None:
            native[target] = value
    if "image_url" in present and "image_base64" in present:
        raise JobInputError("give exactly one of 'image_url' or 'image_base64', not both")
    if "image_url" in present:
        native["image"] = {"url": present["image_url"]}
    elif "image_base64" in present:
        native["image"] = {"base64": present["image_base64"]}
    else:
        wanted = "'image_url' or 'image_base64'" if seed000 else "'image_base64'"
        raise JobInputError(f"image_base64: required (give {wanted} with the starting frame)")
    native["seed"] = _seed(present)

    labels = {native_name: seed_name for seed_name, native_name in table.items() if native_name}
    labels["image"] = "image_url" if "image_url" in present else "image_base64"
    labels["seed"] = "seed"
    try:
        return AnimateRequest.model_validate(native)
    except ValidationError as exc:
        raise JobInputError(
            _describe_errors(exc, _seed_label(labels), AnimateRequest, extra_fields=table)
        ) from None


def _parse_seed003(document: dict[str, Any]) -> EditRequest:
    present = _present(document)
    _refuse_unknown(present, _SEED003_FIELDS, EditRequest)

    if "image_base64" not in present:
        raise JobInputError(
            "image_base64: required (the image to edit; 'images_base64' holds up to "
            f"{_MAX_EDIT_IMAGES - 1} extra reference images)"
        )
    references = present.get("images_base64", [])
    if not isinstance(references, list):
        raise JobInputError(
            f"images_base64: must be a list of base64 strings, got {_json_type(references)}"
        )
    if 1 + len(references) > _MAX_EDIT_IMAGES:
        raise JobInputError(
            f"images_base64: at most {_MAX_EDIT_IMAGES} images in total (image_base64 plus up to "
            f"{_MAX_EDIT_IMAGES - 1} references), got {1 + len(references)}"
        )
    native: dict[str, Any] = {
        "images": [{"base64": present["image_base64"]}, *({"base64": r} for r in references)],
        "seed": _seed(present),
    }
    for name, value in present.items():
        target = _SEED003_FIELDS.get(name)
        if target is not None:
            native[target] = value

    labels = {n: s for s, n in _SEED003_FIELDS.items() if n}
    labels["seed"] = "seed"
    try:
        return EditRequest.model_validate(native)
    except ValidationError as exc:
        raise JobInputError(
            _describe_errors(exc, _seed_label(labels), EditRequest, extra_fields=_SEED003_FIELDS)
        ) from None


def _present(document: dict[str, Any]) -> dict[str, Any]:
    # JSON clients often send null for "not given"; treat it as absent (so the default applies).
    return {key: value for key, value in document.items() if value is not None}


def _seed(present: Mapping[str, Any]) -> object:
    """The request's seed; a fresh random one when absent (or -1, the usual "random" spelling).

    The chosen seed is reported in the output, as the seeds did, so a render can be reproduced.
    """
    seed = present.get("seed")
    if seed is None or (type(seed) is int and seed == -1):
        return secrets.randbelow(MAX_SEED + 1)
    return seed


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
        names = "a native videokit field name" if len(native) == 1 else "native field names"
        hint = f'{_names(native)}: {names}; a native request also needs "kind": "{kind}"'
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


def _seed_label(labels: Mapping[str, str]) -> _Label:
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


def format_output(result: EditResult | AnimateResult, style: OutputStyle) -> dict[str, Any]:
    """Write ``result`` in the caller's style.

    Seed styles carry inline outputs as ``*_base64``; an output uploaded to a presigned URL (a
    videokit extension the seeds never had) appears as ``*_url`` instead of its base64, since the
    point of uploading is to keep the job output small. ``peak_memory_bytes`` (another extension)
    is added when the engine measured it.
    """
    if style == "native":
        return result.model_dump(mode="json")
    if isinstance(result, AnimateResult):
        if style != "seed001":
            raise ValueError(f"an animate result cannot be written as {style}")
        out: dict[str, Any] = {"success": True}
        _put_media(out, "video", result.video)
        _put_media(out, "last_frame", result.last_frame)
        out.update(
            seed=result.seed,
            inference_time_ms=result.inference_ms,
            num_frames=result.frames,
            fps=result.fps,
            resolution=f"{result.width}x{result.height}",
            video_size_bytes=result.video.size_bytes,
        )
        _put_peak(out, result)
        return out
    if style != "seed003":
        raise ValueError(f"an edit result cannot be written as {style}")
    out = {"success": True}
    _put_media(out, "edited_image", result.image)
    out.update(
        seed=result.seed,
        inference_time_ms=result.inference_ms,
        width=result.width,
        height=result.height,
    )
    _put_peak(out, result)
    return out


def _put_peak(out: dict[str, Any], result: EditResult | AnimateResult) -> None:
    # An addition to the seed formats, present only when measured (a GPU engine): seed clients
    # that check their key set keep seeing exactly the seed's keys from the CPU engines.
    if result.peak_memory_bytes is not None:
        out["peak_memory_bytes"] = result.peak_memory_bytes


def _put_media(out: dict[str, Any], name: str, media: MediaOutput) -> None:
    if media.base64 is not None:
        out[f"{name}_base64"] = media.base64
    if media.url is not None:
        out[f"{name}_url"] = media.url
