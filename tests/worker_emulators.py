"""Emulators of three GPU workers that users run on RunPod serverless, served on 127.0.0.1.

Each is the queue machinery of tests/queue_emulator.py with one handler, written from the worker's
own documentation only (not from any client), so that a client bug shows up against them:

* ``lightx2v-worker``: conalmullan's video-toolkit Wan2.2 I2V image ("API Reference" of its
  README, /work/shared/seeds/001_*). A real Wan pipeline also needs ``num_frames = 4n+1`` and sizes
  that are multiples of 16: other values fail the job naming the field.
* ``comfy-wan-worker``: the Wan2.2 I2V Lightning ComfyUI worker ("API Specification" of its
  CLAUDE.md, /work/shared/seeds/000_*): validation rules, output ``{video_base64, metadata}``.
* ``worker-comfyui``: runpod-workers/worker-comfyui (handler.py at d2a5572) in front of ComfyUI
  (Comfy-Org/ComfyUI at a125cd84): the workflow is validated as ComfyUI's ``POST /prompt`` does
  and its 400 is formatted as the handler does; then the graph is interpreted generically (see
  :class:`_Graph`). Only outputs under a node's ``images`` key are returned, as the handler does.

The "generated" clips are the input picture, cover-fitted, under a per-frame tint and a moving
white bar that encodes the frame index (tests/public_endpoints.py's :func:`video_frame`).

Where the real thing differs: a missing LoadImage file fails with what ComfyUI really says
(LoadImage.VALIDATE_INPUTS: "image - Invalid image file: x.png"; its "Value not in list" check is
skipped for that input); uploaded files last one job (a warm ComfyUI keeps them); lightx2v's
``r2`` upload is not emulated (the job fails saying so).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import json
import posixpath
import random
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import boto3  # type: ignore[import-untyped]
import httpx
import numpy as np
from botocore.config import Config  # type: ignore[import-untyped]
from PIL import Image

from tests.public_endpoints import Batch, Frame, animate, encode_clip
from tests.queue_emulator import JobFailed, QueueEmulator, QueueJob
from videokit.media.images import encode_png, load_rgb

LIGHTX2V = "lightx2v-worker"
COMFY_WAN = "comfy-wan-worker"
COMFYUI = "worker-comfyui"
KINDS = (LIGHTX2V, COMFY_WAN, COMFYUI)
MAX_IMAGE_BYTES = 10 * 1024 * 1024  # comfy-wan-worker's validate_image_file(max_size_mb=10)


@dataclass(frozen=True)
class BucketSettings:
    """An S3 bucket and its keys (worker-comfyui's ``BUCKET_ENDPOINT_URL`` & co.)."""

    endpoint_url: str
    bucket: str
    access_key_id: str
    secret_access_key: str

    def upload(self, key: str, data: bytes, content_type: str) -> str:
        """Put ``data`` at ``key``; return a presigned GET URL valid for 7 days."""
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )
        client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        params = {"Bucket": self.bucket, "Key": key}
        return str(client.generate_presigned_url("get_object", Params=params, ExpiresIn=604800))


def _still(image: Image.Image) -> Batch:
    pixels = np.asarray(image, dtype=np.uint8)
    return Batch(image.width, image.height, 1, lambda index: pixels)


