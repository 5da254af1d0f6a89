"""The wire contract between the videokit client and its workers.

One set of pydantic models: the SDK validates requests with them before anything is submitted (a bad
request never costs a GPU second), the in-process preview backend receives them unchanged, and the
GPU workers import this module to parse their job input. Keep it dependency-light: pydantic only.

Media travels as base64 when small, or by URL: inputs by (presigned) GET URL, outputs PUT by the
worker
to presigned URLs the client provides. Storage credentials never travel in a payload.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "MAX_FRAMES",
    "MAX_PROMPT_CHARS",
    "MAX_SIDE",
    "MIN_FRAMES",
    "MIN_SIDE",
    "PROTOCOL_VERSION",
    "AnimateRequest",
    "AnimateResult",
    "EditRequest",
    "EditResult",
    "MediaInput",
    "MediaOutput",
    "OutputTarget",
    "is_valid_frame_count",
    "nearest_frame_count",
    "uses_lightning_defaults",
]

PROTOCOL_VERSION = 1

MIN_SIDE = 128
MAX_SIDE = 1920
MAX_PIXELS = 1920 * 1088
MIN_FRAMES = 5
MAX_FRAMES = 241
MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1


def is_valid_frame_count(frames: int) -> bool:
    """Wan's VAE compresses time by 4, so clips have 4k+1 frames."""
    return frames >= 1 and (frames - 1) % 4 == 0


def nearest_frame_count(frames: float) -> int:
    """The 4k+1 count closest to ``frames`` (ties go up), clamped to the supported range."""
    k = int((frames - 1) / 4 + 0.5)
    return max(MIN_FRAMES, min(MAX_FRAMES, 4 * k + 1))


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MediaInput(_Wire):
    """An input file: inline base64, or a URL the worker may GET (http/https only)."""

    base64: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> MediaInput:
        if (self.base64 is None) == (self.url is None):
            raise ValueError("give exactly one of 'base64' or 'url'")
        return self

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError("only http(s) URLs are accepted")
        return url

    @classmethod
    def from_bytes(cls, data: bytes) -> MediaInput:
        return cls(base64=base64.b64encode(data).decode("ascii"))

    def decode(self) -> bytes:
        if self.base64 is None:
            raise ValueError("this input is a URL; fetch it instead of decoding it")
        return _b64decode(self.base64)

    def fingerprint(self) -> str:
        """Stable identity for cache keys: the content hash for inline data, else the URL."""
        if self.base64 is not None:
            return "sha256:" + hashlib.sha256(self.decode()).hexdigest()
        return "url:" + str(self.url)


class OutputTarget(_Wire):
    """Where the worker should PUT an output instead of returning it inline (presigned URL)."""

    put_url: str
    get_url: str | None = None
    content_type: str

    @field_validator("put_url", "get_url")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError("only http(s) URLs are accepted")
        return url


class MediaOutput(_Wire):
    """An output file: inline base64, or the URL it was uploaded to; always with its checksum."""

    base64: str | None = None
    url: str | None = None
    content_type: str
    size_bytes: int = Field(ge=0)
    sha256: str

    @classmethod
    def inline(cls, data: bytes, content_type: str) -> MediaOutput:
        return cls(
            base64=base64.b64encode(data).decode("ascii"),
            content_type=content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def decode(self) -> bytes:
        if self.base64 is None:
            raise ValueError("this output was uploaded; download it from its URL")
        data = _b64decode(self.base64)
        if hashlib.sha256(data).hexdigest() != self.sha256 or len(data) != self.size_bytes:
            raise ValueError("output does not match its size/checksum")
        return data


def _b64decode(text: str) -> bytes:
    # Accept data URLs ("data:image/png;base64,...") as the seed clients send them.
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


Prompt = Annotated[str, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]
NegativePrompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
Side = Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE, multiple_of=16)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

# Storage configuration in any spelling: the seeds' nested blocks (r2, s3, RunPod's s3Config) and
# the flattened names a client may send instead (access_key_id, r2_access_key, aws_session_token,
# accessSecret, ...). Names are compared in snake_case, so camelCase and dashes match too.
_SECRET_FIELDS = ("r2", "s3", "s3config", "s3_config", "r2_config", "aws", "storage_config")
_SECRET_PREFIXES = ("r2_", "s3_", "aws_")
_SECRET_WORDS = (
    "access_key",
    "access_id",
    "access_secret",
    "secret",
    "session_token",
    "security_token",
    "credential",
    "password",
)
_SECRET_HINT = (
    "storage credentials must never travel in a job payload (RunPod keeps job inputs): "
    "give presigned URLs in 'outputs' instead; the client creates them with its own keys"
)


