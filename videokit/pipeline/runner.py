"""The render pipeline: one async core that runs a story's scene graph and stitches the result.

Every scene is a task that waits only for the frame it starts from, so independent branches run at
the same time, bounded per stage by the backend's concurrency. Each stage's result goes into the
content-addressed cache and the manifest is rewritten after every change, which is what makes
re-renders free for unchanged scenes and lets a killed render resume where it stopped.
``Pipeline.run()`` is a thin synchronous wrapper over ``Pipeline.arun()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from videokit._version import __version__
from videokit.backends import create_backend
from videokit.backends.base import Backend, JobContext, Stage
from videokit.config import Settings
from videokit.errors import ConfigError, RenderError, StoryError, VideoKitError
from videokit.media.clips import open_clip
from videokit.media.contact_sheet import ContactCell, make_contact_sheet
from videokit.media.probe import extract_frame
from videokit.media.stitch import AudioTrack, Segment, stitch
from videokit.pipeline.cache import CacheEntry, CacheStore, cache_key, file_sha256
from videokit.pipeline.events import (
    CostUpdated,
    Event,
    EventHandler,
    JobSubmitted,
    RenderDone,
    RenderStarted,
    SceneCached,
    SceneDone,
    SceneFailed,
    SceneProgress,
    SceneQueued,
    SceneSkipped,
    SceneStarted,
    StitchDone,
    StitchProgress,
    StitchStarted,
)
from videokit.pipeline.manifest import (
    MANIFEST_VERSION,
    AttemptRecord,
    FinalRecord,
    Manifest,
    SceneRecord,
    StageRecord,
    StageStatus,
)
from videokit.pipeline.requests import (
    animate_request,
    edit_request,
    payload_bounds,
    request_params,
)
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult
from videokit.story.loader import load_story
from videokit.story.model import Scene, Story, slugify
from videokit.story.plan import ScenePlan, StoryPlan, plan_story, unwritable_reason

__all__ = ["Pipeline", "RenderResult", "SceneOutput"]

log = logging.getLogger("videokit.pipeline")


@dataclass(frozen=True)
class SceneOutput:
    """What one scene produced. Paths point into the work directory."""

    id: str
    clip: Path
    first_frame: Path
    last_frame: Path
    edited_frame: Path | None
    seed: int
    frames: int
    fps: int
    cached: bool
    seconds: float
    cost_usd: float
    job_ids: dict[str, str] = field(default_factory=dict)

    def open_clip(self, *, audio: bool = False) -> AbstractContextManager[Any]:
        """The clip as a frame-exact moviepy ``VideoFileClip``, closed when the block ends."""
        return open_clip(self.clip, frames=self.frames, fps=self.fps, audio=audio)


@dataclass(frozen=True)
class RenderResult:
    """The outcome of :meth:`Pipeline.run`."""

    workdir: Path
    final_video: Path | None
    contact_sheet: Path | None
    manifest: Path
    scenes: dict[str, SceneOutput]
    frames: int | None
    fps: int
    seconds: float
    cost_usd: float
    # Worth a look although the render succeeded; the CLI prints them (see _model_warnings).
    warnings: list[str] = field(default_factory=list)

    def open_video(self) -> AbstractContextManager[Any]:
        """The final video as a frame-exact moviepy ``VideoFileClip`` (with its audio)::

        with result.open_video() as clip:
            clip.subclipped(0, 2).write_videofile("teaser.mp4", audio_codec="aac")
        """
        if self.final_video is None or self.frames is None:
            raise VideoKitError(
                "this render made no final video (it rendered only some scenes)",
                hint="render without --only / only= to stitch the final video",
            )
        return open_clip(self.final_video, frames=self.frames, fps=self.fps)

    @property
    def rendered(self) -> list[str]:
        return [s.id for s in self.scenes.values() if not s.cached]

    @property
    def cached(self) -> list[str]:
        return [s.id for s in self.scenes.values() if s.cached]


class _UpstreamFailed(Exception):
    def __init__(self, scene: str) -> None:
        super().__init__(scene)
        self.scene = scene


StoryInput = Story | str | os.PathLike[str] | Sequence[Scene]


def _coerce_story(story: StoryInput, *, reference: str | Path | None, title: str | None) -> Story:
    if isinstance(story, Story):
        return story
    if isinstance(story, str | os.PathLike):
        return load_story(Path(story))
    scenes = list(story)
    if reference is None:
        raise StoryError(
            "a list of scenes needs a reference image",
            hint="Pipeline(scenes, reference='me.png'), or build a videokit.Story",
        )
    return Story(title=title or "untitled", reference=reference, scenes=scenes)


class Pipeline:
    """Render a story: ``Pipeline("story.yaml").run()``.

    ``story`` is a :class:`Story`, a path to a YAML story, or a list of :class:`Scene` (then give
    ``reference``). ``backend`` is a backend object or name (default: from ``VIDEOKIT_BACKEND``,
    else the CPU preview). ``out`` is the work directory (default ``out/<story-name>``). ``force``
    ignores the cache; ``only`` renders just these scenes (ignoring their cache) and what they need.
    """

    def __init__(
        self,
        story: StoryInput,
        *,
        backend: Backend | str | None = None,
        out: str | Path | None = None,
        force: bool = False,
        only: Sequence[str] | None = None,
        concurrency: int | None = None,
        on_event: EventHandler | None = None,
        reference: str | Path | None = None,
        title: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.story = _coerce_story(story, reference=reference, title=title)
        self.settings = settings or Settings.resolve(
            backend=backend if isinstance(backend, str) else None,
            concurrency=concurrency,
            story=self.story,
        )
        self._backend = backend
        self._created: Backend | None = None
        self.out = Path(out) if out is not None else None
        self.force = force
        self.only = list(only) if only else None
        self.on_event = on_event
        self._plan: StoryPlan | None = None

    @property
    def workdir(self) -> Path:
        return self.out or self.settings.out_dir / self.story.slug()

    def check_workdir(self) -> None:
        """Raise :class:`ConfigError` if :attr:`workdir` cannot be used; creates nothing.

        It must be creatable and writable. A *default* work dir must also not hold another story
        file's render: the default is keyed by the file's stem, so ``a/story.yaml`` and
        ``b/story.yaml`` would share ``out/story``, and rendering one would prune the other's
        scenes and replace its final video. An explicit ``out`` is used as given.
        """
        workdir = self.workdir
        reason = unwritable_reason(workdir)
        if reason is not None:
            raise ConfigError(
                f"cannot use {workdir} as the work directory: {reason}",
                hint="give a writable directory with --out DIR, or out= in Python "
                "(it is created if missing)",
            )
        source = self.story.source
        if self.out is not None or source is None:
            return
        owner = Manifest.load(workdir / "manifest.json").story
        mine = str(source.resolve())
        if owner is None or owner == mine:
            return
        suggested = workdir.with_name(f"{slugify(source.resolve().parent.name)}-{workdir.name}")
        raise ConfigError(
            f"the default work directory {workdir} holds the render of another story file, "
            f"{owner}; rendering {mine} there would replace its scenes and final video",
            hint=f"give this story its own directory with --out DIR (out= in Python), e.g. "
            f"--out {suggested}; or delete {workdir} if that story is gone or was moved here",
        )

    def plan(self) -> StoryPlan:
        """Check everything and return the plan; submits nothing. Raises :class:`StoryError`.

        The plan is computed once per pipeline (it reads and decodes every file the story names).
        """
        if self._plan is not None:
            return self._plan
        plan = plan_story(self.story)
        unknown = [s for s in self.only or [] if s not in plan.scenes]
        if unknown:
            raise StoryError(
                f"--only names unknown scene(s): {', '.join(unknown)}",
                hint=f"scenes are: {', '.join(plan.scenes)}",
            )
        self._plan = plan
        return plan

    def backend(self) -> Backend:
        """The backend this pipeline renders with (created on first use, then reused)."""
        if isinstance(self._backend, Backend):
            return self._backend
        if self._created is None:
            self._created = create_backend(self._backend, self.settings)
        return self._created

    def run(self) -> RenderResult:
        """Render synchronously; see :meth:`arun`.

        Called where an event loop is already running (a Jupyter cell, an async web handler), the
        same core runs on a private loop in a worker thread and this call blocks until it is done;
        in async code, ``await pipeline.arun()`` instead.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun())
        return _run_in_thread(self.arun)

    async def arun(self) -> RenderResult:
        """Render the story: every scene (cached where possible), then the final video."""
        plan = self.plan()  # bad input fails here, before a backend even exists
        backend = self.backend()
        try:
            # e.g. a missing endpoint id, or requests too big to send: fail before submitting.
            backend.check(plan.stages(), payload_bytes=payload_bounds(plan))
            workdir = self.workdir
            self.check_workdir()
            _make_workdir(workdir)
            with _exclusive(workdir):
                render = _Render(self, plan, backend, workdir)
                return await render.execute()
        finally:
            if backend is self._created:
                # A backend we created holds connections bound to this event loop: close it here.
                self._created = None
                await backend.aclose()