def _number(
    doc: dict[str, Any],
    name: str,
    kind: type[float],
    default: float,
    lo: float = -1e18,
    hi: float = 1e18,
) -> Any:
    """``kind(doc[name])`` in [lo, hi] (``default`` when absent or null), as ``int(...)`` does."""
    value = doc.get(name)
    if value is None:
        return default
    try:
        value = kind(value)
    except (TypeError, ValueError):
        what = "an integer" if kind is int else "a number"
        raise JobFailed(f"{name} must be {what}, got {value!r}") from None
    if not lo <= value <= hi:
        raise JobFailed(f"{name} must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _picture(data: str | bytes, field: str) -> Image.Image:
    """Decode an image (given as base64 text, or bytes); fail the job naming ``field``."""
    try:
        return load_rgb(base64.b64decode(data) if isinstance(data, str) else data)
    except (binascii.Error, ValueError) as exc:  # ImageRejected is a ValueError
        raise JobFailed(f"{field}: not a valid base64 image ({exc})") from None


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class WorkerEmulator(QueueEmulator):
    """One worker ``kind`` (see :data:`KINDS`) behind one endpoint id.

    Besides :class:`QueueEmulator`'s recordings: ``clips`` (job id -> the clips it encoded, in
    order), and for worker-comfyui ``workflows`` and ``uploads`` (job id -> the workflow and the
    decoded ``images`` files as received). ``s3``: worker-comfyui returns ``s3_url`` outputs.
    """

    def __init__(
        self,
        kind: str,
        *,
        endpoint_id: str | None = None,
        s3: BucketSettings | None = None,
        job_seconds: float = 0.0,
        queue_seconds: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        handlers = {LIGHTX2V: self._lightx2v, COMFY_WAN: self._comfy_wan, COMFYUI: self._comfyui}
        if kind not in handlers:
            raise ValueError(f"unknown worker kind {kind!r}: one of {', '.join(KINDS)}")
        self.kind = kind
        self.endpoint_id = endpoint_id or kind
        self.s3 = s3
        self.clips: dict[str, list[Batch]] = {}
        self.workflows: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, bytes]] = {}
        self._counters: dict[str, int] = {}  # ComfyUI's output file numbers live across jobs
        super().__init__(
            {self.endpoint_id: handlers[kind]},
            job_seconds=job_seconds,
            queue_seconds=queue_seconds,
            api_key=api_key,
            name=kind,
        )

    @property
    def endpoint_url(self) -> str:
        """``{base_url}/{endpoint_id}``: where ``run``, ``status/{id}``... are."""
        return f"{self.base_url}/{self.endpoint_id}"

    def expected_frame(self, job_id: str, index: int, clip: int = 0) -> Frame:
        """Frame ``index`` of the ``clip``-th clip a job encoded, as it was before encoding."""
        return self.clips[job_id][clip].frame(index)

    def next_file_number(self, prefix: str) -> int:
        """ComfyUI's counter for ``{prefix}_{n:05}_.ext`` (it continues from the output folder)."""
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return self._counters[prefix]

    def encode(self, job: QueueJob, clip: Batch, fps: float, audio: bytes | None = None) -> bytes:
        """Encode ``clip`` (see :func:`encode_clip`) and record it in ``clips``; blocking."""
        self.clips.setdefault(job.id, []).append(clip)
        return encode_clip(clip, fps=fps, job=job, workdir=self.workdir, audio=audio)

    # -- lightx2v-worker

    async def _lightx2v(self, job: QueueJob) -> dict[str, Any]:
        began = time.monotonic()
        doc = job.input
        for name in ("image_base64", "prompt"):
            if not isinstance(doc.get(name), str) or not doc[name]:
                raise JobFailed(f"{name} is required")
        if doc.get("r2") is not None:
            raise JobFailed("r2: uploads to R2 are not emulated")
        frames = _number(doc, "num_frames", int, 81)
        if frames < 1 or (frames - 1) % 4:
            raise JobFailed(f"num_frames must be 4n+1 (33, 49, 65, 81, ...), got {frames}")
        width, height = _number(doc, "width", int, 832), _number(doc, "height", int, 480)
        for name, value in (("width", width), ("height", height)):
            if value < 16 or value % 16:
                raise JobFailed(f"{name} must be a positive multiple of 16, got {value}")
        fps = _number(doc, "fps", int, 16, 1, 1000)
        _number(doc, "num_inference_steps", int, 40)
        _number(doc, "guidance_scale", float, 5.0)
        seed = _number(doc, "seed", int, random.randrange(2**32))
        image = _picture(doc["image_base64"], "image_base64")
        clip = animate(image, width, height, frames)
        video = await asyncio.to_thread(self.encode, job, clip, fps)
        last = encode_png(clip.frame(-1))
        return {
            "success": True,
            "video_base64": _text(video),
            "last_frame_base64": _text(last),
            "seed": seed,
            "inference_time_ms": round((time.monotonic() - began) * 1000),
            "num_frames": frames,
            "fps": fps,
            "resolution": f"{width}x{height}",
            "video_size_bytes": len(video),
        }

    # -- comfy-wan-worker

    async def _comfy_wan(self, job: QueueJob) -> dict[str, Any]:
        doc = job.input
        prompt = doc.get("prompt")
        if prompt is None or prompt == "":
            raise JobFailed("prompt is required")
        if not isinstance(prompt, str) or len(prompt) > 1000:
            raise JobFailed("prompt must be a string of 1-1000 characters")
        url, data = doc.get("image_url"), doc.get("image_base64")
        if bool(url) == bool(data):
            raise JobFailed("exactly one of image_url or image_base64 is required, not both")
        cfg = _number(doc, "cfg", float, 1.0, 0.1, 20.0)
        width = _number(doc, "width", int, 512, 256, 1024)
        height = _number(doc, "height", int, 512, 256, 1024)
        for name, value in (("width", width), ("height", height)):
            if value % 64:
                raise JobFailed(f"{name} must be a multiple of 64, got {value}")
        frames = _number(doc, "frames", int, 33, 9, 121)
        if (frames - 1) % 8:
            raise JobFailed(f"frames must be 8n+1 (9, 17, 25, ..., 121), got {frames}")
        fps = _number(doc, "fps", int, 16, 8, 60)
        steps = _number(doc, "steps", int, 4, 1, 50)
        raw: str | bytes = str(data)
        if url:
            try:
                async with httpx.AsyncClient(trust_env=False, timeout=60) as http:
                    raw = (
                        (await http.get(str(url), follow_redirects=True)).raise_for_status().content
                    )
            except httpx.HTTPError as exc:
                raise JobFailed(f"image_url: failed to download the image ({exc})") from None
        field = "image_url" if url else "image_base64"
        if len(raw) > MAX_IMAGE_BYTES * (1 if url else 4 / 3):
            raise JobFailed(f"{field}: the image is larger than 10 MB")
        clip = animate(_picture(raw, field), width, height, frames)
        video = await asyncio.to_thread(self.encode, job, clip, fps)
        metadata = {"width": width, "height": height, "frames": frames, "fps": fps}
        return {"video_base64": _text(video), "metadata": metadata | {"cfg": cfg, "steps": steps}}

    # -- worker-comfyui

    async def _comfyui(self, job: QueueJob) -> dict[str, Any]:
        doc = job.input
        workflow = doc.get("workflow")
        if workflow is None:
            raise JobFailed("Missing 'workflow' parameter")
        images = doc.get("images")
        if images is not None and not (
            isinstance(images, list)
            and all(isinstance(i, dict) and "name" in i and "image" in i for i in images)
        ):
            raise JobFailed("'images' must be a list of objects with 'name' and 'image' keys")
        uploads: dict[str, bytes] = {}
        problems = []
        for item in images or []:
            text = str(item["image"])
            try:  # a data: URI prefix is cut at the first comma
                uploads[str(item["name"])] = base64.b64decode(text.split(",", 1)[-1])
            except (binascii.Error, ValueError) as exc:
                problems.append(f"Error decoding base64 for {item['name']}: {exc}")
        if problems:
            details = {"details": problems}
            raise JobFailed("Failed to upload one or more input images", output=details)
        self.uploads[job.id] = uploads
        if isinstance(workflow, dict):
            self.workflows[job.id] = copy.deepcopy(workflow)
        outputs = _validate(workflow, uploads.keys())
        graph = _Graph(self, job, uploads)
        errors = await asyncio.to_thread(graph.execute, outputs)
        if not graph.ui and not errors:
            errors.append(f"No outputs found in history for prompt {graph.prompt_id}.")
        found: list[dict[str, str]] = []
        for node_output in graph.ui.values():
            for info in node_output.get("images", []):
                if info["type"] == "temp":
                    continue
                filename, data = info["filename"], graph.files[info["subfolder"], info["filename"]]
                if self.s3 is None:
                    found.append({"filename": filename, "type": "base64", "data": _text(data)})
                    continue
                ext = posixpath.splitext(filename)[1] or ".png"
                key = f"{job.id}/{uuid.uuid4().hex[:8]}{ext}"  # as runpod's rp_upload names it
                try:
                    url = await asyncio.to_thread(self.s3.upload, key, data, f"image/{ext[1:]}")
                except Exception as exc:
                    errors.append(f"Error uploading {filename} to S3: {exc}")
                    continue
                found.append({"filename": filename, "type": "s3_url", "data": url})
        if not found and errors:
            raise JobFailed("Job processing failed", output={"details": errors})
        result: dict[str, Any] = {"images": found}
        if errors:
            result["errors"] = errors
        if not found:
            result["status"] = "success_no_images"
        return result


