"""The story format: pydantic models that are both the YAML schema and the Python API.

A story is a reference image, some defaults and a list of scenes. Each scene optionally *edits* its
first frame (Qwen-Image-Edit) and then *animates* it (Wan2.2 I2V). ``from`` says where the first
frame comes from, which makes the scenes a DAG. Paths are kept as written and resolved against the
story file's folder when the story is planned, so a story can be built in Python and saved as YAML
without losing meaning.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from videokit.protocol import (
    MAX_FRAMES,
    MAX_PIXELS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE,
    MIN_FRAMES,
    MIN_SIDE,
)

__all__ = [
    "AnimateSettings",
    "ColorMatch",
    "ColorSettings",
    "Crossfade",
    "Defaults",
    "Edit",
    "EditSettings",
    "Endpoints",
    "Fit",
    "Output",
    "Scene",
    "Story",
    "Transition",
    "slugify",
]

SCENE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
RESERVED_IDS = frozenset({"reference"})
#: Images one Qwen-Image-Edit-Plus job takes: the frame it edits plus up to two references.
MAX_EDIT_IMAGES = 3

PathLike = str | Path
Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Frames = Annotated[int, Field(ge=MIN_FRAMES, le=MAX_FRAMES)]
Duration = Annotated[float, Field(gt=0, le=60)]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]
#: How a starting image whose aspect ratio is not the frame's becomes a frame
#: (videokit.media.images.FIT_MODES).
Fit = Literal["crop", "pad", "stretch"]
#: What each animated clip's colours are matched to (videokit.media.color): the story's reference
#: frame, the scene's own first frame, or nothing.
ColorMatch = Literal["reference", "previous", "off"]


class _Model(BaseModel):
    # strict: YAML already types its scalars, so "81" for frames is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


#: The error type of the story's own checks; the loader shows ``hint`` from its context.
STORY_ERROR = "story"


def _refuse(message: str, hint: str | None = None) -> PydanticCustomError:
    # The message travels in the context: a template would read its braces as placeholders.
    return PydanticCustomError(STORY_ERROR, "{message}", {"message": message, "hint": hint})


class _ClipLength(_Model):
    """A clip's length is given by ``frames`` or by ``duration`` (Defaults and Scene)."""

    # On `duration`, declared after `frames`: the error then points at the second of the two.
    @field_validator("duration", check_fields=False)
    @classmethod
    def _frames_or_duration(cls, value: float | None, info: ValidationInfo) -> float | None:
        frames = info.data.get("frames")
        if value is not None and frames is not None:
            raise _refuse(
                f"give 'frames' or 'duration', not both (frames is {frames}, duration {value:g})",
                "remove one; a duration is converted to the nearest 4k+1 frame count",
            )
        return value


def _not_blank(value: str, what: str, example: str) -> str:
    if not value.strip():
        raise _refuse(f"{what} is empty", f"describe what should happen, e.g. '{example}'")
    return value


class EditSettings(_Model):
    """Qwen-Image-Edit settings. The defaults match the Lightning LoRA (8 steps, no CFG).

    A scene's ``edit`` overrides them field by field.
    """

    steps: int = Field(
        default=8, ge=1, le=100, description="Denoising steps (4 or 8 with Lightning)."
    )
    guidance: float = Field(
        default=1.0, ge=0.0, le=20.0,
        description="true_cfg_scale; above 1 enables CFG, which needs a negative prompt.",
    )  # fmt: skip
    negative_prompt: Prompt = Field(
        default="",
        description="Negative prompt of every edit (default: defaults.negative_prompt); "
        "give '' to use none for edits. Only used when guidance is above 1.",
    )


class AnimateSettings(_Model):
    """Wan2.2 I2V settings. The defaults match the LightX2V 4-step distillation (guidance 1).

    A scene's ``animate`` overrides ``defaults.animate`` field by field: fields it leaves out keep
    the story's values.
    """

    steps: int = Field(
        default=4, ge=1, le=100, description="4 with the LightX2V LoRA; ~40 without."
    )
    guidance: float = Field(
        default=1.0, ge=0.0, le=20.0, description="High-noise expert CFG scale."
    )
    guidance_2: float | None = Field(
        default=None, ge=0.0, le=20.0, description="Low-noise expert CFG scale (default: guidance)."
    )


