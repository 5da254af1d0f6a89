"""``manifest.json``: what a render did, scene by scene, written atomically after every change.

It records, per scene, the input hash, seed and parameters, the cache key of each stage, remote job
ids (recorded *before* waiting on a job, so a resumed render can re-attach instead of paying again),
every attempt with its cost, timings and outputs. It never holds secrets: only request parameters
(without media) go in. Every path in it is relative to the work directory.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from videokit.billed_time import RenderBilling
from videokit.rest.billing import Reconciliation

__all__ = [
    "MANIFEST_VERSION",
    "AttemptRecord",
    "ColorRecord",
    "FinalRecord",
    "Manifest",
    "Reconciliation",
    "RenderBilling",
    "RunRecord",
    "SceneRecord",
    "StageRecord",
    "StageStatus",
]

# 3: paths relative to the work dir, the final video's hash, the latest run and who ran each job.
MANIFEST_VERSION = 3


class AttemptRecord(BaseModel):
    """One submission of a job, in whichever render it happened."""

    job_id: str
    status: str
    execution_ms: int | None = None
    delay_ms: int | None = None
    cost_usd: float = 0.0
    cost_estimated: bool = False
    error: str | None = None
    endpoint: str | None = None


StageStatus = Literal["queued", "submitted", "done", "failed", "cancelled"]


class ColorRecord(BaseModel):
    """Colour matching applied to an animated clip (the story's ``color``): what was matched to
    what, how far the clip's last frame was from the anchor before and after, and where the
    corrected files are. The stage's own ``key`` and ``outputs`` stay the model's clip."""

    match: Literal["reference", "previous"]
    strength: float
    method: str
    # The picture matched to: the reference as fitted to the frame, or the scene's first frame.
    anchor_sha256: str
    # The corrected clip and last frame in the result store (stage "color").
    key: str
    # True when this render reused the corrected clip (no matching ran).
    cached: bool = False
    seconds: float | None = None
    # CIE76 ΔE between the mean Lab colour of the last frame and of the anchor.
    delta_e_before: float
    delta_e_after: float
    outputs: dict[str, str] = Field(default_factory=dict)
    # SHA-256 of each corrected file: a corrected entry the store lost is put back from the
    # scene's own files only when they are still these.
    sha256: dict[str, str] = Field(default_factory=dict)


class StageRecord(BaseModel):
    """One stage (edit or animate) of a scene: what was asked, what ran, what it cost."""

    model_config = ConfigDict(extra="allow")

    key: str
    # queued: waiting for a slot, nothing sent; submitted: a job id exists and may be running
    # (a resumed render re-attaches to it); cancelled: its job was cancelled (Ctrl-C).
    status: StageStatus = "queued"
    job_id: str | None = None
    # True when this render took the result from the cache; cost_usd and attempts are still those
    # of the render that paid for it, so the manifest accounts for what the film cost.
    cached: bool = False
    input_sha256: str | None = None
    seed: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    attempts: list[AttemptRecord] = Field(default_factory=list)
    seconds: float | None = None
    cost_usd: float = 0.0
    outputs: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    # The run (RunRecord.id) whose job made this stage's result; None when it came from the cache.
    run_id: str | None = None
    # Animate only: where last.png (the next scene's first frame) came from: the worker's own
    # frame, or "decoded" from the compressed clip (endpoints that return only a video).
    last_frame: Literal["worker", "decoded"] | None = None
    # Where the job ran (the endpoint's label) and why it left the endpoints before it, for a
    # stage that lists several.
    endpoint: str | None = None
    moves: list[str] = Field(default_factory=list)
    # Animate only: the colour matching applied to the clip before it was handed on (None: off).
    color: ColorRecord | None = None


class SceneRecord(BaseModel):
    status: Literal["pending", "running", "done", "failed", "skipped", "cancelled"] = "pending"
    source: str
    # The frame the scene starts from (before its edit, if it has one).
    input_sha256: str | None = None
    seed: int
    notes: list[str] = Field(default_factory=list)
    edit: StageRecord | None = None
    animate: StageRecord | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    seconds: float | None = None
    # What its stages' attempts cost, cached ones included (derived when the manifest is saved).
    cost_usd: float = 0.0
    error: str | None = None


class FinalRecord(BaseModel):
    path: str
    key: str
    # The file's SHA-256 as written: videokit replaces a final video only if it is still this one
    # (or the one it was replacing, while the new one is renamed into place).
    sha256: str | None = None
    replaces: str | None = None
    frames: int
    fps: float
    width: int
    height: int
    method: str
    seconds: float
    formula: str


class RunRecord(BaseModel):
    """The latest render of this work dir, and what it was asked to redo.

    ``forced`` lists the scenes it rendered ignoring the cache (``--force``: all; ``--only``: those
    named). A run that did not finish (killed, interrupted, or with failed scenes) leaves
    ``finished`` false; the same command run again continues it: stages this run already paid for
    are not forced again.
    """

    id: str
    forced: list[str] = Field(default_factory=list)
    finished: bool = False
    started: str = ""


class Manifest(BaseModel):
    version: int = MANIFEST_VERSION
    videokit: str = ""
    title: str = ""
    # The story file, relative to the work dir; or, for a story built in Python, ``origin``.
    story: str | None = None
    origin: str | None = None
    run: RunRecord | None = None
    backend: str = ""
    updated: str = ""
    scenes: dict[str, SceneRecord] = Field(default_factory=dict)
    timeline: list[str] = Field(default_factory=list)
    final: FinalRecord | None = None
    contact_sheet: str | None = None
    # The latest render's warm-up jobs (they wake an endpoint, and are billed like any job).
    warmup: list[AttemptRecord] = Field(default_factory=list)
    # What the scenes have cost, every attempt across renders (cached results included)...
    cost_usd: float = 0.0
    # ...and what the latest render spent, warm-ups included.
    run_cost_usd: float = 0.0
    # The part of it that is the client's estimate (attempts the endpoint gave no figures for).
    run_cost_estimated_usd: float = 0.0
    seconds: float | None = None
    # The latest `videokit cost`: the render's estimate against RunPod's bill (see rest.billing).
    reconciliation: Reconciliation | None = None
    # The latest render's jobs as billed, with the start and idle time of the workers they ran
    # on, estimated (see videokit.billed_time.render_billing); None before a render set it.
    billing: RenderBilling | None = None

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """The manifest at ``path``, or an empty one if it is missing or unreadable."""
        try:
            return cls.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            return cls()

    def save(self, path: Path, *, durable: bool = False) -> None:
        """Write atomically (a killed process leaves the old or the new file, never half).

        ``durable`` also fsyncs, so the file survives a power loss: the runner asks for it when a
        remote job id is recorded, the one fact that costs money to lose. Other saves skip it:
        fsync on every change would stall the event loop when many scenes finish at once.
        """
        with _SAVE_LOCK:
            self.updated = datetime.now(UTC).isoformat(timespec="seconds")
            for scene in self.scenes.values():
                stages = (scene.edit, scene.animate)
                scene.cost_usd = round(sum(s.cost_usd for s in stages if s is not None), 6)
            self.cost_usd = round(sum(s.cost_usd for s in self.scenes.values()), 6)
            text = json.dumps(self.model_dump(mode="json"), indent=2)
            tmp = path.with_name(f".{path.name}.tmp")
            with tmp.open("w") as handle:
                handle.write(text)
                if durable:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)


_SAVE_LOCK = threading.Lock()
