"""An emulator of three RunPod Public Endpoints, served over real HTTP on 127.0.0.1 for tests.

Schemas follow runpod/docs at commit a900806e253c4f8c16da27d1a4370e72456da4cb (2026-08-20; the
model pages last changed 2026-07-20): public-endpoints/models/wan-2-2-i2v.mdx,
qwen-image-edit-2511.mdx, qwen-image-edit.mdx (LoRA variants wan-2-2-i2v-lora.mdx and
qwen-image-edit-2511-lora.mdx are not emulated) and public-endpoints/requests.mdx.

They speak the v2 queue API at ``{base_url}/{endpoint_id}/``: ``POST run``, ``POST runsync?wait=ms``,
``GET status/{id}``, ``GET stream/{id}``, ``POST cancel/{id}``, ``GET health``. A job fetches its
input image URL(s) with httpx and produces a real output: an edited image (cover-cropped to the
output size, middle third inverted) or an H.264 MP4 of ``16 * duration + 1`` frames at 16 fps
(the input, tinted by a per-frame colour, with a white bar whose height encodes the frame index).
Results are served at ``{origin}/results/{token}/output.{ext}`` and expire like presigned URLs.
Bad parameters make the job FAILED with an error naming the field, as the real endpoints do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from videokit.media.ffmpeg import RawVideoWriter
from videokit.media.images import cover_fit, load_rgb
from videokit.serve.app import running_server

WAN_I2V = "wan-2-2-i2v-720"
QWEN_EDIT_2511 = "qwen-image-edit-2511"
QWEN_EDIT = "qwen-image-edit"
ENDPOINT_IDS = (WAN_I2V, QWEN_EDIT_2511, QWEN_EDIT)

WAN_SIZES = ("1280*720", "720*1280")
QWEN_2511_SIZES = ("1024*1024", "1024*1280", "1280*1024", "1280*1280", "1280*1536", "1536*1080")
FPS = 16
_CONTENT_TYPES = dict(jpeg="image/jpeg", png="image/png", webp="image/webp", mp4="video/mp4")
_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_INVALID_IMAGE = "Invalid image URL"

Frame = npt.NDArray[np.uint8]


class JobFailed(Exception):
    """Ends a job FAILED with ``str(exc)`` as its ``error``."""


@dataclass
class PublicJob:
    """One job as the emulator sees it (times are ``time.time()`` seconds)."""

    id: str
    endpoint: str
    input: dict[str, Any]
    status: str = "IN_QUEUE"
    output: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    worker_id: str | None = None
    forced_error: str | None = field(default=None, repr=False)
    stop: threading.Event = field(default_factory=threading.Event, repr=False)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def body(self) -> dict[str, Any]:
        """The RunPod status body."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = round((self.started - self.created) * 1000)
            body["workerId"] = self.worker_id
        if self.started is not None and self.finished is not None:
            body["executionTime"] = round((self.finished - self.started) * 1000)
        if self.status == "COMPLETED":
            body["output"] = self.output
        if self.status == "FAILED":
            body["error"] = self.error
        return body


@dataclass
class _Result:
    data: bytes
    content_type: str
    created: float = field(default_factory=time.monotonic)
    expired: bool = False