# The inputs ComfyUI requires of the nodes the emulator knows, and those that name an input file.
_WAN_INPUTS = "positive negative vae width height length batch_size"
_REQUIRED = {
    "LoadImage": "image",
    "LoadAudio": "audio",
    "WanImageToVideo": _WAN_INPUTS,
    "WanSoundImageToVideo": _WAN_INPUTS,
    "VAEDecode": "samples vae",
    "ImageFromBatch": "image batch_index length",
    "CreateVideo": "images fps",
    "SaveVideo": "video filename_prefix format codec",
    "SaveImage": "images filename_prefix",
    "PreviewImage": "images",
    "VHS_VideoCombine": "images frame_rate filename_prefix",
}
_FILE_INPUTS = {"LoadImage": "image", "LoadAudio": "audio"}
_SAVE_NODES = {"SaveVideo", "SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveAudio"}
_OUTPUT_NODES = frozenset(_SAVE_NODES | {"PreviewImage", "PreviewAny", "VHS_VideoCombine"})


def _reason(kind: str, message: str, details: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def _reject(error: dict[str, Any], node_errors: dict[str, Any]) -> NoReturn:
    """ComfyUI answered ``POST /prompt`` with 400: fail as worker-comfyui's queue_workflow does."""
    message = str(error["message"])
    if error["type"] == "prompt_outputs_failed_validation":
        message = "Workflow validation failed"
    lines = [f"Node {n} ({key}): {v}" for n, ne in node_errors.items() for key, v in ne.items()]
    if lines:
        raise JobFailed(f"{message}:\n" + "\n".join(f"• {line}" for line in lines))
    raw = json.dumps({"error": error, "node_errors": node_errors})
    raise JobFailed(f"{message}. Raw response: {raw}")


def _validate(workflow: Any, files: Collection[str]) -> list[str]:
    """ComfyUI's validate_prompt over ``workflow``; return the valid output node ids."""
    if not isinstance(workflow, dict) or not all(isinstance(n, dict) for n in workflow.values()):
        _reject(_reason("invalid_prompt", "the workflow must be an object of nodes", ""), {})
    for node_id, node in workflow.items():
        if "class_type" not in node:
            message = "Cannot execute because a node is missing the class_type property."
            _reject(_reason("invalid_prompt", message, f"Node ID '#{node_id}'"), {})
    outputs = [n for n, node in workflow.items() if node["class_type"] in _OUTPUT_NODES]
    if not outputs:
        _reject(_reason("prompt_no_outputs", "Prompt has no outputs", ""), {})
    validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
    good: list[str] = []
    failed: list[dict[str, Any]] = []
    node_errors: dict[str, Any] = {}
    for out in outputs:
        try:
            valid, reasons = _check(workflow, out, files, validated)
        except Exception as exc:
            message = "Exception when validating node"
            valid, reasons = False, [_reason("exception_during_validation", message, str(exc))]
            validated[out] = (False, reasons)
        if valid:
            good.append(out)
            continue
        failed += reasons
        for node_id, (ok, why) in validated.items():
            if not ok and why:
                class_type = workflow[node_id]["class_type"]
                entry = {"errors": why, "dependent_outputs": [], "class_type": class_type}
                node_errors.setdefault(node_id, entry)["dependent_outputs"].append(out)
    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for r in failed)
        message = "Prompt outputs failed validation"
        _reject(_reason("prompt_outputs_failed_validation", message, details), node_errors)
    return good


