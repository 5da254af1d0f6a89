"""One render of a planned story: the scene graph scheduled as tasks, then the film.

Every scene is a task that waits only for the frame it starts from, so independent branches run at
the same time (bounded per stage by :class:`~videokit.pipeline.stages.StageRunner`). With ``only``
the named scenes are rendered and every other scene is brought up to date from the cache alone:
a scene whose input changed and that no cached result matches is *stale*, and the film is stitched
only when every scene on the timeline is current.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import threading
import time
import uuid
from collections.abc import Collection
from datetime import UTC, datetime
from pathlib import Path

from videokit._version import __version__
from videokit.backends.base import Backend, Stage
from videokit.costs import CostModel
from videokit.errors import BudgetSpentError, RenderError
from videokit.pipeline.accounts import bill, record_starts, register
from videokit.pipeline.budget import Budget
from videokit.pipeline.cache import CacheEntry, CacheStore, lookup
from videokit.pipeline.drift import model_warnings
from videokit.pipeline.events import (
    Event,
    EventHandler,
    RenderDone,
    RenderStarted,
    SceneDone,
    SceneFailed,
    SceneQueued,
    SceneSkipped,
)
from videokit.pipeline.finishing import contact_sheet, first_frames, stitch_film, write_film_report
from videokit.pipeline.ledger import Ledger
from videokit.pipeline.manifest import (
    MANIFEST_VERSION,
    Manifest,
    RunRecord,
    SceneRecord,
)
from videokit.pipeline.requests import (
    animate_request,
    edit_request,
    edited_frame,
    starting_frame,
)
from videokit.pipeline.results import RenderResult, SceneOutput
from videokit.pipeline.stages import StageRunner
from videokit.pipeline.workdir import WorkDir, link, story_origin
from videokit.report import keep_previous
from videokit.story.plan import ScenePlan, StoryPlan

__all__ = ["Render"]


class _Upstream(Exception):
    """The scene a scene starts from did not produce its frame (it failed, or is stale)."""

    def __init__(self, scene: str, *, stale: bool) -> None:
        super().__init__(scene)
        self.scene = scene
        self.stale = stale


class Render:
    """Render ``plan`` into ``workdir``. ``forced`` scenes ignore the cache; scenes outside
    ``needed`` are taken from the cache only (``only``); the film goes to ``output``."""

    def __init__(
        self,
        plan: StoryPlan,
        backend: Backend,
        workdir: WorkDir,
        *,
        output: Path,
        needed: Collection[str],
        forced: Collection[str],
        concurrency: int | None,
        on_event: EventHandler | None,
        store: CacheStore,
        budget: Budget | None = None,
        costs: CostModel | None = None,
        estimate_high_usd: float | None = None,
    ) -> None:
        self.plan = plan
        self.backend = backend
        self.workdir = workdir
        self.output = output
        self.needed = set(needed)
        self.forced = set(forced)
        self.on_event = on_event
        manifest = Manifest.load(workdir.manifest_path)
        self.ledger = Ledger(
            workdir=workdir,
            manifest=manifest,
            cache=store,
            emit=self.emit,
            run_id=self._run_id(manifest),
        )
        self.budget = budget
        self.costs = costs
        self.concurrency = concurrency
        self.estimate_high_usd = estimate_high_usd
        self.stages = StageRunner(self.ledger, backend, concurrency=concurrency, budget=budget)
        self.outputs: dict[str, SceneOutput] = {}
        self.failures: dict[str, BaseException] = {}
        self.stale: dict[str, str] = {}  # scene -> why it is not current
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._emit_lock = threading.Lock()
        # The first exception an on_event handler raised: it aborts the render and is re-raised.
        self._handler_error: BaseException | None = None
        self._scene_tasks: list[asyncio.Task[None]] = []
        self._last: dict[str, asyncio.Future[bytes]] = {}
        self._edited: dict[str, asyncio.Future[bytes]] = {}

    def _run_id(self, manifest: Manifest) -> str:
        """This run's id: the unfinished previous run's when this is the same command again."""
        previous = manifest.run
        forced = sorted(self.forced)
        if previous is not None and not previous.finished and forced and previous.forced == forced:
            return previous.id
        return uuid.uuid4().hex[:12]

    # -- events ---------------------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        handler = self.on_event
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

    # -- the render -----------------------------------------------------------------------------
    async def execute(self) -> RenderResult:
        started = time.monotonic()
        plan, ledger = self.plan, self.ledger
        manifest = ledger.manifest
        # The render this one follows, before its manifest is rewritten: what the report compares.
        keep_previous(self.workdir.path, manifest)
        story = plan.story
        manifest.version = MANIFEST_VERSION
        manifest.videokit = __version__
        manifest.title = story.title
        source, origin = story_origin(story)
        manifest.story = self.workdir.relative(source) if source is not None else None
        manifest.origin = origin
        manifest.backend = self.backend.name
        manifest.timeline = [e.scene for e in plan.timeline]
        manifest.warmup = []
        manifest.run_cost_usd = 0.0
        manifest.run_cost_estimated_usd = 0.0
        manifest.run = RunRecord(
            id=ledger.run_id,
            forced=sorted(self.forced),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._forget_removed_scenes()
        order = list(plan.graph.topological())
        needed = [s for s in order if s in self.needed]
        self.emit(
            RenderStarted(
                story=story.title,
                backend=self.backend.name,
                workdir=str(self.workdir.path.absolute()),
                scenes=needed,
                jobs={
                    "edit": sum(1 for s in needed if plan.scenes[s].edit is not None),
                    "animate": len(needed),
                },
                budget_usd=self.budget.limit_usd if self.budget is not None else None,
                estimate_high_usd=self.estimate_high_usd,
            )
        )
        for scene_id in order:
            self._last[scene_id] = self._loop.create_future()
            self._edited[scene_id] = self._loop.create_future()
        try:
            async with asyncio.TaskGroup() as group:
                for scene_id in order:
                    scene = plan.scenes[scene_id]
                    task = group.create_task(self._scene(scene), name=scene_id)
                    self._scene_tasks.append(task)
        finally:
            # Let warm-up jobs be cancelled remotely and recorded before the manifest is saved.
            await self.stages.close()
            for future in (*self._last.values(), *self._edited.values()):
                if future.done() and not future.cancelled():
                    future.exception()  # mark as retrieved: failures are reported once, below
            ledger.save()
            register(ledger.cache, self.workdir.path, plan.story.title, ledger.manifest)
        self._raise_handler_error()
        if self.failures:
            held = {s: e for s, e in self.failures.items() if isinstance(e, BudgetSpentError)}
            if held:
                first = next(iter(held.values()))
                others = len(self.failures) - len(held)
                # The held-back scenes and those that start from them.
                missing = [
                    s
                    for s in plan.graph.topological()
                    if s in self.needed and s not in self.outputs
                ]
                raise BudgetSpentError(
                    f"{first.message}. {len(missing)} scene(s) were not rendered: "
                    f"{', '.join(missing)}" + (f"; {others} failed otherwise" if others else ""),
                    hint=first.hint,
                )
            raise RenderError(self.failures)

        await first_frames(ledger, self.outputs)
        final, frames, warnings = await self._finish()
        self._raise_handler_error()
        notes = {scene: "not current" for scene in self.stale}
        sheet = await asyncio.to_thread(contact_sheet, ledger, plan, self.outputs, notes)
        seconds = time.monotonic() - started
        manifest.seconds = round(seconds, 3)
        manifest.run.finished = True
        if self.costs is not None and self.backend.name != "preview":
            stages: tuple[Stage, ...] = ("edit", "animate")
            slots: dict[str, int] = {
                s: self.concurrency or self.backend.concurrency(s) for s in stages
            }
            manifest.billing = bill(manifest, self.costs, slots)
            # The store lives in the cache dir: the cold starts are kept beside it.
            record_starts(manifest, ledger.cache.root.parent)
        ledger.save()
        warnings += model_warnings(self.stages.models)
        report = await asyncio.to_thread(
            write_film_report,
            ledger,
            plan,
            stitched=final is not None,
            stale=self.stale,
            models=self.stages.models,
            warnings=warnings,
        )
        result = RenderResult(
            workdir=self.workdir.path.absolute(),
            final_video=final,
            contact_sheet=sheet,
            manifest=self.workdir.manifest_path.absolute(),
            scenes=dict(self.outputs),
            frames=frames,
            fps=plan.fps,
            seconds=seconds,
            cost_usd=ledger.spent,
            warnings=warnings,
            stale=sorted(self.stale, key=order.index),
            report=report.absolute() if report else None,
        )
        self.emit(
            RenderDone(
                final=str(final) if final else None,
                contact_sheet=str(sheet) if sheet else None,
                manifest=str(result.manifest),
                report=str(report) if report else None,
                seconds=round(seconds, 3),
                cost_usd=round(ledger.spent, 6),
                cost_estimated_usd=round(ledger.estimated, 6),
                rendered=result.rendered,
                cached=result.cached,
                stale=result.stale,
                warnings=warnings,
                billed_usd=manifest.billing.total_usd if manifest.billing else None,
                billing=manifest.billing.describe() if manifest.billing else None,
            )
        )
        self._raise_handler_error()
        return result

    async def _finish(self) -> tuple[Path | None, int | None, list[str]]:
        """The film, when every scene on the timeline is current (always, without ``only``)."""
        behind = [e.scene for e in self.plan.timeline if e.scene not in self.outputs]
        if behind:
            why = "; ".join(f"{scene}: {self.stale[scene]}" for scene in behind)
            return (
                None,
                None,
                [
                    f"the film was not stitched again: scene(s) {', '.join(behind)} on the "
                    f"timeline are not current ({why}); render without --only to bring them up "
                    "to date (cached scenes cost nothing) and stitch the film"
                ],
            )
        stitched = await asyncio.to_thread(
            stitch_film, self.ledger, self.plan, self.outputs, self.output
        )
        return stitched.path, stitched.frames, []

    def _forget_removed_scenes(self) -> None:
        """Drop scenes the story no longer has from the manifest and ``scenes/`` (not the cache)."""
        scenes = self.ledger.manifest.scenes
        for scene_id in [s for s in scenes if s not in self.plan.scenes]:
            del scenes[scene_id]
            shutil.rmtree(self.workdir.path / "scenes" / scene_id, ignore_errors=True)

    async def _input_frame(self, scene: ScenePlan) -> bytes:
        source = scene.source
        if source.kind in ("reference", "file"):
            return await asyncio.to_thread(starting_frame, self.plan, scene)
        assert source.scene is not None
        futures = self._last if source.kind == "scene" else self._edited
        try:
            return await futures[source.scene]
        except _Upstream as exc:
            raise _Upstream(exc.scene, stale=exc.stale) from None
        except asyncio.CancelledError:
            raise
        except Exception:
            raise _Upstream(source.scene, stale=False) from None

    async def _scene(self, scene: ScenePlan) -> None:
        started = time.monotonic()
        current_only = scene.id not in self.needed
        if not current_only:
            self.emit(
                SceneQueued(scene=scene.id, frames=scene.frames, waits_for=scene.source.scene)
            )
        stage: Stage | None = None
        try:
            image = await self._input_frame(scene)
            if current_only and not self._is_cached(scene, image):
                raise _Upstream(scene.id, stale=True)
            self._record(scene, image)
            forced = scene.id in self.forced
            edit_entry: CacheEntry | None = None
            edit_cost = 0.0
            edit_cached = True
            if scene.edit is not None:
                stage = "edit"
                request = edit_request(scene, image)
                outcome = await self.stages.run(
                    scene, "edit", request, forced=forced, announce=not current_only
                )
                edit_entry, edit_cost, edit_cached = outcome.entry, outcome.cost_usd, outcome.cached
                image = edited_frame(scene, edit_entry.file("image.png").read_bytes())
            self._edited[scene.id].set_result(image)
            stage = "animate"
            outcome = await self.stages.run(
                scene,
                "animate",
                animate_request(scene, image),
                forced=forced,
                announce=not current_only,
            )
            # Release the scenes that start from this one before the bookkeeping below.
            self._last[scene.id].set_result(outcome.entry.file("last.png").read_bytes())
            output = self._materialize(
                scene,
                outcome.entry,
                edit_entry,
                cached=edit_cached and outcome.cached,
                started=started,
                spent=outcome.cost_usd + edit_cost,
            )
        except asyncio.CancelledError:
            for futures in (self._last, self._edited):
                if not futures[scene.id].done():
                    futures[scene.id].cancel()
            if not current_only:
                self._set_status(scene, "cancelled", "interrupted before it finished")
            raise
        except _Upstream as exc:
            self._fail_futures(scene.id, _Upstream(exc.scene, stale=exc.stale))
            if exc.stale:
                # Left as an earlier render made it: its record still describes those files.
                self.stale[scene.id] = (
                    "its input changed and no cached result matches"
                    if exc.scene == scene.id
                    else f"it starts from '{exc.scene}', which is not current"
                )
                return
            reason = f"upstream scene '{exc.scene}' failed"
            self._set_status(scene, "skipped", reason)
            self.emit(SceneSkipped(scene=scene.id, reason=reason))
            return
        except Exception as exc:
            self._fail_futures(scene.id, _Upstream(scene.id, stale=False))
            self.failures[scene.id] = exc
            self._set_status(scene, "failed", str(exc))
            self.emit(SceneFailed(scene=scene.id, stage=stage, error=str(exc)))
            return
        self.outputs[scene.id] = output
        if current_only:
            return  # brought up to date from the cache, for the film: not part of this render
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

    def _is_cached(self, scene: ScenePlan, image: bytes) -> bool:
        """Whether every stage of ``scene`` has a cached result for this input (no job needed)."""
        cache, backend = self.ledger.cache, self.backend
        if scene.edit is not None:
            entry = lookup(cache, "edit", backend.identities("edit"), edit_request(scene, image))
            if entry is None:
                return False
            image = edited_frame(scene, entry.file("image.png").read_bytes())
        request = animate_request(scene, image)
        return lookup(cache, "animate", backend.identities("animate"), request) is not None

    def _fail_futures(self, scene_id: str, exc: BaseException) -> None:
        for futures in (self._last, self._edited):
            if not futures[scene_id].done():
                futures[scene_id].set_exception(exc)

    def _set_status(self, scene: ScenePlan, status: str, error: str | None) -> None:
        record = self.ledger.manifest.scenes.get(scene.id)
        if record is None:
            record = SceneRecord(source=scene.source.describe(), seed=scene.seed)
            self.ledger.manifest.scenes[scene.id] = record
        record.status = status  # type: ignore[assignment]
        record.error = error
        self.ledger.save()

    def _record(self, scene: ScenePlan, image: bytes) -> None:
        """The scene's manifest record, reset for this render (stage records are kept: resume)."""
        scenes = self.ledger.manifest.scenes
        record = scenes.get(scene.id)
        if record is None:
            record = SceneRecord(source=scene.source.describe(), seed=scene.seed)
            scenes[scene.id] = record
        record.status = "running"
        record.source = scene.source.describe()
        record.seed = scene.seed
        record.input_sha256 = hashlib.sha256(image).hexdigest()
        record.notes = [scene.frames_note] if scene.frames_note else []
        record.error = None
        record.outputs = {}  # until this render has them
        if scene.edit is None:
            record.edit = None

    def _materialize(
        self,
        scene: ScenePlan,
        entry: CacheEntry,
        edit_entry: CacheEntry | None,
        *,
        cached: bool,
        started: float,
        spent: float,
    ) -> SceneOutput:
        workdir = self.workdir
        folder = workdir.path.absolute() / "scenes" / scene.id
        folder.mkdir(parents=True, exist_ok=True)
        clip = link(entry.file("clip.mp4"), folder / "clip.mp4")
        first = folder / "first.png"  # decoded later, off the critical path (see first_frames)
        last = link(entry.file("last.png"), folder / "last.png")
        edited = link(edit_entry.file("image.png"), folder / "edit.png") if edit_entry else None
        if edit_entry is None:
            (folder / "edit.png").unlink(missing_ok=True)
        record = self.ledger.manifest.scenes[scene.id]
        job_ids = {
            stage: rec.job_id
            for stage, rec in (("edit", record.edit), ("animate", record.animate))
            if rec is not None and rec.job_id
        }
        seconds = time.monotonic() - started
        record.status = "done"
        record.seconds = round(seconds, 3)
        record.outputs = {
            "clip": workdir.relative(clip),
            "first_frame": workdir.relative(first),
            "last_frame": workdir.relative(last),
            **({"edited_frame": workdir.relative(edited)} if edited else {}),
        }
        self.ledger.save()
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
