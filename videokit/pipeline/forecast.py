"""What a render would do, without doing it: cache hits, jobs to submit, GPU time and cost.

``videokit plan`` prints this. A scene's cache key depends on the bytes of its input frame, so a
scene can only be predicted as a hit when everything upstream of it is a hit too (its input is then
already in the cache); otherwise it will re-render. Costs come from
:meth:`~videokit.costs.CostModel.estimate_cost`: a stage billed per output (a RunPod Public
Endpoint) costs its price per image or second of video and adds no GPU seconds; the others cost
their estimated GPU time at the pool's rate. ``cost_range`` adds what the workers' start and idle
time add to that (:meth:`~videokit.costs.CostModel.estimate_range`), each job submitted as soon as
the jobs it starts from have ended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from videokit.backends.base import Backend, Stage
from videokit.costs import CostModel, CostRange, OutputPrice, StageJob
from videokit.pipeline.cache import CacheStore, lookup
from videokit.pipeline.color_stage import chained_last_frame
from videokit.pipeline.requests import (
    animate_request,
    edit_request,
    edited_frame,
    starting_frame,
)
from videokit.protocol import AnimateRequest, EditRequest
from videokit.story.plan import ScenePlan, StoryPlan

__all__ = ["Forecast", "RouteEndpoint", "SceneForecast", "forecast"]

Outcome = Literal["cached", "render", "none"]


@dataclass
class SceneForecast:
    scene: str
    edit: Outcome
    animate: Outcome
    reason: str | None = None
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RouteEndpoint:
    """One endpoint of a stage that lists several, and how it bills (see
    :meth:`~videokit.costs.CostModel.for_endpoint`)."""

    label: str
    kind: str
    costs: CostModel


@dataclass
class Forecast:
    scenes: dict[str, SceneForecast] = field(default_factory=dict)
    # Every job of the story on GPU endpoints, ignoring this backend's cache.
    full_gpu_seconds: float = 0.0
    full_cost_usd: float = 0.0
    # Stages billed per output, and at what price (the others: per GPU second).
    output_prices: dict[str, OutputPrice] = field(default_factory=dict)
    # For a stage that lists several endpoints: (label, kind, USD of its jobs to render if all
    # ran there), in order; and the cost if every job ended on its costliest endpoint.
    route_costs: dict[Stage, list[tuple[str, str, float]]] = field(default_factory=dict)
    worst_cost_usd: float = 0.0
    # The jobs to render on the first choices with their workers' start and idle time, warm
    # workers to cold starts; cost_usd above is their execution alone.
    cost_range: CostRange | None = None

    def jobs(self, stage: Stage) -> int:
        return sum(1 for s in self.scenes.values() if getattr(s, stage) == "render")

    def cached(self, stage: Stage) -> int:
        return sum(1 for s in self.scenes.values() if getattr(s, stage) == "cached")

    @property
    def gpu_seconds(self) -> float:
        return sum(s.gpu_seconds for s in self.scenes.values())

    @property
    def cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.scenes.values())


def forecast(
    plan: StoryPlan,
    backend: Backend,
    workdir: Path,
    *,
    costs: CostModel | None = None,
    force: bool = False,
    routes: Mapping[Stage, Sequence[RouteEndpoint]] | None = None,
    store: CacheStore | None = None,
    concurrency: int | None = None,
) -> Forecast:
    """Predict, scene by scene, what ``render`` would reuse and what it would submit; with
    ``routes``, what each stage's jobs would cost on each of its endpoints.

    ``store`` is the cache the render reads (default: the work dir's ``cache/``); ``concurrency``
    the jobs at once per stage it runs (default: the backend's), which bounds the workers the
    cost range counts.
    """
    costs = costs or CostModel()
    routes = routes or {}
    store = store if store is not None else CacheStore(workdir / "cache")
    last: dict[str, bytes | None] = {}
    edited: dict[str, bytes | None] = {}
    result = Forecast(output_prices=dict(costs.output_prices))
    per_endpoint: dict[Stage, list[float]] = {stage: [0.0] * len(r) for stage, r in routes.items()}
    # The jobs to render, each after the job that makes its input (none: it is at hand).
    jobs: list[StageJob] = []
    made_by: dict[tuple[Stage, str], str] = {}  # (stage, scene) -> the key of its job

    def add_job(
        stage: Stage, scene_id: str, request: EditRequest | AnimateRequest, *after: str | None
    ) -> None:
        key = f"{stage}:{scene_id}"
        jobs.append(StageJob(key, stage, request, tuple(k for k in after if k is not None)))
        made_by[(stage, scene_id)] = key

    def charged(stage: Stage, request: EditRequest | AnimateRequest, cost: float) -> None:
        """A job to render: its cost on each endpoint of the stage, and the worst of them."""
        options = [end.costs.estimate_cost(stage, request) for end in routes.get(stage, ())]
        for n, option in enumerate(options):
            per_endpoint[stage][n] += option
        result.worst_cost_usd += max([cost, *options])

    for scene_id in plan.graph.topological():
        scene = plan.scenes[scene_id]
        source = scene.source
        image: bytes | None
        reason: str | None = None
        if source.kind in ("reference", "file"):
            image = starting_frame(plan, scene)
        else:
            assert source.scene is not None
            image = (last if source.kind == "scene" else edited)[source.scene]
            if image is None:
                reason = f"starts from '{source.scene}', which will render"
        guess = SceneForecast(scene_id, edit="none", animate="render", reason=reason)
        maker = None
        if source.scene is not None:
            maker = made_by.get(("animate" if source.kind == "scene" else "edit", source.scene))
        if scene.edit is not None:
            guess.edit = "render"
            entry = None
            if image is not None and not force:
                request = edit_request(scene, image)
                entry = lookup(store, "edit", backend.identities("edit"), request)
            if entry is not None:
                guess.edit = "cached"
                image = edited_frame(scene, entry.file("image.png").read_bytes())
            else:
                # The input may not exist yet; the estimate does not depend on its pixels.
                request = edit_request(scene, image or b"\0")
                seconds, cost = _estimate(costs, "edit", request)
                guess.gpu_seconds += seconds
                guess.cost_usd += cost
                charged("edit", request, cost)
                add_job("edit", scene_id, request, maker)
                maker = made_by[("edit", scene_id)]
                image = None
        edited[scene_id] = image
        stand_in = image if image is not None else b"\0"
        animate = animate_request(scene, stand_in)
        for stage, job in _requests(scene, stand_in, animate):
            seconds, cost = _estimate(costs, stage, job)
            result.full_gpu_seconds += seconds
            result.full_cost_usd += cost
        entry = None
        if image is not None and not force:
            entry = lookup(store, "animate", backend.identities("animate"), animate)
        if entry is not None:
            guess.animate = "cached"
            last[scene_id] = chained_last_frame(store, scene, animate, entry)
        else:
            seconds, cost = _estimate(costs, "animate", animate)
            guess.gpu_seconds += seconds
            guess.cost_usd += cost
            charged("animate", animate, cost)
            add_job("animate", scene_id, animate, maker)
            last[scene_id] = None
        result.scenes[scene_id] = guess
    result.route_costs = {
        stage: [(end.label, end.kind, per_endpoint[stage][n]) for n, end in enumerate(route)]
        for stage, route in routes.items()
    }
    stages: tuple[Stage, ...] = ("edit", "animate")
    at_once: dict[str, int] = {stage: concurrency or backend.concurrency(stage) for stage in stages}
    result.cost_range = costs.estimate_range(jobs, concurrency=at_once)
    return result


def _estimate(
    costs: CostModel, stage: Stage, request: EditRequest | AnimateRequest
) -> tuple[float, float]:
    """(GPU seconds, USD) of one job: a stage billed per output bills no GPU seconds."""
    seconds = 0.0 if stage in costs.output_prices else costs.estimate_seconds(request)
    return seconds, costs.estimate_cost(stage, request)


def _requests(
    scene: ScenePlan, image: bytes, animate: AnimateRequest
) -> list[tuple[Stage, EditRequest | AnimateRequest]]:
    jobs: list[tuple[Stage, EditRequest | AnimateRequest]] = [("animate", animate)]
    if scene.edit is not None:
        jobs.append(("edit", edit_request(scene, image)))
    return jobs