def _check(
    workflow: dict[str, Any],
    node_id: str,
    files: Collection[str],
    validated: dict[str, tuple[bool, list[dict[str, Any]]]],
) -> tuple[bool, list[dict[str, Any]]]:
    """ComfyUI's validate_inputs: one node, then (recursively) the nodes it links to."""
    if node_id in validated:
        return validated[node_id]
    class_type = workflow[node_id]["class_type"]
    inputs: dict[str, Any] = workflow[node_id].get("inputs", {})
    missing = [name for name in _REQUIRED.get(class_type, "").split() if name not in inputs]
    errors = [
        _reason("required_input_missing", "Required input is missing", name) for name in missing
    ]
    valid = True
    for name, value in inputs.items():
        if not isinstance(value, list):
            continue
        if len(value) != 2:
            message = "Bad linked input, must be a length-2 list of [node_id, slot_index]"
            errors.append(_reason("bad_linked_input", message, name, input_name=name))
            continue
        source = value[0]  # node ids are strings: ["7", 0], never [7, 0]
        if source not in workflow:
            raise KeyError(source)  # as ComfyUI's prompt[o_id]: the caller catches it
        try:
            valid = _check(workflow, source, files, validated)[0] and valid
        except Exception as exc:
            valid = False
            message = "Exception when validating inner node"
            reason = _reason("exception_during_inner_validation", message, str(exc))
            validated[source] = (False, [reason])
    file_input = _FILE_INPUTS.get(class_type, "")
    if file_input in inputs and inputs[file_input] not in files:  # the node's VALIDATE_INPUTS
        details = f"{file_input} - Invalid {file_input} file: {inputs[file_input]}"
        message = "Custom validation failed for node"
        errors.append(_reason("custom_validation_failed", message, details, input_name=file_input))
    validated[node_id] = (not errors and valid, errors)
    return validated[node_id]


