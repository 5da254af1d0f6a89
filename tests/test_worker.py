"""The worker core: dialects, SSRF-safe fetching, the engine registry and the job handler.

Everything runs the real code: the preview engine renders real PNGs and MP4s (small sizes), URL
inputs are served and presigned uploads received by a loopback HTTP server started here, and the
only stand-in engines are the ones that must fail on purpose (out of memory, a plain bug).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import ssl
import struct
import subprocess
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from videokit.backends.base import JobContext, Stage
from videokit.dialects import COMFY_WAN_NEGATIVE_PROMPT
from videokit.errors import ConfigError
from videokit.media.ffmpeg import ffmpeg_exe
from videokit.media.images import decode_png_array, encode_png
from videokit.protocol import (
    MAX_SEED,
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
)
from videokit.worker import (
    FetchRefused,
    JobInputError,
    Warmup,
    WorkerOOMError,
    engine_from_env,
    fetch_url,
    format_output,
    is_cuda_oom,
    load_engine,
    make_handler,
    parse_job_input,
    run_local,
)
from videokit.worker.engines import PaddedEngine
from videokit.worker.fetch import address_refusal, redact_url, resolve_target

# -- fixtures: pictures, a loopback HTTP server ----------------------------------------------------


def _picture_png(width: int = 96, height: int = 64, tint: int = 40) -> bytes:
    img = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(img)
    for y in range(height):
        draw.line([(0, y), (width, y)], fill=(30 + 150 * y // height, 90, 200 - tint))
    draw.ellipse((width // 3, height // 4, width // 2, height // 2), fill=(250, 200, 40))
    return encode_png(img)


PNG = _picture_png()
PNG_B64 = base64.b64encode(PNG).decode("ascii")
REF_B64 = base64.b64encode(_picture_png(64, 64, tint=120)).decode("ascii")


def _png_with_header(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR claims ``width``×``height`` (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class LoopbackServer:
    """A stdlib HTTP server on 127.0.0.1: GET routes, and PUTs recorded (body + Content-Type)."""

    routes: dict[str, Route] = field(default_factory=dict)
    puts: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Host header
    port: int = 0
    scheme: str = "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


def _serve(server_state: LoopbackServer, tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return None

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            server_state.seen.append(("GET", self.path, self.headers.get("Host", "")))
            route = server_state.routes.get(path)
            try:
                if route is None:
                    self.send_error(404)
                else:
                    route(self)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the client hung up on purpose (size cap, timeout)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            server_state.seen.append(("PUT", self.path, self.headers.get("Host", "")))
            server_state.puts[self.path.split("?", 1)[0]] = (
                self.headers.get("Content-Type", ""),
                body,
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True  # slow routes must not hold up shutdown
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        server_state.scheme = "https"
    server_state.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def _send(
    body: bytes, content_type: str = "image/png", status: int = 200
) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def _redirect(location: str) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def _claims_huge(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Content-Length", str(500 * 2**20))
    h.end_headers()
    h.wfile.write(b"\0" * 1024)


def _streams_forever(h: BaseHTTPRequestHandler) -> None:
    # HTTP/1.0 without Content-Length: the body runs until the server closes (or the client quits).
    h.send_response(200)
    h.end_headers()
    for _ in range(200):
        h.wfile.write(b"\0" * 65536)


def _slow(h: BaseHTTPRequestHandler) -> None:
    time.sleep(3)
    _send(PNG)(h)


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    state = LoopbackServer()
    state.routes.update(
        {
            "/image.png": _send(PNG),
            "/ref.png": _send(base64.b64decode(REF_B64)),
            "/page.html": _send(b"<html><body>Not Found</body></html>", "text/html"),
            "/bomb.png": _send(_png_with_header(100_000, 100_000)),
            "/redirect-to-image": _redirect("/image.png"),
            "/redirect-to-metadata": _redirect("http://169.254.169.254/latest/meta-data/"),
            "/redirect-to-file": _redirect("file:///etc/passwd"),
            "/loop": _redirect("/loop"),
            "/claims-huge": _claims_huge,
            "/streams-forever": _streams_forever,
            "/slow": _slow,
            "/missing": _send(b"gone", "text/plain", status=404),
        }
    )
    httpd = _serve(state)
    yield state
    httpd.shutdown()
    httpd.server_close()


# -- helpers ---------------------------------------------------------------------------------------


def _job(document: object, job_id: str = "job-1") -> dict[str, Any]:
    return {"id": job_id, "input": document}


def _run(handler: Callable[[dict[str, Any]], Any], document: object) -> dict[str, Any]:
    result: dict[str, Any] = asyncio.run(handler(_job(document)))
    return result


def _handler(stage: Stage, **options: Any) -> Callable[[dict[str, Any]], Any]:
    options.setdefault("env", {})
    return make_handler(stage, load_engine(stage, "preview", concurrency=2), **options)


def _invalid(handler: Callable[[dict[str, Any]], Any], document: object) -> str:
    with pytest.raises(JobInputError) as caught:
        _run(handler, document)
    message = str(caught.value)
    assert message.startswith("invalid input: "), message
    # One readable message: no pydantic dump, no echo of the payload.
    assert "pydantic" not in message and "input_value" not in message, message
    assert PNG_B64[:40] not in message, message
    return message


def _decode_video(video: bytes, width: int, height: int) -> npt.NDArray[np.uint8]:
    proc = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        input=video,
        capture_output=True,
        check=True,
    )
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, height, width, 3)


SEEDS = Path(__file__).parent / "fixtures" / "seeds"  # verbatim copies; see the README there


def _seed_document(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((SEEDS / name).read_text(encoding="utf-8"))
    return document


# The LightX2V worker's output example (seed 001) names the fields its requests get back.
LIGHTX2V_OUTPUT_KEYS = set(_seed_document("seed001_i2v_output.json"))
QWEN_EDIT_OUTPUT_KEYS = {
    "success",
    "edited_image_base64",
    "seed",
    "inference_time_ms",
    "width",
    "height",
}


# -- native requests -------------------------------------------------------------------------------


def test_native_animate_returns_a_decodable_clip_of_the_requested_shape() -> None:
    request = AnimateRequest(
        image=MediaInput(base64=PNG_B64),
        prompt="the lantern sways, camera pans right",
        width=256,
        height=144,
        frames=9,
        fps=12,
        seed=5,
    )
    lines: list[str] = []
    handler = _handler("animate", log=lines.append)
    out = _run(handler, request.model_dump(mode="json"))

    result = AnimateResult.model_validate(out)
    assert (result.frames, result.fps, result.width, result.height, result.seed) == (
        9,
        12,
        256,
        144,
        5,
    )
    assert result.model == "preview/animatic@2"
    frames = _decode_video(result.video.decode(), 256, 144)  # decode() checks size and sha256
    assert frames.shape[0] == 9
    assert decode_png_array(result.last_frame.decode()).shape == (144, 256, 3)

    (line,) = lines
    record = json.loads(line)
    assert record["job_id"] == "job-1" and record["stage"] == "animate"
    assert record["style"] == "native" and record["status"] == "ok"
    assert record["output_bytes"]["video"] == result.video.size_bytes
    assert {"inputs", "engine", "total"} <= set(record["timings_ms"])
    assert PNG_B64[:40] not in line and "lantern" not in line  # no payload, no prompt


def test_native_edit_returns_a_card_of_the_requested_size() -> None:
    request = EditRequest(
        images=[MediaInput(base64=PNG_B64), MediaInput(base64=REF_B64)],
        prompt="make it night",
        seed=11,
        width=256,
        height=144,
    )
    out = _run(_handler("edit"), request.model_dump(mode="json"))
    result = EditResult.model_validate(out)
    assert (result.width, result.height, result.seed) == (256, 144, 11)
    assert decode_png_array(result.image.decode()).shape == (144, 256, 3)


def test_native_request_for_the_other_stage_is_refused() -> None:
    request = EditRequest(images=[MediaInput(base64=PNG_B64)], prompt="x", seed=1)
    message = _invalid(_handler("animate"), request.model_dump(mode="json"))
    assert "animate worker" in message and "'edit'" in message


def test_native_validation_errors_are_one_readable_line() -> None:
    document = {
        "kind": "animate",
        "image": {"base64": PNG_B64},
        "prompt": "x",
        "seed": 1,
        "frames": 80,
        "width": 500,
        "surprise": True,
    }
    message = _invalid(_handler("animate"), document)
    assert "frames: frames must be 4k+1" in message and "use 81" in message
    assert "width: Input should be a multiple of 16" in message
    assert "surprise: unknown field" in message
    assert "\n" not in message.split("hint:")[0].strip()


# -- lightx2v-worker (seed 001) --------------------------------------------------------------------


def _lightx2v_example() -> dict[str, Any]:
    """The LightX2V worker's example request (seed 001's API reference), with a real image."""
    document = _seed_document("seed001_i2v_input.json")["input"]
    assert document["image_base64"] == "<base64 encoded image>"
    return {**document, "image_base64": PNG_B64}


LIGHTX2V_EXAMPLE: dict[str, Any] = _lightx2v_example()


def test_lightx2v_example_with_r2_credentials_is_refused_with_the_presigned_url_explanation() -> (
    None
):
    message = _invalid(_handler("animate"), LIGHTX2V_EXAMPLE)
    assert "'r2' is refused" in message
    assert "presigned URLs" in message and "outputs" in message


def test_lightx2v_example_without_r2_answers_in_the_lightx2v_shape() -> None:
    document = {k: v for k, v in LIGHTX2V_EXAMPLE.items() if k != "r2"}
    request, style = parse_job_input("animate", document)
    assert style == "lightx2v-worker" and isinstance(request, AnimateRequest)
    assert (request.frames, request.steps, request.guidance_scale) == (81, 40, 5.0)
    assert request.negative_prompt == "blurry, distorted, static"

    out = _run(_handler("animate"), document)
    assert set(out) == LIGHTX2V_OUTPUT_KEYS
    assert out["success"] is True
    assert (out["seed"], out["num_frames"], out["fps"], out["resolution"]) == (
        42,
        81,
        16,
        "832x480",
    )
    video = base64.b64decode(out["video_base64"])
    assert out["video_size_bytes"] == len(video)
    assert isinstance(out["inference_time_ms"], int)
    assert decode_png_array(base64.b64decode(out["last_frame_base64"])).shape == (480, 832, 3)


def test_lightx2v_defaults_follow_the_dialect_for_shape_and_the_engine_for_sampling() -> None:
    request, _ = parse_job_input("animate", {"image_base64": PNG_B64, "prompt": "p"})
    assert isinstance(request, AnimateRequest)
    assert (request.width, request.height, request.frames, request.fps) == (832, 480, 81, 16)
    assert request.negative_prompt == ""
    native = AnimateRequest.model_fields
    assert request.steps == native["steps"].default
    assert request.guidance_scale == native["guidance_scale"].default
    assert 0 <= request.seed <= MAX_SEED  # no seed: a random one


def test_lightx2v_unknown_and_mistyped_fields_are_named() -> None:
    handler = _handler("animate")
    message = _invalid(handler, {"image_base64": PNG_B64, "prompt": "p", "num_frame": 81})
    assert "num_frame: unknown field (did you mean 'num_frames'?)" in message

    message = _invalid(handler, {"image_base64": PNG_B64, "prompt": "p", "num_frames": 80})
    assert message.startswith("invalid input: num_frames: frames must be 4k+1")

    message = _invalid(handler, {"image_base64": PNG_B64, "num_frames": 81})
    assert "prompt: required" in message

    message = _invalid(
        handler, {"image_base64": PNG_B64, "prompt": "p", "frames": 33, "num_frames": 81}
    )
    assert "mix two request formats" in message

    # A native field name without "kind" gets a pointer to the native format.
    with pytest.raises(JobInputError) as caught:
        _run(handler, {"image": {"base64": PNG_B64}, "prompt": "p"})
    assert "image: unknown field" in str(caught.value) and '"kind": "animate"' in str(caught.value)


# -- comfy-wan-worker (seed 000) -------------------------------------------------------------------


def _comfy_wan_example() -> dict[str, Any]:
    """The ComfyUI worker's input schema example (seed 000). Its string fields are type
    descriptions, not values: the prompt gets a real one, the image fields are left for each test
    to choose (one of the two), and the optional negative prompt is dropped so that its documented
    default applies."""
    document = _seed_document("seed000_input_schema.json")["input"]
    placeholders = {"prompt", "image_url", "image_base64", "negative_prompt"}
    assert {k for k, v in document.items() if str(v).startswith("string (")} == placeholders
    example = {k: v for k, v in document.items() if k not in placeholders}
    return {**example, "prompt": "A knight swings his sword"}


COMFY_WAN_EXAMPLE: dict[str, Any] = _comfy_wan_example()


def _check_comfy_wan_output(out: dict[str, Any]) -> None:
    # The ComfyUI worker's own output shape, plus the seed (an extension) inside its metadata.
    assert set(out) == {"video_base64", "metadata"}
    metadata = dict(out["metadata"])
    assert 0 <= metadata.pop("seed") <= MAX_SEED  # the original had no seed: a random one, reported
    assert metadata == dict(width=512, height=512, frames=33, fps=16, cfg=1.0, steps=4)
    frames = _decode_video(base64.b64decode(out["video_base64"]), 512, 512)
    assert frames.shape[0] == 33


def test_comfy_wan_example_with_image_base64() -> None:
    document = {**COMFY_WAN_EXAMPLE, "image_base64": PNG_B64}
    request, style = parse_job_input("animate", document)
    assert style == "comfy-wan-worker" and isinstance(request, AnimateRequest)
    assert request.negative_prompt == COMFY_WAN_NEGATIVE_PROMPT
    assert (request.guidance_scale, request.steps, request.frames) == (1.0, 4, 33)
    _check_comfy_wan_output(_run(_handler("animate"), document))


def test_comfy_wan_example_with_image_url_from_a_loopback_server(server: LoopbackServer) -> None:
    document = {**COMFY_WAN_EXAMPLE, "image_url": server.url("/image.png?X-Amz-Signature=s3cr3t")}
    lines: list[str] = []
    out = _run(_handler("animate", allow_private_urls=True, log=lines.append), document)
    _check_comfy_wan_output(out)
    record = json.loads(lines[0])
    assert record["input_hosts"] == ["127.0.0.1"] and "s3cr3t" not in lines[0]

    # Without the opt-in, a loopback URL is refused before anything is fetched.
    message = _invalid(_handler("animate"), document)
    assert message.startswith("invalid input: image_url: ") and "loopback" in message
    assert "s3cr3t" not in message


def test_comfy_wan_needs_exactly_one_image() -> None:
    handler = _handler("animate")
    both = {**COMFY_WAN_EXAMPLE, "image_base64": PNG_B64, "image_url": "https://example.com/a.png"}
    assert "exactly one of 'image_url' or 'image_base64'" in _invalid(handler, both)
    assert "image_base64: required" in _invalid(handler, dict(COMFY_WAN_EXAMPLE))


def test_allow_private_urls_is_read_from_the_environment_when_the_handler_is_made(
    server: LoopbackServer,
) -> None:
    document = {**COMFY_WAN_EXAMPLE, "image_url": server.url("/image.png"), "frames": 9}
    allowed = _handler("animate", env={"VIDEOKIT_ALLOW_PRIVATE_URLS": "1"})
    assert _run(allowed, document)["metadata"]["frames"] == 9
    assert "loopback" in _invalid(
        _handler("animate", env={"VIDEOKIT_ALLOW_PRIVATE_URLS": "0"}), document
    )


# -- qwen-edit-worker (seed 003) -------------------------------------------------------------------

# The Qwen-Edit worker (seed 003) documents no example payload (only its field names; see
# tests/fixtures/seeds/README.md), so this one is constructed from those fields.
QWEN_EDIT_EXAMPLE: dict[str, Any] = {
    "image_base64": PNG_B64,
    "images_base64": [REF_B64],
    "prompt": "Professional CEO, navy suit, standing in a glass office, soft daylight",
    "negative_prompt": "blurry",
    "num_inference_steps": 8,
    "guidance_scale": 1.0,
    "seed": 7,
}


def test_qwen_edit_example_answers_with_edited_image_base64() -> None:
    request, style = parse_job_input("edit", QWEN_EDIT_EXAMPLE)
    assert style == "qwen-edit-worker" and isinstance(request, EditRequest)
    assert (len(request.images), request.steps, request.true_cfg_scale) == (2, 8, 1.0)

    out = _run(_handler("edit"), QWEN_EDIT_EXAMPLE)
    assert set(out) == QWEN_EDIT_OUTPUT_KEYS
    assert out["success"] is True and out["seed"] == 7
    picture = decode_png_array(base64.b64decode(out["edited_image_base64"]))
    assert picture.shape == (out["height"], out["width"], 3)


def test_qwen_edit_random_seed_is_reported_and_reproduces_the_image() -> None:
    handler = _handler("edit")
    document = {k: v for k, v in QWEN_EDIT_EXAMPLE.items() if k != "seed"}
    first = _run(handler, document)
    again = _run(handler, {**document, "seed": first["seed"]})
    assert again["edited_image_base64"] == first["edited_image_base64"]


def test_qwen_edit_limits_and_typos() -> None:
    handler = _handler("edit")
    too_many = {**QWEN_EDIT_EXAMPLE, "images_base64": [REF_B64, REF_B64, REF_B64]}
    assert "at most 3 images in total" in _invalid(handler, too_many)
    message = _invalid(handler, {**QWEN_EDIT_EXAMPLE, "guidance": 4.0})
    assert "guidance: unknown field (did you mean 'guidance_scale'?)" in message
    message = _invalid(handler, {**QWEN_EDIT_EXAMPLE, "guidance_scale": 50})
    assert message.startswith(
        "invalid input: guidance_scale: Input should be less than or equal to 20"
    )
    message = _invalid(handler, {**QWEN_EDIT_EXAMPLE, "images_base64": [REF_B64, "@@@"]})
    assert message.startswith("invalid input: images_base64[1]: invalid base64")


def test_run_local_runs_one_document() -> None:
    out = run_local("edit", load_engine("edit", "preview"), QWEN_EDIT_EXAMPLE, env={})
    assert set(out) == QWEN_EDIT_OUTPUT_KEYS


# -- warmup ----------------------------------------------------------------------------------------


def test_warmup_answers_with_the_engine_identity() -> None:
    assert parse_job_input("animate", {"warmup": True}) == (Warmup(), "native")
    assert _run(_handler("animate"), {"warmup": True}) == {
        "warm": True,
        "model": "preview/animatic@2",
    }
    assert _run(_handler("edit"), {"warmup": True}) == {
        "warm": True,
        "model": "preview/storyboard@2",
    }
    assert "warmup job" in _invalid(_handler("edit"), {"warmup": True, "prompt": "x"})


def test_a_non_object_input_is_refused() -> None:
    assert "must be a JSON object" in _invalid(_handler("edit"), ["not", "an", "object"])
    assert "must be a JSON object" in _invalid(_handler("edit"), None)


# -- bad images: refused, and the worker keeps going -----------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"just words, not pixels", "this is text, not an image"),
        (_png_with_header(100_000, 100_000), "pixels"),
        (_png_with_header(8000, 6000), "over the limit"),
    ],
)
def test_bad_images_are_input_errors_and_the_handler_keeps_working(
    data: bytes, reason: str
) -> None:
    handler = _handler("edit")
    bad = {**QWEN_EDIT_EXAMPLE, "image_base64": base64.b64encode(data).decode()}
    message = _invalid(handler, bad)
    assert message.startswith("invalid input: image_base64: ") and reason in message
    assert set(_run(handler, QWEN_EDIT_EXAMPLE)) == QWEN_EDIT_OUTPUT_KEYS


def test_bad_images_by_url_are_input_errors(server: LoopbackServer) -> None:
    handler = _handler("animate", allow_private_urls=True)
    for path, reason in [
        ("/page.html", "text document"),
        ("/bomb.png", "pixels"),
        ("/missing", "HTTP 404"),
    ]:
        document = {**COMFY_WAN_EXAMPLE, "image_url": server.url(path)}
        message = _invalid(handler, document)
        assert message.startswith("invalid input: image_url: ") and reason in message, message


def test_the_pixel_limit_is_configurable() -> None:
    handler = _handler("edit", max_image_pixels=50 * 50)
    assert "over the limit of 2,500" in _invalid(handler, QWEN_EDIT_EXAMPLE)


# -- presigned uploads -----------------------------------------------------------------------------


def test_outputs_with_targets_are_uploaded_and_returned_as_urls(server: LoopbackServer) -> None:
    request = AnimateRequest(
        image=MediaInput(base64=PNG_B64),
        prompt="slow push in",
        width=256,
        height=144,
        frames=9,
        seed=3,
        outputs={
            "video": {
                "put_url": server.url("/put/clip.mp4?X-Amz-Signature=s3cr3t"),
                "get_url": server.url("/get/clip.mp4?X-Amz-Signature=s3cr3t"),
                "content_type": "video/mp4",
            },
            "last_frame": {
                "put_url": server.url("/put/last.png?X-Amz-Signature=s3cr3t"),
                "content_type": "image/png",
            },
        },
    )
    lines: list[str] = []
    handler = _handler("animate", allow_private_urls=True, log=lines.append)
    result = AnimateResult.model_validate(_run(handler, request.model_dump(mode="json")))

    content_type, video = server.puts["/put/clip.mp4"]
    assert content_type == "video/mp4"
    assert result.video.base64 is None
    assert result.video.url == server.url("/get/clip.mp4?X-Amz-Signature=s3cr3t")
    assert result.video.size_bytes == len(video)
    assert result.video.sha256 == hashlib.sha256(video).hexdigest()
    assert _decode_video(video, 256, 144).shape[0] == 9

    content_type, last = server.puts["/put/last.png"]
    assert content_type == "image/png"
    assert result.last_frame.url is not None and result.last_frame.base64 is None
    assert result.last_frame.sha256 == hashlib.sha256(last).hexdigest()
    assert decode_png_array(last).shape == (144, 256, 3)

    record = json.loads(lines[0])
    assert record["uploaded"] == ["video", "last_frame"] and "s3cr3t" not in lines[0]


def test_dialect_output_names_uploaded_media_by_url(server: LoopbackServer) -> None:
    document = {
        **QWEN_EDIT_EXAMPLE,
        "outputs": {
            "image": {
                "put_url": server.url("/put/edited.png?sig=1", host="localhost"),
                "content_type": "image/png",
            }
        },
    }
    before = len(server.seen)
    out = _run(_handler("edit", allow_private_urls=True), document)
    assert "edited_image_base64" not in out
    assert out["edited_image_url"] == server.url("/put/edited.png", host="localhost")
    assert server.puts["/put/edited.png"][0] == "image/png"
    # Connected to the checked address (the server listens on 127.0.0.1 only), named by Host.
    assert ("PUT", "/put/edited.png?sig=1", f"localhost:{server.port}") in server.seen[before:]


def test_upload_targets_on_private_addresses_are_refused_before_the_engine_runs() -> None:
    request = EditRequest(
        images=[MediaInput(base64=PNG_B64)],
        prompt="x",
        seed=1,
        outputs={
            "image": {"put_url": "http://10.0.0.1/put/x.png?sig=1", "content_type": "image/png"}
        },
    )
    lines: list[str] = []
    message = _invalid(_handler("edit", log=lines.append), request.model_dump(mode="json"))
    assert message.startswith("invalid input: outputs.image.put_url: ") and "private" in message
    assert "engine" not in json.loads(lines[0])["timings_ms"]


# -- fetch: SSRF refusals --------------------------------------------------------------------------


def _refused(url: str, **options: Any) -> str:
    with pytest.raises(FetchRefused) as caught:
        asyncio.run(fetch_url(url, **options))
    return str(caught.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.com/a.png", "only http and https"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.0.0.1:8080/a.png?X-Amz-Signature=s3cr3t", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://100.64.0.1/", "not a public"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("http://localhost/", "localhost resolves to"),
    ],
)
def test_private_and_non_http_urls_are_refused(url: str, reason: str) -> None:
    message = _refused(url)
    assert reason in message, message
    assert "s3cr3t" not in message


def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed() -> None:
    assert "metadata" in _refused("http://169.254.169.254/latest/", allow_private=True)
    assert "metadata" in _refused("http://[::ffff:169.254.169.254]/", allow_private=True)


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
        ("::ffff:8.8.8.8", None),
        ("::ffff:10.1.2.3", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 form of 169.254.169.254
        ("64:ff9b::808:808", None),
        ("2002:7f00:1::", "tunnel address to 127.0.0.1"),  # 6to4
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "private"),
        ("fd00:ec2::254", "metadata"),
    ],
)
def test_address_policy(address: str, refused: str | None) -> None:
    reason = address_refusal(ipaddress.ip_address(address))
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_a_redirect_to_a_private_address_is_refused_at_the_redirect(server: LoopbackServer) -> None:
    # The first hop is allowed (loopback, opted in); the redirect target is checked again.
    message = _refused(server.url("/redirect-to-metadata"), allow_private=True)
    assert (
        "redirected to http://169.254.169.254/latest/meta-data/" in message
        and "metadata" in message
    )
    message = _refused(server.url("/redirect-to-file"), allow_private=True)
    assert "redirected to" in message and "only http and https" in message
    # The check each hop goes through refuses private addresses without the opt-in.
    with pytest.raises(FetchRefused, match="private"):
        asyncio.run(resolve_target("http://10.0.0.1/next", allow_private=False))


def test_redirects_are_followed_up_to_the_limit(server: LoopbackServer) -> None:
    assert asyncio.run(fetch_url(server.url("/redirect-to-image"), allow_private=True)) == PNG
    assert "more than 3 redirects" in _refused(server.url("/loop"), allow_private=True)


def test_oversize_responses_are_refused(server: LoopbackServer) -> None:
    message = _refused(server.url("/claims-huge"), allow_private=True, max_bytes=100_000)
    assert "524,288,000 bytes, over the limit of 100,000" in message
    message = _refused(server.url("/streams-forever"), allow_private=True, max_bytes=100_000)
    assert "over the limit of 100,000 bytes" in message


def test_a_slow_server_times_out_within_the_whole_fetch_budget(server: LoopbackServer) -> None:
    started = time.monotonic()
    message = _refused(server.url("/slow"), allow_private=True, timeout=0.4)
    assert "0.4 s" in message or "timed out" in message
    assert time.monotonic() - started < 2.0


def test_fetch_connects_to_the_validated_address_with_the_original_host_header(
    server: LoopbackServer,
) -> None:
    url = f"http://localhost:{server.port}/image.png"
    target = asyncio.run(resolve_target(url, allow_private=True))
    assert ipaddress.ip_address("127.0.0.1") in target.addresses
    pinned = target.request_url(ipaddress.ip_address("127.0.0.1"))
    assert pinned.host == "127.0.0.1" and target.headers()["Host"] == f"localhost:{server.port}"

    before = len(server.seen)
    assert asyncio.run(fetch_url(url, allow_private=True)) == PNG
    assert ("GET", "/image.png", f"localhost:{server.port}") in server.seen[before:]


def test_redact_url_drops_credentials_and_signatures() -> None:
    assert redact_url("https://user:pw@host.example/a/b.png?X-Amz-Signature=abc#f") == (
        "https://host.example/a/b.png?…"
    )


def _self_signed(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``name`` and a client context trusting only it."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    return server_ctx, client_ctx


def test_https_is_pinned_to_the_ip_but_verified_against_the_host_name(tmp_path: Path) -> None:
    import httpx

    server_ctx, client_ctx = _self_signed(tmp_path, "localhost")
    state = LoopbackServer(routes={"/image.png": _send(PNG)})
    httpd = _serve(state, tls=server_ctx)
    try:

        async def fetch(url: str) -> bytes:
            async with httpx.AsyncClient(verify=client_ctx, trust_env=False) as client:
                return await fetch_url(url, allow_private=True, client=client, timeout=5)

        # Connected to 127.0.0.1, SNI and certificate check for "localhost": accepted.
        assert asyncio.run(fetch(state.url("/image.png", host="localhost"))) == PNG
        # The same server by IP: the certificate does not name 127.0.0.1, so TLS refuses it.
        with pytest.raises(FetchRefused, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            asyncio.run(fetch(state.url("/image.png")))
    finally:
        httpd.shutdown()
        httpd.server_close()


# -- engines ---------------------------------------------------------------------------------------


def test_unknown_engines_and_options_are_clear_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_engine("animate", "diffusers-typo")
    assert "unknown engine 'diffusers-typo'" in str(caught.value) and "preview" in str(caught.value)
    with pytest.raises(ConfigError, match="no option 'speed'"):
        load_engine("animate", "preview", speed=2)
    with pytest.raises(ConfigError, match="min_job_seconds"):
        load_engine("animate", "preview", min_job_seconds=-1)
    with pytest.raises(ConfigError, match="VIDEOKIT_ENGINE_MIN_SECONDS"):
        engine_from_env("animate", {"VIDEOKIT_ENGINE_MIN_SECONDS": "two"})


def test_min_job_seconds_pads_each_job() -> None:
    engine = engine_from_env("edit", {"VIDEOKIT_ENGINE_MIN_SECONDS": "0.5"})
    assert isinstance(engine, PaddedEngine) and engine.identity("edit") == "preview/storyboard@2"
    request = EditRequest(images=[MediaInput(base64=PNG_B64)], prompt="x", seed=1)
    started = time.monotonic()
    result = asyncio.run(engine.edit(request, JobContext("s", "edit")))
    assert time.monotonic() - started >= 0.5
    assert result.inference_ms >= 500


# -- failures: OOM, bugs, cancellation -------------------------------------------------------------


@dataclass
class FailingEngine:
    """An engine that fails the way a GPU engine can (the only stand-in engine in this file)."""

    error: Exception
    name: str = "failing"

    def identity(self, stage: Stage) -> str:
        return "failing@1"

    async def edit(self, request: EditRequest, ctx: JobContext) -> EditResult:
        raise self.error

    async def animate(self, request: AnimateRequest, ctx: JobContext) -> AnimateResult:
        raise self.error

    async def aclose(self) -> None:
        return None


def test_cuda_out_of_memory_is_classified_as_transient() -> None:
    error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.19 GiB total)")
    lines: list[str] = []
    handler = make_handler("edit", FailingEngine(error), env={}, log=lines.append)
    with pytest.raises(WorkerOOMError) as caught:
        _run(handler, QWEN_EDIT_EXAMPLE)
    assert str(caught.value).startswith("CUDA out of memory: Tried to allocate 2.00 GiB")
    assert caught.value.transient and caught.value.__cause__ is error
    assert json.loads(lines[0])["status"] == "oom"


def test_torch_out_of_memory_errors_are_recognised_by_type() -> None:
    # torch.cuda.OutOfMemoryError, recognised without importing torch (not installed here).
    oom_type = type("OutOfMemoryError", (RuntimeError,), {"__module__": "torch.cuda"})
    assert is_cuda_oom(oom_type("out of memory"))
    wrapped = ValueError("decode failed")
    wrapped.__cause__ = RuntimeError("CUDA out of memory.")
    assert is_cuda_oom(wrapped)
    assert not is_cuda_oom(RuntimeError("out of cheese"))


def test_other_engine_errors_propagate_unchanged() -> None:
    error = ZeroDivisionError("a bug")
    handler = make_handler("animate", FailingEngine(error), env={})
    with pytest.raises(ZeroDivisionError) as caught:
        _run(handler, {**COMFY_WAN_EXAMPLE, "image_base64": PNG_B64})
    assert caught.value is error


def test_cancelling_the_handler_task_mid_job_raises_cancelled_error() -> None:
    engine = load_engine("animate", "preview", min_job_seconds=10)
    lines: list[str] = []
    handler = make_handler("animate", engine, env={}, log=lines.append)
    document = {
        "image_base64": PNG_B64,
        "prompt": "p",
        "num_frames": 9,
        "width": 256,
        "height": 144,
    }

    async def cancel_mid_job() -> float:
        task = asyncio.create_task(handler(_job(document)))
        await asyncio.sleep(0.5)
        assert not task.done()
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert asyncio.run(cancel_mid_job()) < 1.0
    assert json.loads(lines[0])["status"] == "cancelled"


def test_format_output_native_is_the_result_dump() -> None:
    request = EditRequest(images=[MediaInput(base64=PNG_B64)], prompt="x", seed=1)
    result = asyncio.run(load_engine("edit", "preview").edit(request, JobContext("s", "edit")))
    assert format_output(result, "native") == result.model_dump(mode="json")
    qwen = format_output(result, "qwen-edit-worker")
    assert qwen["edited_image_base64"] == result.image.base64 and qwen["width"] == result.width


def test_native_credentials_are_refused_and_hostile_field_names_are_cut_short() -> None:
    request = AnimateRequest(image=MediaInput(base64=PNG_B64), prompt="p", seed=1)
    document = {**request.model_dump(mode="json"), "s3": {"secret": "k"}}
    message = _invalid(_handler("animate"), document)
    assert "'s3' is refused" in message and "presigned URLs" in message

    hostile = {"image_base64": PNG_B64, "prompt": "p", **{f"{'x' * 5000}{i}": 1 for i in range(50)}}
    message = _invalid(_handler("animate"), hostile)
    assert len(message) < 1000 and "and 44 more" in message


def test_a_pinned_client_reaches_only_its_target(server: LoopbackServer) -> None:
    import httpx

    from videokit.worker.fetch import pinned_client

    async def get(client_url: str, url: str) -> int:
        target = await resolve_target(client_url, allow_private=True)
        async with pinned_client(target, timeout=5) as client:
            return (await client.get(url)).status_code

    image = server.url("/image.png", host="localhost")
    assert asyncio.run(get(image, image)) == 200
    with pytest.raises(httpx.ConnectError, match="only reach the validated host"):
        asyncio.run(get(image, "http://example.com/"))
