"""The worker's job handler: input document in, engine call, job output out.

One function serves both runtimes: ``runpod.serverless.start({"handler": make_handler(...)})`` in
the cloud, and ``videokit serve`` locally. The handler is ``async`` on purpose: RunPod runs a sync
handler *on* its event loop (blocking heartbeats and every other job), and its per-job cancel only
reaches an async handler, at an ``await``. Every slow step here (fetches, the engine, uploads) is an
await, so a cancelled job stops at the next one and ``CancelledError`` leaves the handler.

A job goes through:

1. :func:`~videokit.worker.compat.parse_job_input`: native or dialect input → native request
   (``{"warmup": true}`` is answered at once, with the engine's load time: the engine was
   loaded before the first job);
2. URL inputs fetched with :func:`~videokit.worker.fetch.fetch_url` (SSRF-safe) and replaced by
   inline base64; every input image checked with :func:`~videokit.media.images.inspect_image`
   (format, pixel count from the header: decompression bombs never reach the engine); upload
   targets' hosts checked with the same address policy, *before* any GPU time is spent;
3. the engine, with ``JobContext(scene=<job id>, stage=...)``;
4. outputs with a target in ``request.outputs`` PUT with
   :func:`~videokit.storage.upload_presigned` (through a client pinned to the target's checked
   address, see :func:`~videokit.worker.fetch.pinned_client`) and returned as URLs, not base64;
5. :func:`~videokit.worker.compat.format_output` in the caller's style.

Errors: a bad input raises :class:`~videokit.worker.errors.JobInputError` ("invalid input: ...");
CUDA running out of memory raises :class:`WorkerOOMError` ("CUDA out of memory: ...") so clients
can retry it as transient; anything else propagates unchanged (RunPod marks the job FAILED with
the message). Messages never contain the payload, base64 or a URL's query string, and validation
errors are raised ``from None`` because RunPod puts the whole traceback, chained exceptions
included, in the job's error blob.

Each job logs one JSON line (to stderr by default): job id, stage, style, status, timings, sizes and
the hosts of URL inputs; never the payload, the prompt, base64 or URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from videokit.backends.base import JobContext, Stage
from videokit.errors import VideoKitError
from videokit.media.images import MAX_IMAGE_PIXELS, ImageRejected, inspect_image
from videokit.protocol import (
    AnimateRequest,
    AnimateResult,
    EditRequest,
    EditResult,
    MediaInput,
    MediaOutput,
    OutputTarget,
)
from videokit.storage import upload_presigned
from videokit.worker.common import decode_media, json_line, log_to_stderr, ms_since
from videokit.worker.compat import (
    OutputStyle,
    Warmup,
    format_output,
    input_fields,
    parse_job_input,
)
from videokit.worker.engines import Engine
from videokit.worker.errors import OOM_TEXT, JobInputError, WorkerOOMError, is_cuda_oom
from videokit.worker.fetch import (
    DEFAULT_MAX_BYTES,
    FetchRefused,
    allow_private_from_env,
    fetch_url,
    pinned_client,
    resolve_target,
)

__all__ = ["Handler", "WorkerOOMError", "is_cuda_oom", "make_handler", "run_local"]

#: What :func:`make_handler` returns: RunPod's job dict (``{"id", "input"}``) → job output.
Handler = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]

_MAX_LOGGED_ERROR = 300


def make_handler(
    stage: Stage,
    engine: Engine,
    *,
    allow_private_urls: bool | None = None,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
    max_input_bytes: int = DEFAULT_MAX_BYTES,
    fetch_timeout: float = 30.0,
    upload_timeout: float = 120.0,
    log: Callable[[str], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Handler:
    """Build the async job handler for a worker serving ``stage`` with an already loaded engine.

    ``allow_private_urls``: let URL inputs and upload targets use private/loopback addresses. When
    None (the default) it is read now, from ``VIDEOKIT_ALLOW_PRIVATE_URLS`` in ``env`` (default:
    the process environment), so a worker's policy is fixed when it starts, never at import.
    ``log`` receives one JSON line per job (default: written to stderr).
    """
    if allow_private_urls is None:
        allow_private_urls = allow_private_from_env(os.environ if env is None else env)
    worker = _Worker(
        stage=stage,
        engine=engine,
        allow_private_urls=allow_private_urls,
        max_image_pixels=max_image_pixels,
        max_input_bytes=max_input_bytes,
        fetch_timeout=fetch_timeout,
        upload_timeout=upload_timeout,
        log=log or log_to_stderr,
    )

    # A plain `async def` (not a callable object): RunPod and our server pick their calling
    # convention with inspect, which only recognises coroutine *functions*.
    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        return await worker.handle(job)

    handler.__qualname__ = f"videokit_{stage}_handler"
    return handler


def run_local(
    stage: Stage, engine: Engine, document: dict[str, Any], **options: Any
) -> dict[str, Any]:
    """Run one job's ``input`` document through a fresh handler, outside any event loop.

    For RunPod's ``--test_input`` style checks and scripts; ``options`` go to :func:`make_handler`.
    """
    handler = make_handler(stage, engine, **options)

    async def one_job() -> dict[str, Any]:
        return await handler({"id": "local", "input": document})

    return asyncio.run(one_job())


@dataclass
class _JobRecord:
    """What the job's log line says; filled in as the job goes."""

    job_id: str
    stage: Stage
    style: OutputStyle | None = None
    status: str = "running"
    error_type: str | None = None
    error: str | None = None
    warmup: bool = False
    inputs: int = 0
    input_bytes: int = 0
    input_hosts: list[str] = field(default_factory=list)
    output_bytes: dict[str, int] = field(default_factory=dict)
    uploaded: list[str] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    model: str | None = None
    timings_ms: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return json_line({"event": "videokit.job", **self.__dict__}, omit_empty=True)


