"""The wire formats ("dialects") of the older workers that videokit's workers also answer.

Three workers users already run each have their own documents: ``lightx2v-worker`` (the LightX2V
Wan2.2 I2V worker, animate), ``comfy-wan-worker`` (the ComfyUI 4-step Wan2.2 worker, animate) and
``qwen-edit-worker`` (the Qwen-Image-Edit worker, edit). This module is their one definition, shared
by the SDK (to build requests and parse outputs) and the workers (to parse input and write output):
documented limits and defaults, strict input models (an unknown field is an error) that map onto
the native requests of :mod:`videokit.protocol`, and output models.

A field a dialect leaves out takes the dialect's documented default for the clip's *shape* (size,
frames, fps, negative prompt), and the native default for *sampler* settings (steps, guidance): the
deployed engine's, since a 4-step Lightning model ruins a 40-step recipe. Extensions over the
originals: ``seed`` (-1 or absent: random, and reported), presigned ``outputs`` (the media comes
back as ``*_url`` instead of ``*_base64``), and ``peak_memory_bytes`` when measured.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from videokit.protocol import MAX_SEED, AnimateRequest, EditRequest, OutputTarget

__all__ = [
    "COMFY_WAN_DEFAULTS",
    "COMFY_WAN_LIMITS",
    "COMFY_WAN_NEGATIVE_PROMPT",
    "DIALECT_STAGE",
    "INPUT_MODELS",
    "LIGHTX2V_DEFAULTS",
    "OUTPUT_MODELS",
    "QWEN_EDIT_MAX_REFERENCES",
    "ComfyWanDefaults",
    "ComfyWanInput",
    "ComfyWanLimits",
    "ComfyWanMetadata",
    "ComfyWanOutput",
    "DialectInput",
    "DialectName",
    "LightX2VDefaults",
    "LightX2VInput",
    "LightX2VOutput",
    "QwenEditInput",
    "QwenEditOutput",
    "comfy_wan_problems",
]

#: The dialects, named after the worker whose documents they are.
DialectName = Literal["lightx2v-worker", "comfy-wan-worker", "qwen-edit-worker"]

#: Which stage (endpoint) speaks each dialect.
DIALECT_STAGE: Final[Mapping[DialectName, Literal["edit", "animate"]]] = {
    "lightx2v-worker": "animate",
    "comfy-wan-worker": "animate",
    "qwen-edit-worker": "edit",
}

#: The ComfyUI worker's default negative prompt: Wan's own (Chinese) one, which the model was
#: trained with. Its document printed it over three lines; the line breaks were layout, not content.
COMFY_WAN_NEGATIVE_PROMPT: Final = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，"
    "整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，"
    "画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class ComfyWanLimits:
    """The ComfyUI worker's documented validation rules; every range is inclusive."""

    prompt_chars: tuple[int, int]  # prompt length in characters
    side: tuple[int, int]  # width and height, in pixels
    side_multiple: int  # width and height are multiples of this
    frames: tuple[int, int]  # frame count
    frame_step: int  # frame counts are frame_step * n + 1
    fps: tuple[int, int]  # frames per second of the clip
    cfg: tuple[float, float]  # classifier-free guidance scale
    steps: tuple[int, int]  # sampler steps


#: The ComfyUI worker's limits ("Validation Rules" of its document).
COMFY_WAN_LIMITS: Final = ComfyWanLimits(
    prompt_chars=(1, 1000),
    side=(256, 1024),
    side_multiple=64,
    frames=(9, 121),
    frame_step=8,
    fps=(8, 60),
    cfg=(0.1, 20.0),
    steps=(1, 50),
)


@dataclass(frozen=True)
class ComfyWanDefaults:
    """The ComfyUI worker's documented defaults for the fields a request leaves out."""

    width: int
    height: int
    frames: int
    fps: int
    cfg: float
    steps: int
    negative_prompt: str


#: The ComfyUI worker's defaults ("Input Schema" of its document).
COMFY_WAN_DEFAULTS: Final = ComfyWanDefaults(
    width=512,
    height=512,
    frames=33,
    fps=16,
    cfg=1.0,
    steps=4,
    negative_prompt=COMFY_WAN_NEGATIVE_PROMPT,
)


@dataclass(frozen=True)
class LightX2VDefaults:
    """The LightX2V worker's documented defaults for the clip's shape (its limits are native)."""

    num_frames: int
    fps: int
    width: int
    height: int
    negative_prompt: str


