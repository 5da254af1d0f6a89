"""One stage of one scene: take its result from the cache, or run its job and record every attempt.

The manifest learns a job's id before anything waits on it, so a killed render re-attaches
instead of paying twice; attempts an earlier render paid for stay on the record. Results go into
the user's content-addressed store, one process at a time per result; a result the store lost is
put back from the work dir's own scene files. A stage made by a run that did not finish is not
forced again when that run continues (the same ``--force`` or ``--only`` command, run again).
An animated clip whose scene asks for ``color`` matching is matched before it is handed on
(:mod:`~videokit.pipeline.color_stage`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Literal

from videokit.backends.base import Backend, JobContext, Stage
from videokit.pipeline.budget import Budget
from videokit.pipeline.cache import CacheEntry, cache_key, lookup_keys
from videokit.pipeline.color_stage import (
    UNCORRECTED,
    AnchorStats,
    forget_uncorrected,
    match_scene_colors,
)
from videokit.pipeline.events import (
    CostUpdated,
    JobStateChanged,
    JobSubmitted,
    SceneCached,
    SceneProgress,
    SceneStarted,
)
from videokit.pipeline.ledger import Ledger
from videokit.pipeline.manifest import AttemptRecord, StageRecord, StageStatus
from videokit.pipeline.requests import request_params
from videokit.pipeline.store import claim, clear_in_flight, in_flight, record_in_flight
from videokit.protocol import AnimateRequest, AnimateResult, EditRequest, EditResult
from videokit.story.plan import ScenePlan

__all__ = ["ModelSeen", "StageOutcome", "StageRunner"]

log = logging.getLogger("videokit.pipeline")

# Attempt states in which a job may still be queued or running on the endpoint.
_MAY_STILL_RUN = frozenset({"submitted", "IN_QUEUE", "IN_PROGRESS", "RUNNING"})


@dataclass(frozen=True)
class StageOutcome:
    entry: CacheEntry
    cost_usd: float  # spent on it by this render
    cached: bool


@dataclass(frozen=True)
class ModelSeen:
    """The model a stage's result was made by, as the job reported it."""

    scene: str
    stage: Stage
    steps: int
    model: str | None
    cached: bool


