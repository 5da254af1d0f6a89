"""The ``worker-comfyui`` kind: RunPod's official ComfyUI image running a graph you exported.

The input document is ``{"workflow": <the graph with the scene's values injected>, "images":
[{name, image}]}``: the start frame (and a scene's soundtrack, which the worker uploads to
ComfyUI's input folder like any file) travel inline as base64 under content-derived names. The
worker answers ``{"images": [{filename, type: base64 | s3_url, data}]}``; the clip is the entry
with a video file name, downloaded when it is an S3 URL, and its last frame is decoded from it.
What the graph can render comes from the bindings file's ``[limits]`` (see
:mod:`~videokit.backends.kinds.comfy_workflow`); the cache identity holds the graph's fingerprint,
so an edited workflow never reuses results of the old one.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from videokit.backends.kinds.clips import decoded_clip_result
from videokit.backends.kinds.comfy_workflow import ComfyWorkflow, load_comfy_workflow
from videokit.backends.kinds.fetch import ResultFetcher
from videokit.backends.kinds.worker_documents import AnimateWorkerKind
from videokit.capabilities import AnimateCapabilities, EditCapabilities
from videokit.errors import ConfigError, EndpointError
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult, MediaInput

__all__ = ["VIDEO_SUFFIXES", "WorkerComfyApi"]

#: File names the worker's output entries carry for a video (core Save Video / Save WEBM).
VIDEO_SUFFIXES: Final = (".mp4", ".webm", ".mkv", ".mov")
_AUDIO_TYPES: Final = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"))


def _audio_suffix(data: bytes) -> str:
    for magic, suffix in _AUDIO_TYPES:
        if data.startswith(magic):
            return suffix
    if data[4:8] == b"ftyp":
        return ".m4a"
    return ".mp3"  # MPEG frames without an ID3 tag


class WorkerComfyApi(AnimateWorkerKind):
    """One ComfyUI graph and its bindings, run by ``worker-comfyui``."""

    name: Final = "worker-comfyui"

    def __init__(self, workflow: ComfyWorkflow, *, fetcher: ResultFetcher) -> None:
        self.workflow = workflow
        self.fetcher = fetcher
        # The graph file's name for people, its fingerprint for the cache.
        self.model: str | None = f"{workflow.workflow_path.stem}@{workflow.fingerprint[:12]}"
        limits = workflow.limits
        self.capabilities: EditCapabilities | AnimateCapabilities | None = AnimateCapabilities(
            endpoint=f"worker-comfyui ({workflow.source.name})",
            side_range=(limits.side_min, limits.side_max),
            side_multiple=limits.side_multiple,
            frame_range=(limits.frames_min, limits.frames_max),
            frame_step=limits.frames_step,
            fps_range=(int(limits.fps_min), int(limits.fps_max)),
            second_guidance=False,
            negative_prompt=workflow.bound("negative_prompt"),
            returns_last_frame=False,
            audio=workflow.bound("audio"),
            sampler_settings=workflow.bound("steps") or workflow.bound("cfg"),
        )

    @classmethod
    def load(cls, bindings: Path, *, storage: Any | None, fetcher: ResultFetcher) -> WorkerComfyApi:
        """The kind for the bindings file ``bindings`` (ConfigError listing every problem)."""
        del storage  # the worker takes files inline only; its S3 upload is configured on it
        return cls(load_comfy_workflow(bindings), fetcher=fetcher)

    async def input_document(self, request: EditRequest | AnimateRequest) -> dict[str, Any]:
        request = self.animate_request(request)
        problems = self.workflow.limits.problems(
            width=request.width, height=request.height, frames=request.frames, fps=request.fps
        )
        if problems:
            raise ConfigError(
                f"the workflow of {self.workflow.source} cannot render this clip: "
                + "; ".join(problems),
                hint="change the story (validate and plan say what fits), or the [limits] of "
                "the bindings file if the graph can do more",
            )
        image = _inline(request.image, "image")
        image_name = f"videokit-{hashlib.sha256(image).hexdigest()[:16]}.png"
        files = [{"name": image_name, "image": base64.b64encode(image).decode("ascii")}]
        audio_name = None
        if request.audio is not None:
            audio = _inline(request.audio, "audio")
            digest = hashlib.sha256(audio).hexdigest()[:16]
            audio_name = f"videokit-{digest}{_audio_suffix(audio)}"
            files.append({"name": audio_name, "image": base64.b64encode(audio).decode("ascii")})
        values = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": request.seed,
            "frames": request.frames,
            "width": request.width,
            "height": request.height,
            "fps": request.fps,
            "steps": request.steps,
            "cfg": request.guidance_scale,
        }
        graph = self.workflow.inject(values, image_name=image_name, audio_name=audio_name)
        return {"workflow": graph, "images": files}

    async def result(
        self,
        request: EditRequest | AnimateRequest,
        output: Mapping[str, Any],
        execution_ms: int | None,
    ) -> EditResult | AnimateResult:
        request = self.animate_request(request)
        entries = output.get("images")
        videos = [
            entry
            for entry in (entries if isinstance(entries, list) else [])
            if isinstance(entry, dict)
            and str(entry.get("filename", "")).lower().endswith(VIDEO_SUFFIXES)
        ]
        if not videos:
            warnings = output.get("errors")
            said = f" (the worker said: {'; '.join(map(str, warnings))})" if warnings else ""
            names = [e.get("filename") for e in entries or [] if isinstance(e, dict)]
            raise EndpointError(
                f"worker-comfyui returned no video (files: {names or 'none'}){said}",
                hint=f"the workflow {self.workflow.workflow_path.name} must end in ComfyUI's core "
                "Save Video node; check the worker's logs for a failed node",
            )
        entry = videos[0]
        data = entry.get("data")
        if not isinstance(data, str) or not data:
            raise EndpointError(f"worker-comfyui returned {entry.get('filename')} without data")
        if entry.get("type") == "s3_url":
            video = await self.fetcher.fetch(data, "video")
        else:
            video = MediaInput(base64=data).decode()
        return await decoded_clip_result(
            request, video, model=self.model, execution_ms=execution_ms
        )


def _inline(media: MediaInput, what: str) -> bytes:
    if media.base64 is None:
        raise ConfigError(
            f"worker-comfyui takes the {what} inline, and this request has it by URL",
            hint="render without S3 input offloading for this endpoint",
        )
    return media.decode()