@dataclass(frozen=True)
class _Latent:
    width: int
    height: int
    length: int
    start: Batch | None


@dataclass(frozen=True)
class _Video:
    images: Batch
    fps: float
    audio: bytes | None


class _NodeError(Exception):
    def __init__(self, node_id: str, class_type: str, exc: Exception) -> None:
        super().__init__(f"Node Type: {class_type}, Node ID: {node_id}, Message: {exc}")


class _Graph:
    """One execution of a validated workflow, interpreted without knowing who wrote it.

    Like ComfyUI it runs every node the outputs depend on, each once. Known nodes: LoadImage,
    LoadAudio, WanImageToVideo (``start_image``) / WanSoundImageToVideo (``ref_image``) make a
    latent of ``width``×``height``, VAEDecode decodes it into ``4*((length-1)//4)+1`` frames (as
    Wan's VAE does), ImageFromBatch, CreateVideo (``fps``, ``audio``), SaveVideo (an H.264 MP4
    reported under ``images`` with ``animated``), SaveImage (PNGs), PreviewImage (``temp``),
    VHS_VideoCombine (reported under ``gifs``). Any other node (loaders, text encoders,
    samplers...) passes on the first image/latent/video/audio value among its inputs.
    """

    def __init__(self, emulator: WorkerEmulator, job: QueueJob, files: dict[str, bytes]) -> None:
        self.emulator, self.job, self.input_files = emulator, job, files
        self.workflow: dict[str, Any] = job.input["workflow"]
        self.prompt_id = str(uuid.uuid4())
        self.ui: dict[str, dict[str, Any]] = {}  # node id -> its UI output ("history" outputs)
        self.files: dict[tuple[str, str], bytes] = {}  # (subfolder, filename) -> bytes
        self._values: dict[str, tuple[Any, ...]] = {}

    def execute(self, outputs: list[str]) -> list[str]:
        """Run the graph for ``outputs``; return worker-comfyui's errors (an execution error)."""
        try:
            for node_id in outputs:
                self._node(node_id)
        except _NodeError as exc:
            return [f"Workflow execution error: {exc}"]
        return []

    def _node(self, node_id: str) -> tuple[Any, ...]:
        if node_id not in self._values:
            node = self.workflow[node_id]
            inputs: dict[str, Any] = node.get("inputs", {})
            try:
                args = {
                    name: self._node(link[0])[int(link[1])] if isinstance(link, list) else link
                    for name, link in inputs.items()
                }
                self._values[node_id] = self._run(node_id, node["class_type"], args)
            except _NodeError:
                raise
            except Exception as exc:
                raise _NodeError(node_id, node["class_type"], exc) from exc
        return self._values[node_id]

    def _run(self, node_id: str, class_type: str, args: dict[str, Any]) -> tuple[Any, ...]:
        match class_type:
            case "LoadImage":
                return _still(load_rgb(self.input_files[args["image"]])), None
            case "LoadAudio":
                return (self.input_files[args["audio"]],)
            case "WanImageToVideo" | "WanSoundImageToVideo":
                start = args.get("start_image" if class_type == "WanImageToVideo" else "ref_image")
                size = int(args["width"]), int(args["height"]), int(args["length"])
                return None, None, _Latent(*size, start if isinstance(start, Batch) else None)
            case "VAEDecode":
                latent = args["samples"]
                if not isinstance(latent, _Latent):
                    raise ValueError("the emulator only decodes Wan image-to-video latents")
                image = Image.fromarray(latent.start.frame(0)) if latent.start else None
                count = (latent.length - 1) // 4 * 4 + 1
                return (animate(image, latent.width // 8 * 8, latent.height // 8 * 8, count),)
            case "ImageFromBatch":
                batch: Batch = args["image"]
                first = min(batch.count - 1, int(args["batch_index"]))
                count = min(batch.count - first, int(args["length"]))
                return (Batch(batch.width, batch.height, count, lambda i: batch.draw(first + i)),)
            case "CreateVideo":
                audio = args.get("audio")
                return (_Video(args["images"], float(args["fps"]), audio),)
            case "SaveVideo":
                video: _Video = args["video"]
                data = self.emulator.encode(self.job, video.images, video.fps, video.audio)
                info = self._save(args.get("filename_prefix", "video/ComfyUI"), "mp4", data)
                self.ui[node_id] = {"images": [info], "animated": [True]}
            case "SaveImage":
                prefix = args.get("filename_prefix", "ComfyUI")
                pictures = [encode_png(frame) for frame in args["images"].frames()]
                self.ui[node_id] = {"images": [self._save(prefix, "png", p) for p in pictures]}
            case "PreviewImage":  # temp files, which worker-comfyui skips
                name = f"ComfyUI_temp_{uuid.uuid4().hex[:5]}_00001_.png"
                self.ui[node_id] = {"images": [{"filename": name, "subfolder": "", "type": "temp"}]}
            case "VHS_VideoCombine":  # VideoHelperSuite reports its file under "gifs"
                prefix = str(args.get("filename_prefix", "AnimateDiff"))
                name = f"{prefix}_{self.emulator.next_file_number(prefix):05}.mp4"
                gif = {"filename": name, "subfolder": "", "type": "output"}
                self.ui[node_id] = {"gifs": [gif | {"format": "video/h264-mp4"}]}
            case _:
                passed = (Batch, _Latent, _Video, bytes)
                found = next((v for v in args.values() if isinstance(v, passed)), None)
                return (found,) * 16  # whichever output slot is linked
        return ()

    def _save(self, prefix: Any, ext: str, data: bytes) -> dict[str, str]:
        subfolder, name = posixpath.split(posixpath.normpath(str(prefix)))
        number = self.emulator.next_file_number(posixpath.join(subfolder, name))
        filename = f"{name}_{number:05}_.{ext}"
        self.files[subfolder, filename] = data
        return {"filename": filename, "subfolder": subfolder, "type": "output"}


@contextmanager
def serve_worker_emulator(
    kind: str,
    *,
    endpoint_id: str | None = None,
    s3: BucketSettings | None = None,
    job_seconds: float = 0.0,
    queue_seconds: float = 0.0,
    api_key: str | None = None,
) -> Iterator[WorkerEmulator]:
    """Run a worker emulator on a free loopback port; yield it (``.endpoint_url`` to call)."""
    timing = {"job_seconds": job_seconds, "queue_seconds": queue_seconds}
    emulator = WorkerEmulator(kind, endpoint_id=endpoint_id, s3=s3, api_key=api_key, **timing)
    with emulator.running():
        yield emulator