class StageRunner:
    """Runs stages for one render, at most ``concurrency`` (or the backend's) jobs per stage."""

    def __init__(
        self,
        ledger: Ledger,
        backend: Backend,
        *,
        concurrency: int | None,
        warm_up: bool = True,
        budget: Budget | None = None,
    ) -> None:
        self.ledger = ledger
        self.backend = backend
        self.budget = budget
        self.models: list[ModelSeen] = []
        self._slots: dict[Stage, asyncio.Semaphore] = {
            stage: asyncio.Semaphore(concurrency or backend.concurrency(stage))
            for stage in ("edit", "animate")
        }
        self._warmed = not warm_up
        self._background: set[asyncio.Task[None]] = set()
        self._anchors = AnchorStats()

    async def close(self) -> None:
        """Cancel a warm-up still running, and let it be cancelled remotely and recorded."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def run(
        self,
        scene: ScenePlan,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        *,
        forced: bool,
        announce: bool = True,
    ) -> StageOutcome:
        """The stage's result from the cache, else from a job. ``announce``: emit SceneCached
        for a cached result (not for scenes ``only`` merely brings up to date).

        An animated clip comes back colour-matched when the scene's ``color`` is on (see
        :mod:`videokit.pipeline.color_stage`): its entry then holds the corrected clip and last
        frame, and the stage's record keeps the model's own clip.
        """
        outcome = await self._run(scene, stage, request, forced=forced, announce=announce)
        if not isinstance(request, AnimateRequest):
            return outcome
        if scene.color is None:
            await forget_uncorrected(self.ledger, scene.id, outcome.entry)
            return outcome
        entry = await match_scene_colors(self.ledger, scene, request, outcome.entry, self._anchors)
        return StageOutcome(entry, outcome.cost_usd, outcome.cached)

    async def _run(
        self,
        scene: ScenePlan,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        *,
        forced: bool,
        announce: bool,
    ) -> StageOutcome:
        ledger = self.ledger
        # Every endpoint that may serve the stage, in order: a result any of them made will do.
        keys = [cache_key(identity, request) for identity in self.backend.identities(stage)]
        key = keys[0]
        record = ledger.manifest.scenes[scene.id]
        previous: StageRecord | None = getattr(record, stage)
        same_job = previous is not None and previous.key in keys
        if forced and same_job and previous is not None and previous.status == "done":
            # Made by this very run before it was interrupted: it is paid for, not stale.
            forced = previous.run_id != ledger.run_id
        described = {
            "key": key,
            "seed": request.seed,
            "input_sha256": _input_sha256(request),
            "params": request_params(request),
        }
        if not forced:
            hit = self._reuse(scene, stage, request, keys, described, announce)
            if hit is not None:
                return hit

        def waiting() -> None:
            ledger.emit(
                SceneProgress(
                    scene=scene.id,
                    stage=stage,
                    fraction=0.0,
                    message="waiting for another render that is making this result",
                )
            )

        # About to pay for it: one process at a time per result (see videokit.pipeline.store).
        async with claim(ledger.cache, stage, key, on_wait=waiting):
            if not forced:
                hit = self._reuse(scene, stage, request, keys, described, announce)
                if hit is not None:
                    return hit  # another process made it while this one waited
            if stage == "edit" and not self._warmed:
                # The first edit to run: wake the animate endpoint so its cold start overlaps it.
                self._warmed = True
                self._background.add(asyncio.create_task(self._warm_up("animate")))
            resumable = previous if same_job else None
            flight = None if forced else in_flight(ledger.cache, stage, key)
            if flight is not None and (resumable is None or resumable.status != "submitted"):
                # A render that was killed left this job running: re-attach, never pay twice.
                resumable = StageRecord(
                    **described,
                    status="submitted",
                    job_id=flight.job_id,
                    endpoint=flight.endpoint,
                )
            return await self._submit(scene, stage, request, described, resumable)

    def _reuse(
        self,
        scene: ScenePlan,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        keys: list[str],
        described: dict[str, object],
        announce: bool,
    ) -> StageOutcome | None:
        """A result in the store made by any endpoint of the stage, or restored from this work
        dir's own scene files when the store no longer has it (pruned, or another machine's)."""
        ledger = self.ledger
        record = ledger.manifest.scenes[scene.id]
        previous: StageRecord | None = getattr(record, stage)
        same_job = previous is not None and previous.key in keys
        entry = lookup_keys(ledger.cache, stage, keys)
        if entry is None and same_job and previous is not None and previous.status == "done":
            entry = self._restore(scene.id, stage, previous)
        if entry is None:
            return None
        setattr(
            record,
            stage,
            StageRecord(
                **{**described, "key": entry.key},
                status="done",
                cached=True,
                job_id=entry.meta.get("job_id"),
                attempts=[AttemptRecord(**a) for a in entry.meta.get("attempts", [])],
                cost_usd=float(entry.meta.get("cost_usd", 0.0)),
                outputs={
                    name: ledger.workdir.relative(entry.file(name)) for name in entry.meta["files"]
                },
                run_id=previous.run_id if same_job and previous is not None else None,
                last_frame=entry.meta.get("last_frame_source"),
                endpoint=entry.meta.get("endpoint"),
                # Until the colour step says otherwise, the scene's files are as they were.
                color=previous.color if same_job and previous is not None else None,
            ),
        )
        ledger.save()
        model = entry.meta.get("model")
        self.models.append(ModelSeen(scene.id, stage, request.steps, model, cached=True))
        if announce:
            ledger.emit(SceneCached(scene=scene.id, stage=stage))
        return StageOutcome(entry, 0.0, cached=True)

    def _restore(self, scene_id: str, stage: Stage, previous: StageRecord) -> CacheEntry | None:
        """Put a result back in the store from the files this work dir linked for its scene."""
        folder = self.ledger.workdir.path / "scenes" / scene_id
        if stage == "edit":
            sources = {"image.png": folder / "edit.png"}
        elif previous.color is not None:
            # The scene's clip.mp4 and last.png are colour-matched: the model's are beside them.
            sources = {name: folder / uncorrected for name, uncorrected in UNCORRECTED.items()}
        else:
            sources = {"clip.mp4": folder / "clip.mp4", "last.png": folder / "last.png"}
        meta = {
            "job_id": previous.job_id,
            "seed": previous.seed,
            "params": previous.params,
            "cost_usd": previous.cost_usd,
            "attempts": [a.model_dump(mode="json") for a in previous.attempts],
            "last_frame_source": previous.last_frame,
            "endpoint": previous.endpoint,
            "restored_from": str(self.ledger.workdir.path),
        }
        return self.ledger.cache.adopt(stage, previous.key, sources, meta)

    async def _submit(
        self,
        scene: ScenePlan,
        stage: Stage,
        request: EditRequest | AnimateRequest,
        described: dict[str, object],
        previous: StageRecord | None,
    ) -> StageOutcome:
        ledger = self.ledger
        record = ledger.manifest.scenes[scene.id]
        key = str(described["key"])  # the route's first key: the one claimed and recorded
        in_flight = previous is not None and previous.status == "submitted"
        resume = previous.job_id if in_flight and previous is not None else None
        # Attempts an earlier render made for this very job stay on the record: they were paid.
        earlier = list(previous.attempts) if previous is not None else []
        stage_record = StageRecord(
            **described,
            job_id=resume,
            status="submitted" if resume else "queued",
            attempts=earlier,
            endpoint=previous.endpoint if resume and previous is not None else None,
            color=previous.color if previous is not None else None,
        )
        setattr(record, stage, stage_record)  # saved with the job id, once it is known

        async def submitted(job_id: str) -> None:
            stage_record.job_id = job_id
            stage_record.status = "submitted"
            stage_record.endpoint = ctx.endpoint
            stage_record.moves = list(ctx.moves)
            # In the store too: a render that takes over after this one dies re-attaches.
            record_in_flight(ledger.cache, stage, key, job_id, ctx.endpoint)
            _record_attempts(stage_record, earlier, ctx)
            ledger.save(durable=True)  # before any waiting: a resumed render re-attaches to it
            ledger.emit(
                JobSubmitted(
                    scene=scene.id,
                    stage=stage,
                    job_id=job_id,
                    resumed=job_id == resume,
                    endpoint=ctx.endpoint,
                )
            )

        def progress(fraction: float, message: str | None) -> None:
            ledger.emit(
                SceneProgress(scene=scene.id, stage=stage, fraction=fraction, message=message)
            )

        ctx = JobContext(
            scene=scene.id,
            stage=stage,
            resume_job_id=resume,
            resume_endpoint=stage_record.endpoint,
            on_submitted=submitted,
            on_progress=progress,
            # The job id is on the record by the time a backend watches the job.
            on_status=lambda state: ledger.emit(
                JobStateChanged(
                    scene=scene.id, stage=stage, status=state, job_id=stage_record.job_id
                )
            ),
        )
        async with self._slots[stage]:
            # A job already running (re-attached) is never held back by the budget.
            reserved = 0.0
            if self.budget is not None and resume is None:
                reserved = self.budget.admit(stage, request, ledger.spent, scene.id)
            ledger.emit(SceneStarted(scene=scene.id, stage=stage))
            started = time.monotonic()
            try:
                result: EditResult | AnimateResult
                if isinstance(request, EditRequest):
                    result = await self.backend.edit(request, ctx)
                else:
                    result = await self.backend.animate(request, ctx)
            except BaseException as exc:
                stage_record.status = _status_after(exc, ctx)
                stage_record.moves = list(ctx.moves)
                if stage_record.status != "submitted":
                    clear_in_flight(ledger.cache, stage, key)
                if not isinstance(exc, asyncio.CancelledError):
                    stage_record.error = str(exc)
                ledger.spend(
                    _record_attempts(stage_record, earlier, ctx), estimated=_estimated(ctx)
                )
                raise
            finally:
                if self.budget is not None:
                    self.budget.release(reserved)
            seconds = time.monotonic() - started
        cost = _record_attempts(stage_record, earlier, ctx)
        files = _result_files(result)
        # Stored under the identity of the endpoint that made it, never the one first in line.
        identity = ctx.served_by or self.backend.identity(stage)
        first_key, key = key, cache_key(identity, request)
        stage_record.key = key
        stage_record.endpoint = ctx.endpoint
        stage_record.moves = list(ctx.moves)
        meta = {
            "identity": identity,
            "endpoint": ctx.endpoint,
            "model": result.model,
            "seed": result.seed,
            "inference_ms": result.inference_ms,
            "job_id": stage_record.job_id,
            "frames": getattr(result, "frames", None),
            "last_frame_source": getattr(result, "last_frame_source", None),
            "params": request_params(request),
            # What this result cost to make, so a later render that reuses it can say so.
            "cost_usd": stage_record.cost_usd,
            "attempts": [a.model_dump(mode="json") for a in stage_record.attempts],
        }
        entry = await asyncio.to_thread(ledger.cache.put, stage, key, files, meta)
        clear_in_flight(ledger.cache, stage, first_key)
        self.models.append(ModelSeen(scene.id, stage, request.steps, result.model, cached=False))
        stage_record.status = "done"
        stage_record.run_id = ledger.run_id
        stage_record.seconds = round(seconds, 3)
        if isinstance(result, AnimateResult):
            stage_record.last_frame = result.last_frame_source
        stage_record.outputs = {name: ledger.workdir.relative(entry.file(name)) for name in files}
        ledger.spend(cost, estimated=_estimated(ctx))
        ledger.save()
        if cost:
            ledger.emit(
                CostUpdated(scene=scene.id, stage=stage, cost_usd=cost, total_usd=ledger.spent)
            )
        return StageOutcome(entry, cost, cached=False)

    async def _warm_up(self, stage: Stage) -> None:
        """Wake ``stage``'s endpoint; its warm-up job is recorded (and billed) like any job."""
        ledger = self.ledger
        ctx = JobContext(scene="(warm-up)", stage=stage)

        async def submitted(job_id: str) -> None:
            ledger.manifest.warmup = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
            ledger.save(durable=True)

        ctx.on_submitted = submitted
        try:
            await self.backend.warm_up(stage, ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a warm-up is an optimisation: never fail a render over it
            log.info("warm-up of the %s endpoint failed: %s", stage, exc)
        finally:
            ledger.manifest.warmup = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
            ledger.spend(sum(a.cost_usd for a in ctx.attempts), estimated=_estimated(ctx))
            ledger.save()


def _estimated(ctx: JobContext) -> float:
    """What of this render's attempts' cost is the client's estimate, not the endpoint's."""
    return round(sum(a.cost_usd for a in ctx.attempts if a.cost_estimated), 6)


def _record_attempts(
    stage_record: StageRecord, earlier: list[AttemptRecord], ctx: JobContext
) -> float:
    """Put every attempt on the record; return what this render's attempts cost.

    A re-attached job is the earlier render's last attempt, seen again: this render's view of it
    is the later one (it saw the job end, and knows its cost), so it replaces that one attempt.
    Earlier attempts with the same id (RunPod's ``retry`` keeps the id) stay.
    """
    current = [AttemptRecord(**asdict(a)) for a in ctx.attempts]
    kept = list(earlier)
    resumed = ctx.resume_job_id
    if resumed is not None and kept and kept[-1].job_id == resumed and current:
        before, again = kept.pop(), current[0]
        if again.job_id == resumed and again.cost_usd < before.cost_usd:
            # Interrupted again before the endpoint said what the job cost: what the earlier
            # render estimated is still the better figure.
            again.cost_usd, again.cost_estimated = before.cost_usd, before.cost_estimated
    stage_record.attempts = [*kept, *current]
    stage_record.cost_usd = round(sum(a.cost_usd for a in stage_record.attempts), 6)
    return round(sum(a.cost_usd for a in current), 6)


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
    cancelled: Literal["cancelled", "failed"] = (
        "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
    )
    return cancelled


def _input_sha256(request: EditRequest | AnimateRequest) -> str:
    """The hash of the image a stage works on (the one to edit, or the one to animate)."""
    media = request.images[0] if isinstance(request, EditRequest) else request.image
    return media.fingerprint().removeprefix("sha256:")


def _result_files(result: EditResult | AnimateResult) -> dict[str, bytes]:
    if isinstance(result, EditResult):
        return {"image.png": result.image.decode()}
    return {"clip.mp4": result.video.decode(), "last.png": result.last_frame.decode()}