class ColorSettings(_Model):
    """Colour matching of each animated clip, against the drift a chain of clips compounds.

    Every frame of the clip (and the last frame handed to the next scene) gets the Lab mean and
    spread of an anchor picture (Reinhard colour transfer). A scene's ``color`` overrides
    ``defaults.color`` field by field.
    """

    match: ColorMatch = Field(
        default="off",
        description="reference = match the story's reference frame (holds a whole chain to it); "
        "previous = match the frame the scene starts from (holds each clip to its own start); "
        "off = leave the clip as the model made it (default).",
    )
    strength: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="How much of the correction to apply: 1 = all of it, 0.5 = half way.",
    )

    @field_validator("match", mode="before")
    @classmethod
    def _yaml_booleans(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` (and `no`) as false: that is the 'off' the author wrote.
        if value is False:
            return "off"
        if value is True:
            raise _refuse(
                "'on' (true) is not a colour match: say what to match",
                "write 'reference' (the story's reference frame) or 'previous' (the frame the "
                "scene starts from), or 'off'",
            )
        return value


def _color_shorthand(value: Any) -> Any:
    # `color: reference` (or `color: off`, which YAML reads as false) means `{match: ...}`.
    return {"match": value} if isinstance(value, str | bool) else value


def _color_schema(schema: dict[str, Any]) -> None:
    # The shorthand in the JSON Schema too, so editors accept `color: reference`.
    shorthand = {"enum": list(get_args(ColorMatch)), "type": "string"}
    options = schema.get("anyOf")
    if options is not None:
        options.insert(1, shorthand)
    else:
        reference = {k: schema.pop(k) for k in list(schema) if k in ("$ref", "allOf")}
        schema["anyOf"] = [reference, shorthand]


class Defaults(_ClipLength):
    """Values every scene inherits unless it overrides them."""

    width: Side = Field(
        default=832,
        description="Frame width in pixels (multiple of 16); width x height at most "
        f"{MAX_PIXELS} pixels (e.g. 1920x1088).",
    )
    height: Side = Field(
        default=480,
        description="Frame height in pixels (multiple of 16); width x height at most "
        f"{MAX_PIXELS} pixels (e.g. 1920x1088).",
    )
    fps: int = Field(default=16, ge=1, le=60)
    frames: Frames | None = Field(default=None, description="Frames per clip, 4k+1. Default 81.")
    duration: Duration | None = Field(
        default=None, description="Seconds per clip; converted to the nearest 4k+1 frame count."
    )
    seed: Seed = Field(default=0, description="Story seed; scene seeds are derived from it.")
    negative_prompt: Prompt = Field(
        default="",
        description="The story's negative prompt, for every job: animations use it unless a "
        "scene gives its own negative_prompt; edits use it unless defaults.edit.negative_prompt "
        "or the scene's edit.negative_prompt is given.",
    )
    animate: AnimateSettings = Field(default_factory=AnimateSettings)
    edit: EditSettings = Field(default_factory=EditSettings)
    fit: Fit = Field(
        default="crop",
        description="How a starting image whose aspect ratio differs from width x height "
        "becomes a frame: crop = scale to cover and cut the overflow (default), pad = scale to "
        "fit and add black bars, stretch = distort to fill.",
    )
    color: ColorSettings = Field(
        default_factory=ColorSettings,
        description="Colour matching of every animated clip against chain drift, e.g. "
        "{match: reference, strength: 0.8} (default: off); a scene's color overrides it.",
        json_schema_extra=_color_schema,
    )

    @field_validator("color", mode="before")
    @classmethod
    def _color_shorthand(cls, value: Any) -> Any:
        return _color_shorthand(value)

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            lower, upper = value - value % 16, value - value % 16 + 16
            raise _refuse(
                f"{value} is not a multiple of 16 (Wan needs it)", f"use {lower} or {upper}"
            )
        return value


class Edit(_Model):
    """Edit the scene's first frame before animating it."""

    prompt: Prompt = Field(description='What to change, e.g. "same person, now in a tuxedo".')
    images: list[PathLike] = Field(
        default_factory=list,
        max_length=MAX_EDIT_IMAGES - 1,
        description="Extra reference images for this edit. The job gets the frame to edit, "
        "then these, then the story's extra reference images (all but the first): "
        f"{MAX_EDIT_IMAGES} images at most in all.",
    )
    steps: int | None = Field(default=None, ge=1, le=100, description="Default: defaults.edit.")
    guidance: float | None = Field(
        default=None, ge=0.0, le=20.0, description="Default: defaults.edit."
    )
    negative_prompt: Prompt | None = Field(
        default=None,
        description="Default: defaults.edit.negative_prompt if given, else "
        "defaults.negative_prompt. The scene's own negative_prompt is for its animation.",
    )
    seed: Seed | None = Field(default=None, description="Default: the scene's seed.")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return _not_blank(value, "edit prompt", "same person, now wearing a tuxedo")


class Crossfade(_Model):
    crossfade: float = Field(gt=0, le=5, description="Seconds of overlap with the next clip.")


Transition = Literal["cut"] | Crossfade


class Scene(_ClipLength):
    """One shot: optional edit, then animation."""

    id: str = Field(pattern=SCENE_ID_PATTERN, description="Unique name; letters, digits, - and _.")
    motion: Prompt = Field(description="What moves in the clip (the Wan I2V prompt).")
    edit: Edit | None = Field(
        default=None, description="Optional Qwen-Image-Edit of the first frame."
    )
    from_: str | None = Field(
        default=None,
        alias="from",
        description=(
            "Where the first frame comes from: omitted = the previous scene's last frame; "
            "'reference'; '<scene-id>' (its last frame); '<scene-id>.edit' (its edited frame); "
            "or an image path."
        ),
    )
    frames: Frames | None = Field(default=None, description="Default: defaults.frames.")
    duration: Duration | None = Field(default=None, description="Default: defaults.duration.")
    seed: Seed | None = Field(
        default=None, description="Default: derived from the story seed and the scene id."
    )
    negative_prompt: Prompt | None = Field(
        default=None,
        description="Negative prompt of this scene's animation (default: "
        "defaults.negative_prompt); its edit has edit.negative_prompt.",
    )
    animate: AnimateSettings | None = Field(
        default=None,
        description="Overrides of defaults.animate; the fields left out keep the story's values.",
    )
    transition: Transition = Field(
        default="cut", description="Into the next clip on the timeline: 'cut' or {crossfade: s}."
    )
    fit: Fit | None = Field(
        default=None,
        description="How this scene's starting image (the reference or an image path in 'from') "
        "becomes a frame when its aspect ratio differs (default: defaults.fit).",
    )
    audio: PathLike | None = Field(
        default=None,
        description="A soundtrack that drives this clip (sound-to-video): only an animate "
        "endpoint whose ComfyUI workflow binds `audio` takes it.",
    )
    color: ColorSettings | None = Field(
        default=None,
        description="Overrides of defaults.color for this clip, e.g. {match: previous} or "
        "{strength: 0.5}; the fields left out keep the story's values.",
        json_schema_extra=_color_schema,
    )

    @field_validator("motion")
    @classmethod
    def _motion_not_blank(cls, value: str) -> str:
        return _not_blank(value, "motion prompt", "she turns and smiles, camera pushes in")

    @field_validator("id")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_IDS:
            raise _refuse(
                f"'{value}' is reserved (it names the story's reference image)",
                f"choose another id, e.g. '{value}-shot'",
            )
        return value

    @field_validator("edit", mode="before")
    @classmethod
    def _edit_shorthand(cls, value: Any) -> Any:
        # `edit: "now in a tuxedo"` is the common case; spell it out for the model.
        return {"prompt": value} if isinstance(value, str) else value

    @field_validator("color", mode="before")
    @classmethod
    def _color_shorthand(cls, value: Any) -> Any:
        return _color_shorthand(value)


class Output(_Model):
    path: PathLike | None = Field(
        default=None, description="Final video path (default: <work dir>/final.mp4)."
    )
    audio: PathLike | None = Field(default=None, description="Audio track, trimmed/faded to fit.")
    audio_fade_out: float = Field(default=1.0, ge=0, le=10)
    crf: int = Field(default=18, ge=0, le=51, description="x264 quality: lower is better.")
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = "medium"


class Endpoints(_Model):
    """Where jobs run. Environment variables override these; the API key never goes here."""

    edit: str | None = Field(default=None, description="RunPod endpoint id for edit jobs.")
    animate: str | None = Field(default=None, description="RunPod endpoint id for animate jobs.")
    base_url: str | None = Field(
        default=None,
        description="API base, e.g. http://gpu-box:8000/v2 for `videokit serve` (default RunPod).",
    )


def _no_default(schema: dict[str, Any]) -> None:
    # The "" default stands for "derived"; an editor offering "" would offer an invalid title.
    schema.pop("default", None)


def slugify(text: str) -> str:
    """``text`` as a file name: runs of anything but ASCII letters, digits, ``_`` and ``-``
    become ``-`` (never empty: ``story``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "story"


class Story(_Model):
    """A whole story. Build it in Python or load it with :func:`videokit.load_story`."""

    # Optional, yet always a str once validated: the default "" is never validated (so it does
    # not trip min_length, while a title given as "" does) and is replaced by _default_title; the
    # loader names an untitled story after its file instead.
    title: str = Field(
        default="",
        min_length=1,
        max_length=200,
        description="The story's name (default: the story file's name, else the first scene's id).",
        json_schema_extra=_no_default,
    )
    reference: PathLike | list[PathLike] = Field(
        description="The starting image, or a list of images: the first is the starting frame; "
        "the others are passed to every edit as extra reference images (after the edit's own "
        f"images; an edit takes {MAX_EDIT_IMAGES} images at most in all)."
    )
    defaults: Defaults = Field(default_factory=Defaults)
    scenes: list[Scene] = Field(min_length=1)
    timeline: list[str] | None = Field(
        default=None, description="Scene ids in playback order (default: file order)."
    )
    output: Output = Field(default_factory=Output)
    endpoints: Endpoints | None = None

    # Where relative paths resolve and where errors point; set by the loader.
    _source: Path | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _default_title(self) -> Story:
        if not self.title:
            self.set_default_title(self.scenes[0].id)
        return self

    def set_default_title(self, title: str) -> None:
        """Name a story whose data gives no title; ``title`` stays out of ``model_fields_set``,
        so a dump with ``exclude_unset`` still says the user wrote none."""
        # Through __dict__: attribute assignment would mark the field as set.
        self.__dict__["title"] = title[:200] or "story"

    @field_validator("reference")
    @classmethod
    def _some_reference(cls, value: PathLike | list[PathLike]) -> PathLike | list[PathLike]:
        if isinstance(value, list) and not value:
            raise _refuse(
                "give at least one reference image", "reference: me.png, or [me.png, style.png]"
            )
        return value

    @property
    def references(self) -> list[PathLike]:
        return list(self.reference) if isinstance(self.reference, list) else [self.reference]

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def base_dir(self) -> Path:
        return self._base_dir if self._base_dir is not None else Path.cwd()

    def slug(self) -> str:
        """A filesystem-friendly name for the work directory."""
        return slugify(self._source.stem if self._source is not None else self.title.lower())

    def with_origin(
        self,
        *,
        source: Path | None,
        base_dir: Path,
        lines: dict[tuple[str | int, ...], int] | None = None,
    ) -> Story:
        self._source = source
        self._base_dir = base_dir
        self._lines = dict(lines or {})
        return self

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The YAML line of ``path``, or of its closest ancestor the loader saw."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None