def _run_in_thread(main: Callable[[], Coroutine[Any, Any, RenderResult]]) -> RenderResult:
    """Run ``main()`` on a private event loop in a worker thread, and wait for it.

    Ctrl-C in the waiting thread cancels the render (which cancels its remote jobs) before it
    propagates, as it would with ``asyncio.run`` in a plain script.
    """
    started = threading.Event()
    tasks: list[asyncio.Task[RenderResult]] = []

    async def render() -> RenderResult:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        started.set()
        return await main()

    with ThreadPoolExecutor(1, "videokit-render") as pool:
        future = pool.submit(asyncio.run, render())
        try:
            return future.result()
        except KeyboardInterrupt:
            started.wait()
            with contextlib.suppress(RuntimeError):  # the loop already closed: nothing to stop
                tasks[0].get_loop().call_soon_threadsafe(tasks[0].cancel)
            with contextlib.suppress(BaseException):
                future.result()
            raise


def _make_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(
            f"cannot use {workdir} as the work directory: it, or a folder above it, is a file",
            hint="render into another directory with --out",
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create the work directory {workdir}: {exc.strerror}",
            hint="render into a writable directory with --out",
        ) from None
    if not os.access(workdir, os.W_OK):
        raise ConfigError(
            f"the work directory {workdir} is not writable",
            hint="render into a writable directory with --out",
        )


