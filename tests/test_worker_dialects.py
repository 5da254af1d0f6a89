"""The older workers' dialects (videokit.dialects): each answered in its own shape, within its limits.

Jobs run through the real handler and the preview engine (see tests/test_worker.py, whose helpers
and seed-document examples are reused here); the output models are checked against what the
worker writes, so the client and the worker read one definition.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from tests.test_worker import (
    COMFY_WAN_EXAMPLE,
    LIGHTX2V_EXAMPLE,
    LIGHTX2V_OUTPUT_KEYS,
    PNG_B64,
    QWEN_EDIT_EXAMPLE,
    QWEN_EDIT_OUTPUT_KEYS,
    _decode_video,
    _handler,
    _invalid,
    _run,
)
from videokit.backends.base import JobContext
from videokit.dialects import (
    COMFY_WAN_DEFAULTS,
    COMFY_WAN_LIMITS,
    INPUT_MODELS,
    OUTPUT_MODELS,
    ComfyWanInput,
    ComfyWanOutput,
    DialectName,
    LightX2VInput,
    LightX2VOutput,
    QwenEditOutput,
    comfy_wan_problems,
)
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
)
from videokit.worker import format_output, load_engine, parse_job_input

COMFY_WAN_DOCUMENT: dict[str, Any] = {**COMFY_WAN_EXAMPLE, "image_base64": PNG_B64}
LIGHTX2V_DOCUMENT: dict[str, Any] = {k: v for k, v in LIGHTX2V_EXAMPLE.items() if k != "r2"}


# -- comfy-wan-worker: its own output shape --------------------------------------------------------


def test_a_comfy_wan_document_is_answered_with_video_base64_and_metadata() -> None:
    document = {
        **COMFY_WAN_DOCUMENT,
        "width": 256,
        "height": 320,
        "frames": 9,
        "fps": 8,
        "cfg": 2.5,
        "steps": 3,
        "seed": 5,
    }
    out = _run(_handler("animate"), document)

    assert set(out) == {"video_base64", "metadata"}
    assert out["metadata"] == {
        "width": 256,
        "height": 320,
        "frames": 9,
        "fps": 8,
        "cfg": 2.5,
        "steps": 3,
        "seed": 5,
    }
    assert _decode_video(base64.b64decode(out["video_base64"]), 256, 320).shape[0] == 9
    parsed = ComfyWanOutput.model_validate(out)
    assert parsed.metadata.seed == 5 and parsed.video_url is None


def test_comfy_wan_defaults_are_its_documented_ones() -> None:
    request, style = parse_job_input("animate", {"prompt": "p", "image_url": "https://a.example/x"})
    assert style == "comfy-wan-worker" and isinstance(request, AnimateRequest)
    assert (request.width, request.height, request.frames, request.fps) == (512, 512, 33, 16)
    assert (request.guidance_scale, request.steps) == (COMFY_WAN_DEFAULTS.cfg, 4)
    assert request.negative_prompt == COMFY_WAN_DEFAULTS.negative_prompt


@pytest.mark.parametrize(
    ("field", "value", "nearest"),
    [
        ("width", 1088, "1024"),
        ("width", 500, "512"),
        ("height", 200, "256"),
        ("frames", 80, "81"),
        ("frames", 129, "121"),
        ("cfg", 0, "0.1"),
        ("steps", 51, "50"),
        ("fps", 61, "60"),
        ("prompt", "x" * 1001, "1000"),
    ],
)
def test_each_documented_comfy_wan_limit_is_refused_naming_the_field(
    field: str, value: object, nearest: str
) -> None:
    message = _invalid(_handler("animate"), {**COMFY_WAN_DOCUMENT, field: value})
    assert message.startswith(f"invalid input: {field}: must be "), message
    assert f"(nearest allowed: {nearest})" in message
    assert "x" * 100 not in message  # the prompt itself is not echoed


def test_comfy_wan_problems_lists_every_problem_with_the_nearest_allowed_value() -> None:
    defaults = COMFY_WAN_DEFAULTS
    assert (
        comfy_wan_problems(
            prompt="p",
            width=defaults.width,
            height=defaults.height,
            frames=defaults.frames,
            fps=defaults.fps,
            cfg=defaults.cfg,
            steps=defaults.steps,
        )
        == []
    )
    problems = dict(comfy_wan_problems(prompt="", width=1000, height=64, frames=10, cfg=25.0))
    assert set(problems) == {"prompt", "width", "height", "frames", "cfg"}
    assert problems["width"].endswith("got 1000 (nearest allowed: 1024)")
    assert problems["height"].endswith("got 64 (nearest allowed: 256)")
    assert problems["frames"].endswith("got 10 (nearest allowed: 9)")
    assert problems["cfg"].endswith("(nearest allowed: 20.0)")
    assert problems["prompt"].startswith("must be 1 to 1000 characters long, got 0")
    # The limits are the documented ones.
    assert (COMFY_WAN_LIMITS.side, COMFY_WAN_LIMITS.side_multiple) == ((256, 1024), 64)
    assert (COMFY_WAN_LIMITS.frames, COMFY_WAN_LIMITS.frame_step) == ((9, 121), 8)


def test_a_client_built_comfy_wan_request_is_checked_and_accepted_by_the_worker() -> None:
    with pytest.raises(ValidationError, match="multiple of 64"):
        ComfyWanInput(prompt="p", image_url="https://a.example/x.png", width=500)
    with pytest.raises(ValidationError, match="exactly one"):
        ComfyWanInput(prompt="p", image_url="https://a.example/x.png", image_base64=PNG_B64)

    built = ComfyWanInput(prompt="p", image_base64=PNG_B64, frames=17, seed=9)
    payload = built.model_dump(mode="json", exclude_none=True)
    request, style = parse_job_input("animate", payload)
    assert style == "comfy-wan-worker" and request == built.to_request()
    assert isinstance(request, AnimateRequest) and (request.frames, request.seed) == (17, 9)


# -- lightx2v-worker and qwen-edit-worker: shapes unchanged ----------------------------------------


def test_a_lightx2v_document_still_gets_the_lightx2v_shape() -> None:
    out = _run(_handler("animate"), {**LIGHTX2V_DOCUMENT, "num_frames": 9, "width": 256})
    assert set(out) == LIGHTX2V_OUTPUT_KEYS and out["resolution"] == "256x480"
    assert LightX2VOutput.model_validate(out).model_dump(exclude_none=True) == out

    built = LightX2VInput(image_base64=PNG_B64, prompt="p")
    request, style = parse_job_input("animate", built.model_dump(exclude_none=True))
    assert style == "lightx2v-worker" and isinstance(request, AnimateRequest)
    assert (request.frames, request.width, request.height) == (81, 832, 480)


def test_the_qwen_edit_shape_is_unchanged() -> None:
    out = _run(_handler("edit"), QWEN_EDIT_EXAMPLE)
    assert set(out) == QWEN_EDIT_OUTPUT_KEYS and out["success"] is True
    assert QwenEditOutput.model_validate(out).model_dump(exclude_none=True) == out


# -- output models: a round trip through format_output ---------------------------------------------


def _results() -> tuple[AnimateRequest, AnimateResult, EditResult]:
    animate = AnimateRequest(
        image=MediaInput(base64=PNG_B64), prompt="p", width=256, height=144, frames=9, seed=3
    )
    edit = EditRequest(images=[MediaInput(base64=PNG_B64)], prompt="p", seed=4)
    clip = asyncio.run(
        load_engine("animate", "preview").animate(animate, JobContext("s", "animate"))
    )
    card = asyncio.run(load_engine("edit", "preview").edit(edit, JobContext("s", "edit")))
    return animate, clip, card


def _uploaded(media: MediaOutput) -> MediaOutput:
    return media.model_copy(update={"base64": None, "url": "https://bucket.example/out"})


@pytest.mark.parametrize("uploaded", [False, True], ids=["inline", "uploaded"])
@pytest.mark.parametrize("peak", [None, 41 * 2**30], ids=["cpu", "gpu"])
def test_the_output_models_parse_what_format_output_writes(
    uploaded: bool, peak: int | None
) -> None:
    request, clip, card = _results()
    clip = clip.model_copy(update={"peak_memory_bytes": peak})
    card = card.model_copy(update={"peak_memory_bytes": peak})
    if uploaded:
        clip = clip.model_copy(
            update={"video": _uploaded(clip.video), "last_frame": _uploaded(clip.last_frame)}
        )
        card = card.model_copy(update={"image": _uploaded(card.image)})
    styles: list[tuple[DialectName, AnimateResult | EditResult]] = [
        ("lightx2v-worker", clip),
        ("comfy-wan-worker", clip),
        ("qwen-edit-worker", card),
    ]
    for style, result in styles:
        out = format_output(result, style, request)
        model: type[BaseModel] = OUTPUT_MODELS[style]
        assert model.model_validate(out).model_dump(mode="json", exclude_none=True) == out
        assert ("peak_memory_bytes" in out) is (peak is not None)
        media = "edited_image" if style == "qwen-edit-worker" else "video"
        assert (f"{media}_url" in out) is uploaded and (f"{media}_base64" in out) is not uploaded

    comfy = ComfyWanOutput.model_validate(format_output(clip, "comfy-wan-worker", request))
    assert (comfy.metadata.cfg, comfy.metadata.steps, comfy.metadata.seed) == (1.0, 4, 3)
    assert set(INPUT_MODELS) == set(OUTPUT_MODELS)


def test_each_input_model_maps_every_field_it_has() -> None:
    for model in INPUT_MODELS.values():
        assert list(model.NATIVE_NAMES) == list(model.model_fields), model.__name__


def test_the_comfy_wan_output_needs_the_request_it_answers() -> None:
    _, clip, card = _results()
    with pytest.raises(ValueError, match="needs the animate request"):
        format_output(clip, "comfy-wan-worker")
    with pytest.raises(ValueError, match="cannot be written as comfy-wan-worker"):
        format_output(card, "comfy-wan-worker")