def _snake(key: str) -> str:
    out: list[str] = []
    for i, char in enumerate(key):
        if char.isupper() and i and (key[i - 1].islower() or key[i - 1].isdigit()):
            out.append("_")
        out.append("_" if char in "-. " else char.lower())
    return "".join(out)


def _refuse_secrets(data: object) -> object:
    if isinstance(data, dict):
        for key in data:
            name = _snake(str(key))
            if (
                name in _SECRET_FIELDS
                or name.startswith(_SECRET_PREFIXES)
                or any(word in name for word in _SECRET_WORDS)
            ):
                raise ValueError(f"field {str(key)[:80]!r} is refused: {_SECRET_HINT}")
    return data


class EditRequest(_Wire):
    """Qwen-Image-Edit: edit ``images[0]`` following ``prompt``; extra images are references."""

    kind: Literal["edit"] = "edit"
    images: list[MediaInput] = Field(min_length=1, max_length=3)
    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    steps: int = Field(default=8, ge=1, le=100)
    true_cfg_scale: float = Field(default=1.0, ge=0.0, le=20.0)
    seed: Seed
    width: Side | None = None
    height: Side | None = None
    outputs: dict[Literal["image"], OutputTarget] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: object) -> object:
        return _refuse_secrets(data)

    @model_validator(mode="after")
    def _size_pair(self) -> EditRequest:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both 'width' and 'height', or neither")
        return self


class EditResult(_Wire):
    image: MediaOutput
    seed: int
    width: int
    height: int
    inference_ms: int = Field(ge=0)
    model: str
    peak_memory_bytes: int | None = None


class AnimateRequest(_Wire):
    """Wan2.2 image-to-video: animate ``image`` following ``prompt``."""

    kind: Literal["animate"] = "animate"
    image: MediaInput
    prompt: Prompt
    negative_prompt: NegativePrompt = ""
    width: Side = 832
    height: Side = 480
    frames: int = Field(default=81, ge=MIN_FRAMES, le=MAX_FRAMES)
    fps: int = Field(default=16, ge=1, le=60)
    steps: int = Field(default=4, ge=1, le=100)
    guidance_scale: float = Field(default=1.0, ge=0.0, le=20.0)
    guidance_scale_2: float | None = Field(default=None, ge=0.0, le=20.0)
    seed: Seed
    drop_first_frame: bool = False
    outputs: dict[Literal["video", "last_frame"], OutputTarget] = Field(default_factory=dict)
    #: A soundtrack that drives the clip, for sound-to-video endpoints (a ComfyUI graph that
    #: binds ``audio``); videokit's own workers take none.
    audio: MediaInput | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: object) -> object:
        return _refuse_secrets(data)

    @field_validator("frames")
    @classmethod
    def _four_k_plus_one(cls, frames: int) -> int:
        if not is_valid_frame_count(frames):
            raise ValueError(
                f"frames must be 4k+1 (Wan's VAE packs 4 frames per latent); "
                f"{frames} is not — use {nearest_frame_count(frames)}"
            )
        return frames

    @model_validator(mode="after")
    def _pixel_budget(self) -> AnimateRequest:
        if self.width * self.height > MAX_PIXELS:
            raise ValueError(f"{self.width}x{self.height} exceeds {MAX_PIXELS} pixels per frame")
        return self

    @property
    def output_frames(self) -> int:
        return self.frames - 1 if self.drop_first_frame else self.frames


class AnimateResult(_Wire):
    video: MediaOutput
    last_frame: MediaOutput
    # "decoded": the endpoint returned only the clip, and the client decoded its last frame from
    # the compressed video (so the next scene starts from a frame that went through the codec).
    last_frame_source: Literal["worker", "decoded"] = "worker"
    seed: int
    frames: int
    fps: int
    width: int
    height: int
    inference_ms: int = Field(ge=0)
    model: str
    peak_memory_bytes: int | None = None


def uses_lightning_defaults(request: EditRequest | AnimateRequest) -> bool:
    """Whether the request left its steps and guidance at these models' defaults, which are the
    Lightning settings: a standard-mode worker reads that as "not chosen" and runs the model's
    reference settings instead (the client's estimates assume the same)."""
    names = (
        ("steps", "guidance_scale", "guidance_scale_2")
        if isinstance(request, AnimateRequest)
        else ("steps", "true_cfg_scale")
    )
    fields = type(request).model_fields
    return all(getattr(request, name) == fields[name].default for name in names)