#: The LightX2V worker's shape defaults; its "40 steps, guidance 5.0" are not taken (see above).
LIGHTX2V_DEFAULTS: Final = LightX2VDefaults(
    num_frames=81, fps=16, width=832, height=480, negative_prompt=""
)

#: At most this many reference images in ``images_base64`` (EditRequest holds 3 images in all).
QWEN_EDIT_MAX_REFERENCES: Final = 2


def comfy_wan_problems(
    *,
    prompt: str | None = None,
    width: int | None = None,
    height: int | None = None,
    frames: int | None = None,
    fps: int | None = None,
    cfg: float | None = None,
    steps: int | None = None,
) -> list[tuple[str, str]]:
    """(field, problem) for each value the ComfyUI worker refuses; None: not given, not checked.

    Each problem names the limit and the nearest allowed value, e.g. ``("width", "must be a
    multiple of 64 from 256 to 1024, got 500 (nearest allowed: 512)")``.
    """
    lim = COMFY_WAN_LIMITS
    problems: list[tuple[str, str]] = []
    if prompt is not None and not lim.prompt_chars[0] <= len(prompt) <= lim.prompt_chars[1]:
        low, high = lim.prompt_chars
        nearest = min(max(len(prompt), low), high)
        problems.append(
            (
                "prompt",
                f"must be {low} to {high} characters long, got {len(prompt)} "
                f"(nearest allowed: {nearest})",
            )
        )
    for name, side in (("width", width), ("height", height)):
        if side is not None:
            step, (low, high) = lim.side_multiple, lim.side
            if not (low <= side <= high and side % step == 0):
                nearest = min(max(step * int(side / step + 0.5), low), high)
                problems.append(
                    (
                        name,
                        f"must be a multiple of {step} from {low} to {high}, got {side} "
                        f"(nearest allowed: {nearest})",
                    )
                )
    if frames is not None:
        step, (low, high) = lim.frame_step, lim.frames
        if not (low <= frames <= high and (frames - 1) % step == 0):
            nearest = min(max(step * int((frames - 1) / step + 0.5) + 1, low), high)
            problems.append(
                (
                    "frames",
                    f"must be {step}n+1 from {low} to {high}, got {frames} "
                    f"(nearest allowed: {nearest})",
                )
            )
    for name, value, (low_v, high_v) in (
        ("fps", fps, lim.fps),
        ("cfg", cfg, lim.cfg),
        ("steps", steps, lim.steps),
    ):
        if value is not None and not low_v <= value <= high_v:
            near = min(max(value, low_v), high_v) if math.isfinite(value) else low_v
            problems.append(
                (name, f"must be from {low_v} to {high_v}, got {value} (nearest allowed: {near})")
            )
    return problems


# -- inputs ----------------------------------------------------------------------------------------


def _random_or(seed: int | None) -> int:
    # -1 is the usual spelling of "random"; the chosen seed is reported so the render reproduces.
    return secrets.randbelow(MAX_SEED + 1) if seed is None or seed == -1 else seed


class DialectInput(BaseModel):
    """Base of the dialects' input documents: strict, and mapped field by field onto native ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The dialect's field name → the native request field it fills (None: mapped in code).
    NATIVE_NAMES: ClassVar[Mapping[str, str | None]]

    def to_request(self) -> EditRequest | AnimateRequest:
        """The native request (native limits apply); raises pydantic's ValidationError."""
        raise NotImplementedError

    def _native_fields(self) -> dict[str, Any]:
        return {
            native: value
            for name, native in self.NATIVE_NAMES.items()
            if native is not None and (value := getattr(self, name)) is not None
        }


class LightX2VInput(DialectInput):
    """The LightX2V worker's animate input ("I2V Operation"); no limits beyond the native ones."""

    NATIVE_NAMES: ClassVar[Mapping[str, str | None]] = {
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
        "outputs": "outputs",
    }

    image_base64: str  # the starting frame (a data: URL is accepted too)
    prompt: str  # the motion to render
    negative_prompt: str = LIGHTX2V_DEFAULTS.negative_prompt  # what to avoid
    num_frames: int = LIGHTX2V_DEFAULTS.num_frames  # frame count, 4k+1
    num_inference_steps: int | None = None  # sampler steps; None: the engine's default
    guidance_scale: float | None = None  # CFG scale; None: the engine's default
    seed: int | None = None  # -1 or None: a random seed, reported in the output
    fps: int = LIGHTX2V_DEFAULTS.fps  # frames per second of the clip
    height: int = LIGHTX2V_DEFAULTS.height  # clip height in pixels
    width: int = LIGHTX2V_DEFAULTS.width  # clip width in pixels
    outputs: dict[Literal["video", "last_frame"], OutputTarget] | None = None  # presigned uploads

    def to_request(self) -> AnimateRequest:
        native = self._native_fields()
        native.update(image={"base64": self.image_base64}, seed=_random_or(self.seed))
        return AnimateRequest.model_validate(native)