class _Timer:
    def __init__(self, record: _JobRecord, name: str) -> None:
        self.record, self.name = record, name

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc_info: object) -> None:
        elapsed = ms_since(self.started)
        self.record.timings_ms[self.name] = self.record.timings_ms.get(self.name, 0) + elapsed


@dataclass
class _Worker:
    stage: Stage
    engine: Engine
    allow_private_urls: bool
    max_image_pixels: int
    max_input_bytes: int
    fetch_timeout: float
    upload_timeout: float
    log: Callable[[str], None]

    async def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        job_id = str(job.get("id") or "local") if isinstance(job, dict) else "local"
        record = _JobRecord(job_id=job_id, stage=self.stage)
        started = time.perf_counter()
        try:
            output = await self._run(job, record)
        except asyncio.CancelledError:
            record.status = "cancelled"
            raise
        except Exception as exc:
            if isinstance(exc, JobInputError):
                record.status = "invalid_input"
            elif isinstance(exc, WorkerOOMError):
                record.status = "oom"
            else:
                record.status = "error"
            record.error_type = type(exc).__name__
            if isinstance(exc, VideoKitError):
                # Our own messages are built to be safe to show; others are not logged verbatim.
                record.error = exc.message[:_MAX_LOGGED_ERROR]
            raise
        else:
            record.status = "ok"
            return output
        finally:
            record.timings_ms["total"] = ms_since(started)
            # A broken log sink must not fail the job or hide the job's own error.
            with contextlib.suppress(Exception):
                self.log(record.line())

    async def _run(self, job: dict[str, Any], record: _JobRecord) -> dict[str, Any]:
        if not isinstance(job, dict):
            raise JobInputError("the job must be a JSON object with an 'input' field")
        parsed, style = parse_job_input(self.stage, job.get("input"))
        record.style = style
        if isinstance(parsed, Warmup):
            record.warmup = True
            answer: dict[str, Any] = {"warm": True, "model": self.engine.identity(self.stage)}
            # The engine's load, so a cold start seen from outside (RunPod's delayTime holds
            # queue, container and load) can be split; engines that do not time it say nothing.
            for name in ("load_ms", "warmup_ms"):
                value = getattr(self.engine, name, None)
                if isinstance(value, int):
                    answer[name] = value
            return answer

        with _Timer(record, "inputs"):
            # Targets first: a refused target should not cost a download.
            await self._check_targets(parsed)
            request = await self._materialise(parsed, style, record)
        ctx = JobContext(scene=record.job_id, stage=self.stage)
        with _Timer(record, "engine"):
            result = await self._call_engine(request, ctx)
        record.model = result.model
        record.width, record.height = result.width, result.height
        if isinstance(result, AnimateResult):
            record.frames = result.frames
        with _Timer(record, "upload"):
            result = await self._upload(request, result, record)
        return format_output(result, style, request)

    # -- inputs ------------------------------------------------------------------------------------

    async def _materialise(
        self, request: EditRequest | AnimateRequest, style: OutputStyle, record: _JobRecord
    ) -> EditRequest | AnimateRequest:
        """Fetch URL inputs, check every input image, and return the request with inline inputs."""
        inputs = request.images if isinstance(request, EditRequest) else [request.image]
        labels = input_fields(style, request)
        inline: list[MediaInput] = []
        for media, label in zip(inputs, labels, strict=True):
            if media.url is not None:
                record.input_hosts.append(_host(media.url))
                try:
                    data = await fetch_url(
                        media.url,
                        max_bytes=self.max_input_bytes,
                        timeout=self.fetch_timeout,
                        allow_private=self.allow_private_urls,
                    )
                except FetchRefused as exc:
                    raise JobInputError(f"{label}: {exc.message}", hint=exc.hint) from None
            else:
                data = decode_media(media, label)
            try:
                # In a thread: verify() walks every PNG chunk, milliseconds for a big image.
                await asyncio.to_thread(inspect_image, data, max_pixels=self.max_image_pixels)
            except ImageRejected as exc:
                raise JobInputError(f"{label}: {exc.reason}", hint=exc.hint) from None
            record.inputs += 1
            record.input_bytes += len(data)
            inline.append(MediaInput.from_bytes(data) if media.url is not None else media)
        if isinstance(request, EditRequest):
            return request.model_copy(update={"images": inline})
        return request.model_copy(update={"image": inline[0]})

    async def _check_targets(self, request: EditRequest | AnimateRequest) -> None:
        """Refuse upload targets on addresses the worker may not reach, before the engine runs."""
        for name, target in _targets(request).items():
            try:
                await resolve_target(target.put_url, allow_private=self.allow_private_urls)
            except FetchRefused as exc:
                raise JobInputError(
                    f"outputs.{name}.put_url: {exc.message}", hint=exc.hint
                ) from None

    # -- engine ------------------------------------------------------------------------------------

    async def _call_engine(
        self, request: EditRequest | AnimateRequest, ctx: JobContext
    ) -> EditResult | AnimateResult:
        try:
            if isinstance(request, EditRequest):
                return await self.engine.edit(request, ctx)
            return await self.engine.animate(request, ctx)
        except ImageRejected as exc:
            # The header check passed but decoding failed (a truncated JPEG, say): still the input.
            raise JobInputError(f"an input image could not be decoded: {exc.reason}") from None
        except Exception as exc:
            if not is_cuda_oom(exc):
                raise
            _release_cuda_memory()
            raise WorkerOOMError(
                f"{OOM_TEXT}: {_oom_detail(exc)}",
                hint="transient: retry the job; it fits more often with fewer frames, a smaller "
                "size, or on a GPU with more memory",
            ) from exc

    # -- outputs -----------------------------------------------------------------------------------

    async def _upload(
        self,
        request: EditRequest | AnimateRequest,
        result: EditResult | AnimateResult,
        record: _JobRecord,
    ) -> EditResult | AnimateResult:
        media: dict[str, MediaOutput]
        if isinstance(result, AnimateResult):
            media = {"video": result.video, "last_frame": result.last_frame}
        else:
            media = {"image": result.image}
        for name, output in media.items():
            record.output_bytes[name] = output.size_bytes
        targets = _targets(request)
        if not targets:
            return result
        uploaded: dict[str, MediaOutput] = {}
        # One at a time: two outputs at most, and a failure then leaves no upload running behind.
        for name, target in targets.items():
            # Resolved and checked again now (the engine may have run for minutes since the early
            # check), and the PUT pinned to the address checked, like a fetch.
            try:
                pinned = await resolve_target(target.put_url, allow_private=self.allow_private_urls)
            except FetchRefused as exc:
                problem = f"outputs.{name}.put_url: {exc.message}"
                raise JobInputError(problem, hint=exc.hint) from None
            async with pinned_client(pinned, timeout=self.upload_timeout) as http:
                uploaded[name] = await upload_presigned(
                    target, media[name].decode(), client=http, timeout=self.upload_timeout
                )
            record.uploaded.append(name)
        return result.model_copy(update=uploaded)


def _targets(request: EditRequest | AnimateRequest) -> dict[str, OutputTarget]:
    return {str(name): target for name, target in request.outputs.items()}


def _oom_detail(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if OOM_TEXT in text:
        # torch says "CUDA out of memory. Tried to allocate ..."; keep what follows the phrase.
        text = text.split(OOM_TEXT, 1)[1].lstrip(" .:") or "no details"
    return text[:_MAX_LOGGED_ERROR]


def _release_cuda_memory() -> None:
    """Give cached CUDA blocks back after an OOM, so the next job starts from a clean allocator.

    Only if torch is already loaded (the preview engine never imports it); never masks the OOM.
    """
    torch: Any = sys.modules.get("torch")
    if torch is None:
        return
    # Best effort: whatever goes wrong here, the OOM error is what the caller must see.
    with contextlib.suppress(Exception):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _host(url: str) -> str:
    # Only the host goes to the log: paths and query strings may carry tokens or signatures.
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