@contextmanager
def _exclusive(workdir: Path) -> Iterator[None]:
    # The kernel drops flock locks when a process dies, so a SIGKILLed render never blocks resume.
    with (workdir / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another videokit render is using {workdir}",
                hint="wait for it to finish, or render into another directory with --out",
            ) from None
        yield


class _Render:
    def __init__(self, pipeline: Pipeline, plan: StoryPlan, backend: Backend, workdir: Path):
        self.pipeline = pipeline
        self.plan = plan
        self.backend = backend
        self.workdir = workdir
        self.cache = CacheStore(workdir / "cache")
        self.manifest_path = workdir / "manifest.json"
        self.manifest = Manifest.load(self.manifest_path)
        self.outputs: dict[str, SceneOutput] = {}
        self.failures: dict[str, BaseException] = {}
        self.total_cost = 0.0  # spent by this render
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._emit_lock = threading.Lock()
        # The first exception an on_event handler raised: it aborts the render and is re-raised.
        self._handler_error: BaseException | None = None
        self._scene_tasks: list[asyncio.Task[None]] = []
        limit = pipeline.settings.concurrency
        self._slots: dict[Stage, asyncio.Semaphore] = {
            stage: asyncio.Semaphore(limit or backend.concurrency(stage))
            for stage in ("edit", "animate")
        }
        self._warmed = False
        # (scene, stage, steps, the model that made its result, whether it came from the cache)
        self._models: list[tuple[str, Stage, int, str | None, bool]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._last: dict[str, asyncio.Future[bytes]] = {}
        self._edited: dict[str, asyncio.Future[bytes]] = {}
        only = pipeline.only
        graph = plan.graph
        if only:
            self.needed = set(only).union(*(graph.ancestors(s) for s in only))
            self.forced = set(only)
        else:
            self.needed = set(plan.scenes)
            self.forced = set(plan.scenes) if pipeline.force else set()

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        handler = self.pipeline.on_event
        if handler is None or self._handler_error is not None:
            return
        if threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.emit, event)
            return
        with self._emit_lock:
            try:
                handler(event)
            except Exception as exc:
                # A display that cannot keep up (a closed pipe, a bug in a callback) must not
                # leave remote jobs running unobserved: stop the render, then re-raise it as is.
                self._handler_error = exc
                for task in self._scene_tasks:
                    task.cancel()

    def _raise_handler_error(self) -> None:
        if self._handler_error is not None:
            raise self._handler_error

    def save(self, *, durable: bool = False) -> None:
        self.manifest.save(self.manifest_path, durable=durable)

    # -- the render -----------------------------------------------------------------------------
    async def execute(self) -> RenderResult:
        started = time.monotonic()
        plan = self.plan
        story = plan.story
        self.manifest.version = MANIFEST_VERSION
        self.manifest.videokit = __version__
        self.manifest.title = story.title
        self.manifest.story = str(story.source.resolve()) if story.source else None
        self.manifest.backend = self.backend.name
        self.manifest.timeline = [e.scene for e in plan.timeline]
        self.manifest.warmup = []
        self.manifest.run_cost_usd = 0.0
        self._forget_removed_scenes()
        order = [s for s in plan.graph.topological() if s in self.needed]
        jobs = {
            "edit": sum(1 for s in order if plan.scenes[s].edit is not None),
            "animate": len(order),
        }
        self.emit(
            RenderStarted(
                story=story.title,
                backend=self.backend.name,
                workdir=str(self.workdir),
                scenes=order,
                jobs=jobs,
            )
        )
        for scene_id in order:
            self._last[scene_id] = self._loop.create_future()
            self._edited[scene_id] = self._loop.create_future()
        try:
            async with asyncio.TaskGroup() as group:
                for scene_id in order:
                    self._scene_tasks.append(
                        group.create_task(self._scene(plan.scenes[scene_id]), name=scene_id)
                    )
        finally:
            for task in self._background:
                task.cancel()
            # Let warm-up jobs be cancelled remotely and recorded before the manifest is saved.
            await asyncio.gather(*self._background, return_exceptions=True)
            for future in (*self._last.values(), *self._edited.values()):
                if future.done() and not future.cancelled():
                    future.exception()  # mark as retrieved: failures are reported once, below
            self.save()
        self._raise_handler_error()
        if self.failures:
            raise RenderError(self.failures)

        await self._first_frames()
        final: Path | None = None
        frames: int | None = None
        if self.pipeline.only is None:
            final, frames = await asyncio.to_thread(self._stitch)
        self._raise_handler_error()
        sheet = await asyncio.to_thread(self._contact_sheet)
        seconds = time.monotonic() - started
        self.manifest.seconds = round(seconds, 3)
        self.save()
        warnings = self._model_warnings()
        result = RenderResult(
            workdir=self.workdir,
            final_video=final,
            contact_sheet=sheet,
            manifest=self.manifest_path,
            scenes=dict(self.outputs),
            frames=frames,
            fps=plan.fps,
            seconds=seconds,
            cost_usd=self.total_cost,
            warnings=warnings,
        )
        self.emit(
            RenderDone(
                final=str(final) if final else None,
                contact_sheet=str(sheet) if sheet else None,
                manifest=str(self.manifest_path),
                seconds=round(seconds, 3),
                cost_usd=round(self.total_cost, 6),
                rendered=result.rendered,
                cached=result.cached,
                warnings=warnings,
            )
        )
        self._raise_handler_error()
        return result

    def _model_warnings(self) -> list[str]:
        """Cached results made by another model than the one the endpoint serves now.

        A backend's identity (part of every cache key) names the endpoint, not the model behind
        it, which this side cannot know before a job reports it: redeploying an endpoint with
        another model (or mode) leaves earlier results cached under the same keys. When a job of
        this render reports a model that a reused result does not, say which scenes to redo.
        """
        warnings: list[str] = []
        # A worker's model name can depend on the step count (Qwen's Lightning LoRA is chosen by
        # it: .../lightning-4 or .../lightning-8), so results are compared per step count.
        groups = sorted({(stage, steps) for _, stage, steps, _, _ in self._models})
        for stage, steps in groups:
            mine = [(s, m, c) for s, st, n, m, c in self._models if (st, n) == (stage, steps)]
            served = sorted({m for _, m, cached in mine if not cached and m})
            stale = [(s, m) for s, m, cached in mine if cached and m and m not in served]
            if not served or not stale:
                continue
            scenes = sorted(scene_id for scene_id, _ in stale)
            made_by = sorted({model for _, model in stale if model})
            warnings.append(
                f"the {stage} endpoint now serves {' and '.join(served)}, but the cached "
                f"{stage} results of scene(s) {', '.join(scenes)} were made by "
                f"{' and '.join(made_by)}; render with --force (or --force --only "
                f"{' --only '.join(scenes)}) to remake them with the current model"
            )
        return warnings

    def _forget_removed_scenes(self) -> None:
        """Drop scenes the story no longer has from the manifest and ``scenes/`` (not the cache)."""
        removed = [s for s in self.manifest.scenes if s not in self.plan.scenes]
        for scene_id in removed:
            del self.manifest.scenes[scene_id]
            shutil.rmtree(self.workdir / "scenes" / scene_id, ignore_errors=True)

    def _spend(self, cost: float) -> None:
        self.total_cost += cost
        self.manifest.run_cost_usd = round(self.total_cost, 6)

    async def _input_frame(self, scene: ScenePlan) -> bytes:
        source = scene.source
        if source.kind == "reference":
            return self.plan.references[0].read_bytes()
        if source.kind == "file":
            assert source.path is not None
            return source.path.read_bytes()
        assert source.scene is not None
        futures = self._last if source.kind == "scene" else self._edited
        try:
            return await futures[source.scene]
        except _UpstreamFailed as exc:
            raise _UpstreamFailed(exc.scene) from None
        except asyncio.CancelledError:
            raise
        except Exception:
            raise _UpstreamFailed(source.scene) from None

    async def _scene(self, scene: ScenePlan) -> None:
        started = time.monotonic()
        self.emit(SceneQueued(scene=scene.id, frames=scene.frames, waits_for=scene.source.scene))
        stage: Stage | None = None
        try:
            image = await self._input_frame(scene)
            self._record(scene, image)
            forced = scene.id in self.forced
            edit_entry: CacheEntry | None = None
            edit_cost = 0.0
            edit_cached = True
            if scene.edit is not None:
                stage = "edit"
                edit = edit_request(scene, image)
                edit_entry, edit_cost, edit_cached = await self._stage(scene, "edit", edit, forced)
                image = edit_entry.file("image.png").read_bytes()
            self._edited[scene.id].set_result(image)
            stage = "animate"
            animate = animate_request(scene, image)
            entry, cost, cached = await self._stage(scene, "animate", animate, forced)
            # Release the scenes that start from this one before the bookkeeping below.
            self._last[scene.id].set_result(entry.file("last.png").read_bytes())
            output = self._materialize(
                scene, entry, edit_entry, edit_cached and cached, started, cost + edit_cost
            )
        except asyncio.CancelledError:
            for futures in (self._last, self._edited):
                if not futures[scene.id].done():
                    futures[scene.id].cancel()
            self._set_status(scene, "cancelled", "interrupted before it finished")
            raise
        except _UpstreamFailed as exc:
            self._fail_futures(scene.id, exc)
            self._set_status(scene, "skipped", f"upstream scene '{exc.scene}' failed")
            self.emit(SceneSkipped(scene=scene.id, reason=f"upstream scene '{exc.scene}' failed"))
            return
        except Exception as exc:
            self._fail_futures(scene.id, _UpstreamFailed(scene.id))
            self.failures[scene.id] = exc
            self._set_status(scene, "failed", str(exc))
            self.emit(SceneFailed(scene=scene.id, stage=stage, error=str(exc)))
            return
        self.outputs[scene.id] = output
        self.emit(
            SceneDone(
                scene=scene.id,
                clip=str(output.clip),
                last_frame=str(output.last_frame),
                seconds=round(output.seconds, 3),
                cost_usd=round(output.cost_usd, 6),
                cached=output.cached,
            )
        )

    def _fail_futures(self, scene_id: str, exc: BaseException) -> None:
        for futures in (self._last, self._edited):
            if not futures[scene_id].done():
                futures[scene_id].set_exception(exc)

    def _set_status(self, scene: ScenePlan, status: str, error: str | None) -> None:
        record = self.manifest.scenes.get(scene.id)
        if record is None:
            record = SceneRecord(source=scene.source.describe(), seed=scene.seed)
            self.manifest.scenes[scene.id] = record
        record.status = status  # type: ignore[assignment]
        record.error = error
        self.save()

    def _record(self, scene: ScenePlan, image: bytes) -> None:
        """The scene's manifest record, reset for this render (stage records are kept: resume)."""
        record = self.manifest.scenes.get(scene.id)
        if record is None:
            record = SceneRecord(source=scene.source.describe(), seed=scene.seed)
            self.manifest.scenes[scene.id] = record
        record.status = "running"
        record.source = scene.source.describe()
        record.seed = scene.seed
        record.input_sha256 = hashlib.sha256(image).hexdigest()
        record.notes = [scene.frames_note] if scene.frames_note else []
        record.error = None
        record.outputs = {}  # until this render has them
        if scene.edit is None:
            record.edit = None

    async def _stage(
        self,
        scene: ScenePlan,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        forced: bool,
    ) -> tuple[CacheEntry, float, bool]:
        """Run one stage of a scene (or take it from the cache): (entry, cost spent now, cached)."""
        identity = self.backend.identity(stage)
        key = cache_key(identity, request)
        record = self.manifest.scenes[scene.id]
        previous: StageRecord | None = getattr(record, stage)
        described = {
            "key": key,
            "seed": request.seed,
            "input_sha256": _input_sha256(request),
            "params": request_params(request),
        }
        if not forced:
            entry = self.cache.get(stage, key)
            if entry is not None:
                setattr(
                    record,
                    stage,
                    StageRecord(
                        **described,
                        status="done",
                        cached=True,
                        job_id=entry.meta.get("job_id"),
                        attempts=[AttemptRecord(**a) for a in entry.meta.get("attempts", [])],
                        cost_usd=float(entry.meta.get("cost_usd", 0.0)),
                        outputs={n: str(entry.file(n)) for n in entry.meta["files"]},
                    ),
                )
                self.save()
                self._models.append((scene.id, stage, request.steps, entry.meta.get("model"), True))
                self.emit(SceneCached(scene=scene.id, stage=stage))
                return entry, 0.0, True
        if stage == "edit" and not self._warmed:
            # The first edit to run: wake the animate endpoint now so its cold start overlaps it.
            self._warmed = True
            self._background.add(asyncio.create_task(self._warm_up("animate")))
        same_job = previous is not None and previous.key == key
        resume = None
        if same_job and previous is not None and previous.status == "submitted":
            resume = previous.job_id
        # Attempts an earlier render made for this very job stay on the record: they were paid.
        earlier = list(previous.attempts) if same_job and previous is not None else []
        stage_record = StageRecord(
            **described,
            job_id=resume,
            status="submitted" if resume else "queued",
            attempts=earlier,
        )
        setattr(record, stage, stage_record)  # saved with the job id, once it is known

        async def submitted(job_id: str) -> None:
            stage_record.job_id = job_id
            stage_record.status = "submitted"
            self._record_attempts(stage_record, earlier, ctx)
            self.save(durable=True)  # before any waiting: a resumed render re-attaches to it
            self.emit(
                JobSubmitted(scene=scene.id, stage=stage, job_id=job_id, resumed=job_id == resume)
            )

        def progress(fraction: float, message: str | None) -> None:
            self.emit(
                SceneProgress(scene=scene.id, stage=stage, fraction=fraction, message=message)
            )

        ctx = JobContext(
            scene=scene.id,
            stage=stage,
            resume_job_id=resume,
            on_submitted=submitted,
            on_progress=progress,
        )
        async with self._slots[stage]:
            self.emit(SceneStarted(scene=scene.id, stage=stage))
            started = time.monotonic()
            try:
                result: EditResult | AnimateResult
                if isinstance(request, EditRequest):
                    result = await self.backend.edit(request, ctx)
                else:
                    result = await self.backend.animate(request, ctx)
            except BaseException as exc:
                stage_record.status = _status_after(exc, ctx)
                if not isinstance(exc, asyncio.CancelledError):
                    stage_record.error = str(exc)
                self._spend(self._record_attempts(stage_record, earlier, ctx))
                raise
            seconds = time.monotonic() - started
        cost = self._record_attempts(stage_record, earlier, ctx)
        files = _result_files(result)
        meta = {
            "identity": identity,
            "model": result.model,
            "seed": result.seed,
            "inference_ms": result.inference_ms,
            "job_id": stage_record.job_id,
            "frames": getattr(result, "frames", None),
            "params": request_params(request),
            # What this result cost to make, so a later render that reuses it can say so.
            "cost_usd": stage_record.cost_usd,
            "attempts": [a.model_dump(mode="json") for a in stage_record.attempts],
        }
        entry = await asyncio.to_thread(self.cache.put, stage, key, files, meta)
        self._models.append((scene.id, stage, request.steps, result.model, False))
        stage_record.status = "done"
        stage_record.seconds = round(seconds, 3)
        stage_record.outputs = {name: str(entry.file(name)) for name in files}
        self._spend(cost)
        self.save()
        if cost:
            self.emit(
                CostUpdated(scene=scene.id, stage=stage, cost_usd=cost, total_usd=self.total_cost)
            )
        return entry, cost, False

    @staticmethod
    def _record_attempts(
        stage_record: StageRecord, earlier: list[AttemptRecord], ctx: JobContext
    ) -> float:
        """Put every attempt on the record; return what this render's attempts cost.

        A re-attached job is the earlier render's last attempt, seen again: this render's view
        of it is the later one (it saw the job end, and knows its cost), so it replaces that one
        attempt. Earlier attempts with the same id (RunPod's ``retry`` keeps the id) stay.
        """
        current = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
        kept = list(earlier)
        resumed = ctx.resume_job_id
        if resumed is not None and kept and kept[-1].job_id == resumed and current:
            before, again = kept.pop(), current[0]
            if again.job_id == resumed and again.cost_usd < before.cost_usd:
                # Interrupted again before the endpoint said what the job cost: what the
                # earlier render estimated is still the better figure.
                again.cost_usd, again.cost_estimated = before.cost_usd, before.cost_estimated
        stage_record.attempts = [*kept, *current]
        stage_record.cost_usd = round(sum(a.cost_usd for a in stage_record.attempts), 6)
        return round(sum(a.cost_usd for a in current), 6)

    async def _warm_up(self, stage: Stage) -> None:
        """Wake ``stage``'s endpoint; its warm-up job is recorded (and billed) like any job."""
        ctx = JobContext(scene="(warm-up)", stage=stage)

        async def submitted(job_id: str) -> None:
            self.manifest.warmup = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
            self.save(durable=True)

        ctx.on_submitted = submitted
        try:
            await self.backend.warm_up(stage, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a warm-up is an optimisation: never fail a render over it
            log.info("warm-up of the %s endpoint failed: %s", stage, exc)
        finally:
            self.manifest.warmup = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
            self._spend(sum(a.cost_usd for a in ctx.attempts))
            self.save()

    def _materialize(
        self,
        scene: ScenePlan,
        entry: CacheEntry,
        edit_entry: CacheEntry | None,
        cached: bool,
        started: float,
        spent: float,
    ) -> SceneOutput:
        folder = self.workdir / "scenes" / scene.id
        folder.mkdir(parents=True, exist_ok=True)
        clip = _link(entry.file("clip.mp4"), folder / "clip.mp4")
        first = folder / "first.png"  # decoded later, off the critical path (see _first_frames)
        last = _link(entry.file("last.png"), folder / "last.png")
        edited = _link(edit_entry.file("image.png"), folder / "edit.png") if edit_entry else None
        if edit_entry is None:
            (folder / "edit.png").unlink(missing_ok=True)
        record = self.manifest.scenes[scene.id]
        job_ids = {
            stage: rec.job_id
            for stage, rec in (("edit", record.edit), ("animate", record.animate))
            if rec is not None and rec.job_id
        }
        seconds = time.monotonic() - started
        record.status = "done"
        record.seconds = round(seconds, 3)
        record.outputs = {
            "clip": _rel(clip, self.workdir),
            "first_frame": _rel(first, self.workdir),
            "last_frame": _rel(last, self.workdir),
            **({"edited_frame": _rel(edited, self.workdir)} if edited else {}),
        }
        self.save()
        return SceneOutput(
            id=scene.id,
            clip=clip,
            first_frame=first,
            last_frame=last,
            edited_frame=edited,
            seed=scene.seed,
            frames=int(entry.meta.get("frames") or scene.frames),
            fps=scene.fps,
            cached=cached,
            seconds=seconds,
            cost_usd=spent,
            job_ids=job_ids,
        )

    async def _first_frames(self) -> None:
        """Decode each clip's first frame once (cached with the clip) for the contact sheet."""

        async def one(scene_id: str) -> None:
            record = self.manifest.scenes[scene_id].animate
            assert record is not None
            entry = self.cache.get("animate", record.key)
            if entry is None:
                return
            if not entry.file("first.png").exists():
                first = await asyncio.to_thread(_first_frame, entry.file("clip.mp4"))
                self.cache.add_file(entry, "first.png", first)
            _link(entry.file("first.png"), self.outputs[scene_id].first_frame)

        await asyncio.gather(*(one(scene_id) for scene_id in self.outputs))

    # -- stitching and the contact sheet --------------------------------------------------------
    def _stitch(self) -> tuple[Path, int]:
        plan = self.plan
        output = plan.output or self.workdir / "final.mp4"
        output.parent.mkdir(parents=True, exist_ok=True)
        segments: list[Segment] = []
        for entry in plan.timeline:
            scene_output = self.outputs[entry.scene]
            if scene_output.frames != entry.frames:
                raise VideoKitError(
                    f"scene '{entry.scene}': the backend returned {scene_output.frames} frames, "
                    f"the story asked for {entry.frames}",
                    hint="the endpoint may run an old worker; redeploy it",
                )
            segments.append(
                Segment(
                    path=scene_output.clip,
                    frames=scene_output.frames,
                    drop_head=entry.drop_head,
                    crossfade=entry.crossfade,
                )
            )
        audio = AudioTrack(plan.audio, fade_out_s=plan.audio_fade_out) if plan.audio else None
        key = _stitch_key(segments, audio, plan)
        previous = self.manifest.final
        if previous is not None and previous.key == key and output.exists():
            self.emit(
                StitchDone(
                    output=str(output),
                    frames=previous.frames,
                    method=previous.method,
                    seconds=0.0,
                    cached=True,
                )
            )
            return output, previous.frames
        self.emit(StitchStarted(frames=plan.final_frames, output=str(output)))
        report = stitch(
            segments,
            output,
            fps=plan.fps,
            width=plan.width,
            height=plan.height,
            audio=audio,
            crf=plan.crf,
            preset=plan.preset,
            on_progress=lambda done, total: self.emit(StitchProgress(done=done, total=total)),
        )
        self.manifest.final = FinalRecord(
            path=str(output),
            key=key,
            frames=report.frames,
            fps=report.fps,
            width=report.width,
            height=report.height,
            method=report.method,
            seconds=round(report.seconds, 3),
            formula=plan.frame_formula(),
        )
        self.save()
        self.emit(
            StitchDone(
                output=str(output),
                frames=report.frames,
                method=report.method,
                seconds=round(report.seconds, 3),
            )
        )
        return output, report.frames

    def _contact_sheet(self) -> Path | None:
        if not self.outputs:
            return None
        order = [e.scene for e in self.plan.timeline] + list(self.plan.branches)
        cells: list[ContactCell] = []
        for scene_id in order:
            notes = ["branch"] if scene_id in self.plan.branches else []
            if scene_id in self.outputs:
                first, last = self.outputs[scene_id].first_frame, self.outputs[scene_id].last_frame
            else:
                # --only renders a few scenes: the sheet keeps the others from earlier renders
                # (labelled so), instead of being replaced by a sheet of just these.
                earlier = self._earlier_frames(scene_id)
                if earlier is None:
                    continue
                first, last = earlier
                notes.append("earlier render")
            cells.append(
                ContactCell(label=scene_id, first=first, last=last, note=", ".join(notes) or None)
            )
        path = self.workdir / "contact_sheet.png"
        make_contact_sheet(cells, path, title=self.plan.story.title)
        self.manifest.contact_sheet = _rel(path, self.workdir)
        return path

    def _earlier_frames(self, scene_id: str) -> tuple[Path, Path] | None:
        record = self.manifest.scenes.get(scene_id)
        if record is None or record.status != "done":
            return None
        try:
            first = self.workdir / record.outputs["first_frame"]
            last = self.workdir / record.outputs["last_frame"]
        except KeyError:
            return None
        return (first, last) if first.is_file() and last.is_file() else None


# Attempt states in which a job may still be queued or running on the endpoint.
_MAY_STILL_RUN = frozenset({"submitted", "IN_QUEUE", "IN_PROGRESS", "RUNNING"})


def _status_after(exc: BaseException, ctx: JobContext) -> StageStatus:
    """A stage's manifest status once its job call raised ``exc``.

    "submitted" whenever the job may still run on the endpoint (its cancel was not confirmed, or
    we were interrupted before re-attaching to it): the next render re-attaches to it instead of
    paying for it twice. Otherwise the next render submits afresh.
    """
    last = ctx.attempts[-1] if ctx.attempts else None
    if last is None:
        if ctx.resume_job_id is not None:
            return "submitted"  # interrupted before re-attaching: the job is still ours
        return "queued" if isinstance(exc, asyncio.CancelledError) else "failed"
    if last.status in _MAY_STILL_RUN and last.job_id not in ("", "unknown"):
        return "submitted"
    return "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"


def _input_sha256(request: EditRequest | AnimateRequest) -> str:
    """The hash of the image a stage works on (the one to edit, or the one to animate)."""
    media = request.images[0] if isinstance(request, EditRequest) else request.image
    return media.fingerprint().removeprefix("sha256:")


def _result_files(result: EditResult | AnimateResult) -> dict[str, bytes]:
    if isinstance(result, EditResult):
        return {"image.png": result.image.decode()}
    return {"clip.mp4": result.video.decode(), "last.png": result.last_frame.decode()}


def _first_frame(clip: Path) -> bytes:
    target = clip.with_name(f".first-{os.getpid()}-{threading.get_ident()}.png")
    try:
        extract_frame(clip, 0, target)
        return target.read_bytes()
    finally:
        target.unlink(missing_ok=True)


def _link(source: Path, target: Path) -> Path:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)  # another filesystem, or links not supported
    os.replace(tmp, target)
    return target


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _stitch_key(segments: list[Segment], audio: AudioTrack | None, plan: StoryPlan) -> str:
    payload = {
        "segments": [(file_sha256(s.path), s.frames, s.drop_head, s.crossfade) for s in segments],
        "audio": (file_sha256(audio.path), audio.fade_out_s) if audio else None,
        "video": (plan.width, plan.height, plan.fps, plan.crf, plan.preset),
        "output": str(plan.output) if plan.output else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