class ComfyWanInput(DialectInput):
    """The ComfyUI worker's animate input ("Input Schema"), held to its documented limits."""

    NATIVE_NAMES: ClassVar[Mapping[str, str | None]] = {
        "prompt": "prompt",
        "image_url": None,
        "image_base64": None,
        "negative_prompt": "negative_prompt",
        "cfg": "guidance_scale",
        "width": "width",
        "height": "height",
        "frames": "frames",
        "fps": "fps",
        "steps": "steps",
        "seed": None,
        "outputs": "outputs",
    }

    prompt: str  # the motion to render, 1-1000 characters
    image_url: str | None = None  # the starting frame by URL; exactly one of the two image fields
    image_base64: str | None = None  # the starting frame inline
    negative_prompt: str = COMFY_WAN_DEFAULTS.negative_prompt  # what to avoid
    cfg: float = COMFY_WAN_DEFAULTS.cfg  # CFG scale, 0.1-20.0
    width: int = COMFY_WAN_DEFAULTS.width  # 256-1024, a multiple of 64
    height: int = COMFY_WAN_DEFAULTS.height  # 256-1024, a multiple of 64
    frames: int = COMFY_WAN_DEFAULTS.frames  # 9-121, 8n+1
    fps: int = COMFY_WAN_DEFAULTS.fps  # 8-60
    steps: int = COMFY_WAN_DEFAULTS.steps  # 1-50
    seed: int | None = None  # extension (the original always randomised): -1 or None is random
    outputs: dict[Literal["video", "last_frame"], OutputTarget] | None = None  # presigned uploads

    @field_validator("prompt", "width", "height", "frames", "fps", "cfg", "steps")
    @classmethod
    def _documented_limits(cls, value: Any, info: ValidationInfo) -> Any:
        for _, problem in comfy_wan_problems(**{str(info.field_name): value}):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_image(self) -> ComfyWanInput:
        if self.image_url is not None and self.image_base64 is not None:
            raise ValueError("give exactly one of 'image_url' or 'image_base64', not both")
        if self.image_url is None and self.image_base64 is None:
            raise ValueError(
                "image_base64: required (give 'image_url' or 'image_base64' with the starting "
                "frame)"
            )
        return self

    def to_request(self) -> AnimateRequest:
        native = self._native_fields()
        if self.image_url is not None:
            native["image"] = {"url": self.image_url}
        else:
            native["image"] = {"base64": self.image_base64}
        native["seed"] = _random_or(self.seed)
        return AnimateRequest.model_validate(native)


class QwenEditInput(DialectInput):
    """The Qwen-Image-Edit worker's input: the image to edit, up to two references, a prompt."""

    NATIVE_NAMES: ClassVar[Mapping[str, str | None]] = {
        "image_base64": None,
        "images_base64": None,
        "prompt": "prompt",
        "negative_prompt": "negative_prompt",
        "num_inference_steps": "steps",
        "guidance_scale": "true_cfg_scale",
        "seed": None,
        "outputs": "outputs",
    }

    image_base64: str  # the image to edit
    images_base64: list[str] | None = None  # up to QWEN_EDIT_MAX_REFERENCES reference images
    prompt: str  # the edit to make
    negative_prompt: str | None = None  # what to avoid; None: the engine's default ("")
    num_inference_steps: int | None = None  # sampler steps; None: the engine's default
    guidance_scale: float | None = None  # true CFG scale; None: the engine's default
    seed: int | None = None  # -1 or None: a random seed, reported in the output
    outputs: dict[Literal["image"], OutputTarget] | None = None  # presigned upload

    @field_validator("images_base64", mode="before")
    @classmethod
    def _references(cls, value: object) -> object:
        if value is not None and not isinstance(value, list):
            raise ValueError("must be a list of base64 strings")
        if isinstance(value, list) and len(value) > QWEN_EDIT_MAX_REFERENCES:
            most = QWEN_EDIT_MAX_REFERENCES + 1
            raise ValueError(
                f"at most {most} images in total (image_base64 plus up to "
                f"{QWEN_EDIT_MAX_REFERENCES} references), got {1 + len(value)}"
            )
        return value

    def to_request(self) -> EditRequest:
        native = self._native_fields()
        images = [self.image_base64, *(self.images_base64 or [])]
        native.update(images=[{"base64": image} for image in images], seed=_random_or(self.seed))
        return EditRequest.model_validate(native)


