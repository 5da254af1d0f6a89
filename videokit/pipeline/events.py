"""Typed render events: what the runner tells the CLI progress display and ``--json`` consumers.

Every event is a small pydantic model with a ``type`` tag, so ``event.model_dump_json()`` is one
line
of machine-readable output and a consumer can dispatch on ``type``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from videokit.backends.base import JobState

__all__ = [
    "CostUpdated",
    "Event",
    "EventHandler",
    "JobStateChanged",
    "JobSubmitted",
    "RenderDone",
    "RenderStarted",
    "SceneCached",
    "SceneDone",
    "SceneFailed",
    "SceneProgress",
    "SceneQueued",
    "SceneSkipped",
    "SceneStarted",
    "StitchDone",
    "StitchProgress",
    "StitchStarted",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class RenderStarted(_Event):
    type: Literal["render_started"] = "render_started"
    story: str
    backend: str
    workdir: str
    scenes: list[str]
    jobs: dict[str, int]
    #: The render's budget (``--max-cost``) and the upper end of its estimate, when it has one.
    budget_usd: float | None = None
    estimate_high_usd: float | None = None


class SceneQueued(_Event):
    type: Literal["scene_queued"] = "scene_queued"
    scene: str
    frames: int
    waits_for: str | None = None


class SceneStarted(_Event):
    type: Literal["scene_started"] = "scene_started"
    scene: str
    stage: Literal["edit", "animate"]


class JobSubmitted(_Event):
    type: Literal["job_submitted"] = "job_submitted"
    scene: str
    stage: Literal["edit", "animate"]
    job_id: str
    resumed: bool = False
    #: The endpoint it went to (None for in-process backends such as the preview).
    endpoint: str | None = None


class JobStateChanged(_Event):
    """A remote job changed state: ``queued`` (waiting its turn), ``cold_start`` (waiting for a
    worker to boot), ``running``. Sent on changes only; ``job_id`` is None for in-process jobs."""

    type: Literal["job_status"] = "job_status"
    scene: str
    stage: Literal["edit", "animate"]
    status: JobState
    job_id: str | None = None


class SceneProgress(_Event):
    type: Literal["scene_progress"] = "scene_progress"
    scene: str
    stage: Literal["edit", "animate"]
    fraction: float
    message: str | None = None


class SceneCached(_Event):
    type: Literal["scene_cached"] = "scene_cached"
    scene: str
    stage: Literal["edit", "animate"]


class SceneDone(_Event):
    type: Literal["scene_done"] = "scene_done"
    scene: str
    clip: str
    last_frame: str
    seconds: float
    cost_usd: float
    cached: bool


class SceneFailed(_Event):
    type: Literal["scene_failed"] = "scene_failed"
    scene: str
    stage: Literal["edit", "animate"] | None
    error: str


class SceneSkipped(_Event):
    type: Literal["scene_skipped"] = "scene_skipped"
    scene: str
    reason: str


class CostUpdated(_Event):
    type: Literal["cost"] = "cost"
    scene: str
    stage: Literal["edit", "animate"]
    cost_usd: float
    total_usd: float


class StitchStarted(_Event):
    type: Literal["stitch_started"] = "stitch_started"
    frames: int
    output: str


class StitchProgress(_Event):
    type: Literal["stitch_progress"] = "stitch_progress"
    done: int
    total: int


class StitchDone(_Event):
    type: Literal["stitch_done"] = "stitch_done"
    output: str
    frames: int
    method: str
    seconds: float
    cached: bool = False


class RenderDone(_Event):
    type: Literal["render_done"] = "render_done"
    final: str | None
    contact_sheet: str | None
    manifest: str
    seconds: float
    # report.html in the work dir: the film, its timeline, scenes, costs and what changed.
    report: str | None = None
    cost_usd: float
    rendered: list[str]
    cached: list[str]
    # The part of cost_usd that is the client's estimate (the endpoint reported no figures).
    cost_estimated_usd: float = 0.0
    # With --only: scenes left as an earlier render made them (their input changed).
    stale: list[str] = []
    # Things worth a look although the render succeeded (e.g. cached results an endpoint's
    # current model did not make).
    warnings: list[str] = []
    # What RunPod bills for the render: the jobs, plus the estimated start and idle time of the
    # workers it woke (see videokit.billed_time.render_billing); None on the preview.
    billed_usd: float | None = None
    billing: str | None = None


Event = Annotated[
    RenderStarted
    | SceneQueued
    | SceneStarted
    | JobSubmitted
    | JobStateChanged
    | SceneProgress
    | SceneCached
    | SceneDone
    | SceneFailed
    | SceneSkipped
    | CostUpdated
    | StitchStarted
    | StitchProgress
    | StitchDone
    | RenderDone,
    Field(discriminator="type"),
]

EventHandler = Callable[[Event], None]