def video_frame(base3: npt.NDArray[np.uint16], index: int, count: int) -> Frame:
    """Frame ``index`` of ``count``, from ``base3`` (the fitted input image as uint16, times 3).

    3/4 image + 1/4 a per-frame colour (consecutive frames differ by 19 levels on average over
    the whole picture), and a white full-width bar that moves from top (frame 0) to bottom.
    """
    tint = np.array(
        [(index * 96) % 256, (index * 160 + 64) % 256, (index * 224 + 128) % 256], np.uint16
    )
    frame = ((base3 + tint) >> 2).astype(np.uint8)
    height = frame.shape[0]
    bar = max(4, height // 30)
    top = round(index * (height - bar) / max(1, count - 1))
    frame[top : top + bar] = 255
    return frame


def _edit(images: list[Image.Image], width: int, height: int) -> Frame:
    """The "edit": the first image cover-cropped, its middle third inverted, others as insets."""
    out = np.array(cover_fit(images[0], width, height), dtype=np.uint8)
    band = slice(height // 3, 2 * height // 3)
    out[band] = 255 - out[band]
    for k, extra in enumerate(images[1:]):
        inset = np.asarray(cover_fit(extra, width // 4, height // 4), dtype=np.uint8)
        out[: height // 4, k * (width // 4) : (k + 1) * (width // 4)] = inset
    return out


def _encode(pixels: Frame, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(
        buf, format=fmt.upper(), **({"quality": 92} if fmt != "png" else {})
    )
    return buf.getvalue()


_KIND_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}


def _opt(doc: dict[str, Any], name: str, kinds: tuple[type, ...], default: Any) -> Any:
    """``doc[name]`` (or ``default``) if it is one of ``kinds`` (a bool is no number)."""
    value = doc.get(name, default)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise JobFailed(f"{name}: must be {_KIND_NAMES[kinds[-1]]}, got {value!r}")
    return value


def _required_str(doc: dict[str, Any], name: str) -> str:
    if name not in doc:
        raise JobFailed(f"{name}: is required")
    return str(_opt(doc, name, (str,), None))


def _number(
    doc: dict[str, Any], name: str, default: float, lo: float = -1e9, hi: float = 1e9
) -> float:
    """A number in [lo, hi]; an integer one when ``default`` is an int."""
    kinds: tuple[type, ...] = (int,) if isinstance(default, int) else (int, float)
    value = float(_opt(doc, name, kinds, default))
    if not lo <= value <= hi:
        raise JobFailed(f"{name}: must be between {lo:g} and {hi:g}, got {value:g}")
    return value


def _choice(doc: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = doc.get(name, choices[0])
    if value not in choices:
        raise JobFailed(f"{name}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _size(text: str) -> tuple[int, int]:
    width, height = text.split("*")
    return int(width), int(height)


def _check_common(doc: dict[str, Any], *, bools: tuple[str, ...], texts: tuple[str, ...]) -> None:
    _required_str(doc, "prompt")
    _opt(doc, "seed", (int,), -1)
    for name in bools:
        _opt(doc, name, (bool,), False)
    for name in texts:
        _opt(doc, name, (str,), "")


class PublicEndpoints:
    """State, recordings and fault knobs of the emulator; ``app`` is its ASGI application.

    ``requests`` and ``authorization`` record every API request, refused ones (401/404) too;
    ``inputs`` and ``jobs`` only those that made a job. Timing knobs may be changed at any time.
    """

    def __init__(
        self,
        *,
        job_seconds: float = 0.0,
        queue_seconds: float = 0.0,
        result_ttl_s: float = 7 * 86400,
        api_key: str | None = None,
    ) -> None:
        self.job_seconds = job_seconds
        self.queue_seconds = queue_seconds
        self.result_ttl_s = result_ttl_s
        self.api_key = api_key
        self.origin = ""
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.status_requests_per_job: collections.Counter[str] = collections.Counter()
        self.inputs: list[tuple[str, dict[str, Any]]] = []
        self.jobs: dict[str, PublicJob] = {}
        self.authorization: list[str | None] = []
        self._fail_next: dict[str, str] = {}
        self._vanished: set[str] = set()
        self._results: dict[str, _Result] = {}
        self._video_bases: dict[str, tuple[npt.NDArray[np.uint16], int]] = {}
        self._images: dict[str, Frame] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="videokit-public-")
        v2 = "/v2/{endpoint}"
        self.app = Starlette(
            routes=[
                Route(f"{v2}/run", self._run, methods=["POST"]),
                Route(f"{v2}/runsync", self._runsync, methods=["POST"]),
                Route(f"{v2}/status/{{job_id}}", self._status, methods=["GET", "POST"]),
                Route(f"{v2}/stream/{{job_id}}", self._stream, methods=["GET", "POST"]),
                Route(f"{v2}/cancel/{{job_id}}", self._cancel, methods=["POST"]),
                Route(f"{v2}/health", self._health, methods=["GET"]),
                Route("/results/{token}/{name}", self._result, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @property
    def base_url(self) -> str:
        """What a client sets as its RunPod API base URL (``{origin}/v2``)."""
        return f"{self.origin}/v2"

    # -- knobs for tests (thread-safe enough: single dict/set operations under the GIL)

    def fail_next(self, endpoint_id: str, error: str) -> None:
        """Make the next job submitted to ``endpoint_id`` end FAILED with ``error``."""
        self._fail_next[endpoint_id] = error

    def vanish(self, job_id: str) -> None:
        """Make ``status``/``stream``/``cancel`` of ``job_id`` answer 404 from now on."""
        self._vanished.add(job_id)

    def expire_results(self) -> None:
        """Expire every result URL handed out so far (they answer 403 "Request has expired")."""
        for result in list(self._results.values()):
            result.expired = True

    def expected_last_frame(self, job_id: str) -> Frame:
        """The last frame of a video job as it was before encoding (H×W×3 RGB)."""
        return self.expected_frame(job_id, -1)

    def expected_frame(self, job_id: str, index: int) -> Frame:
        """Frame ``index`` (negative counts from the end) of a video job, before encoding."""
        base3, count = self._video_bases[job_id]
        return video_frame(base3, index % count, count)

    def expected_image(self, job_id: str) -> Frame:
        """The output of an edit job before encoding (H×W×3 RGB)."""
        return self._images[job_id]

    # -- HTTP

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            tasks = [job.task for job in self.jobs.values() if job.task is not None]
            for job in self.jobs.values():
                job.stop.set()  # stops encoders; cancelling a finished task does nothing
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _api(self, request: Request, route: str) -> tuple[str, Response | None]:
        """Record an API request; return its endpoint id and an error response, if any."""
        endpoint: str = request.path_params["endpoint"]
        self.requests[(endpoint, route)] += 1
        header = request.headers.get("authorization")
        self.authorization.append(header)
        if self.api_key is not None and header != f"Bearer {self.api_key}":
            return endpoint, JSONResponse({"error": "Unauthorized"}, 401)
        if endpoint not in ENDPOINT_IDS:
            return endpoint, JSONResponse({"error": f"endpoint {endpoint!r} not found"}, 404)
        return endpoint, None

    def _job(self, request: Request, route: str) -> PublicJob | Response:
        """Record a request about a job; return the job or an error response."""
        endpoint, error = self._api(request, route)
        job = self.jobs.get(request.path_params["job_id"])
        if error is not None:
            return error
        if job is None or job.endpoint != endpoint or job.id in self._vanished:
            return JSONResponse({"error": "request does not exist"}, 404)
        return job

    async def _submit(self, request: Request, endpoint: str, prefix: str) -> PublicJob | Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "request body is not valid JSON"}, 400)
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return JSONResponse({"error": "body must be an object with an 'input' object"}, 400)
        if not isinstance(body.get("policy", {}), dict):
            return JSONResponse({"error": "'policy' must be an object"}, 400)
        job = PublicJob(id=f"{prefix}{uuid.uuid4()}-u1", endpoint=endpoint, input=body["input"])
        job.forced_error = self._fail_next.pop(endpoint, None)
        self.inputs.append((endpoint, json.loads(json.dumps(body["input"]))))
        self.jobs[job.id] = job
        job.task = asyncio.create_task(self._execute(job), name=f"public-job-{job.id}")
        return job

    async def _run(self, request: Request) -> Response:
        endpoint, error = self._api(request, "run")
        job = error or await self._submit(request, endpoint, "")
        if isinstance(job, Response):
            return job
        return JSONResponse({"id": job.id, "status": job.status})

    async def _runsync(self, request: Request) -> Response:
        endpoint, error = self._api(request, "runsync")
        wait_ms = request.query_params.get("wait", "90000")
        if error is None and not wait_ms.isdigit():
            error = JSONResponse({"error": "'wait' must be a whole number of milliseconds"}, 400)
        job = error or await self._submit(request, endpoint, "sync-")
        if isinstance(job, Response):
            return job
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), int(wait_ms) / 1000)
        return JSONResponse(job.body())

    async def _status(self, request: Request) -> Response:
        self.status_requests_per_job[request.path_params["job_id"]] += 1
        job = self._job(request, "status")
        return job if isinstance(job, Response) else JSONResponse(job.body())

    async def _stream(self, request: Request) -> Response:
        job = self._job(request, "stream")
        if isinstance(job, Response):
            return job
        chunks = [{"output": job.output}] if job.status == "COMPLETED" else []
        return JSONResponse({"id": job.id, "status": job.status, "stream": chunks})

    async def _cancel(self, request: Request) -> Response:
        job = self._job(request, "cancel")
        if isinstance(job, Response):
            return job
        if job.status not in _TERMINAL:
            job.status = "CANCELLED"
            job.finished = time.time()
            job.stop.set()
            if job.task is not None:
                job.task.cancel()
        return JSONResponse({"id": job.id, "status": job.status})

    async def _health(self, request: Request) -> Response:
        endpoint, error = self._api(request, "health")
        if error is not None:
            return error
        counts = collections.Counter(j.status for j in self.jobs.values() if j.endpoint == endpoint)
        running = counts["IN_PROGRESS"]
        jobs = {"completed": counts["COMPLETED"], "failed": counts["FAILED"], "retried": 0}
        jobs |= {"inProgress": running, "inQueue": counts["IN_QUEUE"]}
        idle = 0 if running else 1  # jobs run side by side: think of one worker per job
        workers = {"idle": idle, "running": running, "initializing": 0, "ready": idle}
        return JSONResponse({"jobs": jobs, "workers": workers})

    async def _result(self, request: Request) -> Response:
        result = self._results.get(request.path_params["token"])
        name = request.path_params["name"]
        if result is None or not name.startswith("output."):
            return _s3_error(404, "NoSuchKey", "The specified key does not exist.")
        if result.expired or time.monotonic() - result.created > self.result_ttl_s:
            return _s3_error(403, "AccessDenied", "Request has expired")
        return Response(result.data, media_type=result.content_type)

    # -- jobs

    async def _execute(self, job: PublicJob) -> None:
        try:
            if self.queue_seconds > 0:
                await asyncio.sleep(self.queue_seconds)
            job.status, job.started = "IN_PROGRESS", time.time()
            job.worker_id = f"emulated-{job.endpoint}"
            started = time.monotonic()
            error: str | None = job.forced_error
            try:
                output = await self._work(job)
            except JobFailed as exc:
                output, error = None, str(exc)
            rest = self.job_seconds - (time.monotonic() - started)
            if rest > 0:
                await asyncio.sleep(rest)
            if job.status == "IN_PROGRESS":  # not cancelled meanwhile
                if error is None:
                    job.status, job.output = "COMPLETED", output
                else:
                    job.status, job.error = "FAILED", error
        except asyncio.CancelledError:
            if job.status not in _TERMINAL:  # server shutdown, not a client's cancel
                job.status = "CANCELLED"
            raise
        except Exception as exc:  # a bug in the emulator: make it visible in the job
            job.status, job.error = "FAILED", f"emulator error: {exc!r}"
        finally:
            job.finished = job.finished or time.time()
            job.done.set()

    async def _work(self, job: PublicJob) -> dict[str, Any] | None:
        if job.forced_error is not None:
            return None
        doc = job.input
        if job.endpoint == WAN_I2V:
            _check_common(
                doc,
                bools=("enable_prompt_optimization", "enable_safety_checker"),
                texts=("negative_prompt",),
            )
            url = _required_str(doc, "image")
            width, height = _size(_choice(doc, "size", WAN_SIZES))
            _number(doc, "num_inference_steps", 30, 1, 50)
            _number(doc, "guidance", 5.0, 0, 10)
            _number(doc, "flow_shift", 5.0)
            duration = int(_number(doc, "duration", 5, 5, 15))
            images = await self._fetch([url])
            count = FPS * duration + 1
            data = await asyncio.to_thread(self._render, job, images[0], width, height, count)
            return {"video_url": self._publish(data, "mp4"), "cost": round(0.06 * duration, 2)}
        if job.endpoint == QWEN_EDIT_2511:
            _check_common(doc, bools=(), texts=())
            urls = doc.get("images")
            if not isinstance(urls, list) or not 1 <= len(urls) <= 3:
                raise JobFailed("images: must be a list of 1 to 3 image URLs")
            if not all(isinstance(u, str) for u in urls):
                raise JobFailed("images: every item must be a URL string")
            width, height = _size(_choice(doc, "size", QWEN_2511_SIZES))
            fmt = _choice(doc, "output_format", ("jpeg", "png", "webp"))
        else:
            _check_common(doc, bools=("enable_safety_checker",), texts=("negative_prompt",))
            urls = [_required_str(doc, "image")]
            fmt = _choice(doc, "output_format", ("jpeg", "png"))
            width = height = 0
        images = await self._fetch(urls)
        if not width:
            width, height = images[0].size
        pixels = await asyncio.to_thread(_edit, images, width, height)
        self._images[job.id] = pixels
        data = await asyncio.to_thread(_encode, pixels, fmt)
        return {"image_url": self._publish(data, fmt), "cost": 0.02}

    async def _fetch(self, urls: list[str]) -> list[Image.Image]:
        async def one(http: httpx.AsyncClient, url: str) -> Image.Image:
            try:
                response = (await http.get(url)).raise_for_status()
                return await asyncio.to_thread(load_rgb, response.content)
            except (httpx.HTTPError, ValueError) as exc:  # ImageRejected is a ValueError
                raise JobFailed(_INVALID_IMAGE) from exc

        async with httpx.AsyncClient(trust_env=False, timeout=30, follow_redirects=True) as http:
            return list(await asyncio.gather(*(one(http, url) for url in urls)))

    def _render(
        self, job: PublicJob, image: Image.Image, width: int, height: int, count: int
    ) -> bytes:
        base3 = np.asarray(cover_fit(image, width, height), dtype=np.uint16) * 3
        self._video_bases[job.id] = (base3, count)
        path = Path(self._workdir.name) / f"{uuid.uuid4().hex}.mp4"
        with RawVideoWriter(path, width=width, height=height, fps=FPS, preset="ultrafast") as out:
            for index in range(count):
                if job.stop.is_set():  # cancelled (the task was too): kill the encoder
                    raise InterruptedError(job.id)
                out.write(video_frame(base3, index, count))
        try:
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def _publish(self, data: bytes, ext: str) -> str:
        token = uuid.uuid4().hex
        self._results[token] = _Result(data, _CONTENT_TYPES[ext])
        return f"{self.origin}/results/{token}/output.{ext}"


def _s3_error(status: int, code: str, message: str) -> Response:
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return Response(xml, status_code=status, media_type="application/xml")


@contextmanager
def serve_public_endpoints(
    *,
    job_seconds: float = 0.0,
    queue_seconds: float = 0.0,
    result_ttl_s: float = 7 * 86400,
    api_key: str | None = None,
) -> Iterator[PublicEndpoints]:
    """Run the emulator on a free loopback port; yield it (``.base_url`` is ``{origin}/v2``)."""
    endpoints = PublicEndpoints(
        job_seconds=job_seconds,
        queue_seconds=queue_seconds,
        result_ttl_s=result_ttl_s,
        api_key=api_key,
    )
    with endpoints._workdir, running_server(endpoints.app) as origin:
        endpoints.origin = origin
        yield endpoints