#: The input model of each dialect.
INPUT_MODELS: Final[Mapping[DialectName, type[DialectInput]]] = {
    "lightx2v-worker": LightX2VInput,
    "comfy-wan-worker": ComfyWanInput,
    "qwen-edit-worker": QwenEditInput,
}


# -- outputs ---------------------------------------------------------------------------------------


def _given(model: BaseModel, name: str) -> None:
    if getattr(model, f"{name}_base64") is None and getattr(model, f"{name}_url") is None:
        raise ValueError(f"one of '{name}_base64' or '{name}_url' is required")


class LightX2VOutput(BaseModel):
    """The LightX2V worker's success output; extra keys are kept (the original adds R2 fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    success: Literal[True] = True  # always true in a success output
    video_base64: str | None = None  # the MP4, inline
    video_url: str | None = None  # the MP4's URL when it was uploaded
    last_frame_base64: str | None = None  # the clip's last frame as a PNG, inline
    last_frame_url: str | None = None  # the last frame's URL when it was uploaded
    seed: int  # the seed used (the chosen one when the request asked for a random one)
    inference_time_ms: int = Field(ge=0)  # time spent rendering
    num_frames: int = Field(ge=1)  # frames in the clip
    fps: int = Field(ge=1)  # frames per second of the clip
    resolution: str = Field(pattern=r"^[0-9]+x[0-9]+$")  # "WIDTHxHEIGHT"
    video_size_bytes: int = Field(ge=0)  # size of the MP4
    peak_memory_bytes: int | None = None  # extension: the GPU's peak memory, when measured

    @model_validator(mode="after")
    def _media(self) -> LightX2VOutput:
        _given(self, "video")
        _given(self, "last_frame")
        return self


class ComfyWanMetadata(BaseModel):
    """The settings the ComfyUI worker rendered with, as its output's ``metadata``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int  # clip width in pixels
    height: int  # clip height in pixels
    frames: int  # frames in the clip
    fps: int  # frames per second of the clip
    cfg: float  # CFG scale used
    steps: int  # sampler steps used
    seed: int | None = None  # extension: the seed used (the original always randomised)


class ComfyWanOutput(BaseModel):
    """The ComfyUI worker's success output: the clip and the settings it was rendered with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    video_base64: str | None = None  # the MP4, inline
    video_url: str | None = None  # extension: the MP4's URL when it was uploaded
    metadata: ComfyWanMetadata  # the settings used
    peak_memory_bytes: int | None = None  # extension: the GPU's peak memory, when measured

    @model_validator(mode="after")
    def _media(self) -> ComfyWanOutput:
        _given(self, "video")
        return self


class QwenEditOutput(BaseModel):
    """The Qwen-Image-Edit worker's success output; extra keys are kept (storage fields)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    success: Literal[True] = True  # always true in a success output
    edited_image_base64: str | None = None  # the edited PNG, inline
    edited_image_url: str | None = None  # the edited PNG's URL when it was uploaded
    seed: int  # the seed used (the chosen one when the request asked for a random one)
    inference_time_ms: int = Field(ge=0)  # time spent rendering
    width: int  # image width in pixels
    height: int  # image height in pixels
    peak_memory_bytes: int | None = None  # extension: the GPU's peak memory, when measured

    @model_validator(mode="after")
    def _media(self) -> QwenEditOutput:
        _given(self, "edited_image")
        return self


#: The output model of each dialect.
OUTPUT_MODELS: Final[Mapping[DialectName, type[BaseModel]]] = {
    "lightx2v-worker": LightX2VOutput,
    "comfy-wan-worker": ComfyWanOutput,
    "qwen-edit-worker": QwenEditOutput,
}
