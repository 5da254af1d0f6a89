"""The render pipeline's front door: ``Pipeline(story).run()``.

:class:`Pipeline` plans a story (bad input fails here, before a backend exists), checks the
backend, the work directory and the output path, then hands one
:class:`~videokit.pipeline.render.Render` the scene graph. ``Pipeline.run()`` is a thin
synchronous wrapper over the one async core, ``Pipeline.arun()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from videokit.backends import capabilities_for, capabilities_of, create_backend
from videokit.backends.base import Backend
from videokit.config import Settings
from videokit.costs import CostModel
from videokit.errors import BudgetError, StoryError
from videokit.pipeline.budget import Budget
from videokit.pipeline.cache import CacheStore
from videokit.pipeline.events import EventHandler
from videokit.pipeline.forecast import Forecast, forecast
from videokit.pipeline.interrupts import run_interruptibly
from videokit.pipeline.manifest import Manifest
from videokit.pipeline.render import Render
from videokit.pipeline.requests import payload_bounds
from videokit.pipeline.results import RenderResult, SceneOutput
from videokit.pipeline.store import store_root
from videokit.pipeline.workdir import WorkDir
from videokit.rest.catalog import cached_catalog
from videokit.story.loader import load_story
from videokit.story.model import Scene, Story
from videokit.story.plan import StoryPlan, plan_story

__all__ = ["Pipeline", "RenderResult", "SceneOutput"]

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
    if title:
        return Story(title=title, reference=reference, scenes=scenes)
    return Story(reference=reference, scenes=scenes)  # titled after its first scene


class Pipeline:
    """Render a story: ``Pipeline("story.yaml").run()``.

    ``story`` is a :class:`Story`, a path to a YAML story, or a list of :class:`Scene` (then give
    ``reference``). ``backend`` is a backend object or name (default: from ``VIDEOKIT_BACKEND``,
    else the CPU preview). ``out`` is the work directory (default ``out/<story-name>``); ``output``
    the final video's path (default: the story's ``output.path``, else ``<out>/final.mp4``), which
    replaces an existing file videokit did not write only with ``overwrite``. ``force`` ignores
    the cache; ``only`` renders just these scenes (ignoring their cache) and what they need, and
    stitches the film again when every other scene is still current. ``max_cost`` (USD, default
    the settings' ``max_cost``) is a budget: see :meth:`estimate` and
    :mod:`videokit.pipeline.budget`.
    """

    def __init__(
        self,
        story: StoryInput,
        *,
        backend: Backend | str | None = None,
        out: str | Path | None = None,
        output: str | Path | None = None,
        overwrite: bool = False,
        force: bool = False,
        only: Sequence[str] | None = None,
        concurrency: int | None = None,
        on_event: EventHandler | None = None,
        reference: str | Path | None = None,
        title: str | None = None,
        settings: Settings | None = None,
        max_cost: float | None = None,
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
        self.output = Path(output) if output is not None else None
        self.overwrite = overwrite
        self.force = force
        self.only = list(only) if only else None
        self.on_event = on_event
        self.max_cost = max_cost
        self._plan: StoryPlan | None = None

    @property
    def workdir(self) -> Path:
        return self.out or self.settings.out_dir / self.story.slug()

    def _workdir(self) -> WorkDir:
        return WorkDir(self.workdir, explicit=self.out is not None)

    def output_path(self) -> Path:
        """Where the final video goes (absolute)."""
        chosen = self.output or self.plan().output or self.workdir / "final.mp4"
        return Path(os.path.abspath(chosen))

    def check_workdir(self) -> None:
        """Raise unless the work directory and the final video's path can be used; creates
        nothing. A default work dir holding another story's render is refused (two stories would
        share it), and so is an output path at a file videokit did not write (unless
        ``overwrite``), or, from a story file, one outside its folder and the work dir."""
        workdir = self._workdir()
        workdir.check(self.story)
        from_story = self.output is None and self.plan().output is not None
        workdir.check_output(
            self.output_path(),
            Manifest.load(workdir.manifest_path),
            overwrite=self.overwrite,
            story=self.story if from_story else None,
        )

    def plan(self) -> StoryPlan:
        """Check everything and return the plan; submits nothing. Raises :class:`StoryError`.

        The plan is computed once per pipeline (it reads and decodes every file the story names).
        It is held against what the backend's endpoints can render: those of a backend object
        (its ``capabilities(stage)``), else those its settings name (no network, no key checks).
        """
        if self._plan is not None:
            return self._plan
        if isinstance(self._backend, Backend):
            capabilities = capabilities_of(self._backend)
        else:
            capabilities = capabilities_for(self._backend, self.settings)
        plan = plan_story(self.story, capabilities=capabilities)
        unknown = [s for s in self.only or [] if s not in plan.scenes]
        if unknown:
            raise StoryError(
                f"--only names unknown scene(s): {', '.join(unknown)}",
                hint=f"scenes are: {', '.join(plan.scenes)}",
            )
        self._plan = plan
        return plan

    def store(self, workdir: WorkDir | None = None) -> CacheStore:
        """The user's result store (``cache_dir``, else the user cache dir); a work dir's own
        ``cache/`` from before the store was shared is read too, and its entries adopted."""
        root = store_root(self.settings.cache_dir, self.settings.environ)
        legacy = (workdir or self._workdir()).path / "cache"
        return CacheStore(root, legacy=legacy)

    def estimate(self) -> Forecast:
        """What rendering would do and cost, without doing it (nothing is submitted): per scene
        cached or to render; ``cost_usd`` (the jobs' run time), ``cost_range`` (warm workers …
        cold starts, with what is included), and per endpoint of a route."""
        backend = self.backend()
        return forecast(
            self.plan(),
            backend,
            self.workdir,
            costs=self._costs(backend),
            force=self.force,
            store=self.store(),
            concurrency=self.settings.concurrency,
        )

    @staticmethod
    def upper_cost(guess: Forecast) -> float:
        """The upper end of an estimate: cold starts, and every job on its costliest endpoint."""
        cold = guess.cost_range.cold_usd if guess.cost_range is not None else 0.0
        return max(cold, guess.worst_cost_usd, guess.cost_usd)

    def _costs(self, backend: Backend) -> CostModel:
        """The cost model render bills with: the backend's own, else the settings' at the GPU
        prices the last ``plan`` cached."""
        own = getattr(backend, "costs", None)
        if isinstance(own, CostModel):
            return own
        catalog = cached_catalog(self.settings.environ)
        return self.settings.cost_model(catalog.prices() if catalog is not None else None)

    def _budget(self, backend: Backend) -> tuple[Budget | None, float | None]:
        """The render's budget, refused before anything runs when the estimate's upper end is
        over it (the preview is free: no budget applies)."""
        limit = self.max_cost if self.max_cost is not None else self.settings.max_cost
        if limit is None or backend.name == "preview":
            return None, None
        guess = self.estimate()
        high = self.upper_cost(guess)
        if high > limit + 1e-9:
            jobs = guess.jobs("edit") + guess.jobs("animate")
            raise BudgetError(
                f"this render could cost up to ${high:.3f} ({jobs} jobs to run; "
                f"~${guess.cost_usd:.3f} with warm workers), over the budget of ${limit:.3f}",
                hint="raise --max-cost (max_cost in videokit.toml), render fewer scenes with "
                "--only, or see `videokit plan` for what the estimate includes",
            )
        costs = self._costs(backend)
        return Budget(limit, costs.estimate_cost), high

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
            # A first Ctrl-C cancels the render and its remote jobs; a second does not cut that
            # short (see videokit.pipeline.interrupts).
            return run_interruptibly(self.arun)
        return _run_in_thread(self.arun)

    async def arun(self) -> RenderResult:
        """Render the story: every scene (cached where possible), then the final video."""
        plan = self.plan()  # bad input fails here, before a backend even exists
        backend = self.backend()
        try:
            # e.g. a missing endpoint id, or requests too big to send: fail before submitting.
            backend.check(plan.stages(), payload_bytes=payload_bounds(plan))
            self.check_workdir()
            workdir = self._workdir()
            budget, high = self._budget(backend)
            workdir.create()
            with workdir.locked():
                graph = plan.graph
                if self.only:
                    needed = set(self.only).union(*(graph.ancestors(s) for s in self.only))
                    forced = set(self.only)
                else:
                    needed = set(plan.scenes)
                    forced = set(plan.scenes) if self.force else set()
                render = Render(
                    plan,
                    backend,
                    workdir,
                    output=self.output_path(),
                    needed=needed,
                    forced=forced,
                    concurrency=self.settings.concurrency,
                    on_event=self.on_event,
                    store=self.store(workdir),
                    budget=budget,
                    costs=self._costs(backend),
                    estimate_high_usd=high,
                )
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
