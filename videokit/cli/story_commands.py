"""``videokit render``, ``validate`` and ``plan``: the commands that take a story.

The library is imported inside each command, not at module level, so ``videokit --help`` and
``--version`` start without loading the pipeline, pydantic models or media code.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from videokit.cli.options import BackendOpt, JsonOpt, OutOpt, QuietOpt, StoryArg, VerboseOpt
from videokit.cli.output import configure_logging, errors, stderr, warn

if TYPE_CHECKING:
    from videokit.backends.base import Backend
    from videokit.pipeline.results import RenderResult
    from videokit.pipeline.runner import Pipeline
    from videokit.story.plan import StoryPlan

__all__ = ["plan", "render", "validate"]


def _warn_plan(plan: StoryPlan) -> None:
    for warning in plan.warnings:
        warn(warning)


def _check_backend(pipeline: Pipeline, plan: StoryPlan) -> Backend:
    """Create the backend and check it can run this story's jobs; submits nothing."""
    import asyncio

    from videokit.pipeline.requests import payload_bounds

    backend = pipeline.backend()
    try:
        backend.check(plan.stages(), payload_bytes=payload_bounds(plan))
    finally:
        asyncio.run(backend.aclose())  # it may hold a connection pool; nothing was sent
    return backend


def _resume_hint() -> str:
    command = shlex.join(["videokit", *sys.argv[1:]])
    return (
        f"running jobs were cancelled. To resume, run the same command again: {command} "
        "(scenes and jobs this render finished are not paid for again)"
    )


def render(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-O",
            metavar="FILE",
            help="Where the final video goes (default: the story's output.path, else "
            "OUT/final.mp4). Any path you give here is allowed; a story file may only write "
            "inside its own folder or the work directory.",
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace a file at the output path even if videokit did not write it.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Ignore the cache: render (and pay for) every scene.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="SCENE",
            help="Render just this scene (repeatable), ignoring its cache; what it starts from "
            "comes from the cache. The film is stitched again if every other scene is still "
            "current.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-j", metavar="N", min=1, help="Jobs at once per stage."),
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            "--max-cost",
            metavar="USD",
            min=0.0,
            help="A budget: refuse to start when the estimate's upper end is over it (exit 2), "
            "and submit no job that could take spend past it (exit 1; running jobs finish, "
            "everything finished is cached). Default: max_cost in videokit.toml, "
            "$VIDEOKIT_MAX_COST.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Render STORY into a video: `out/STORY-NAME/final.mp4`, `manifest.json`, `contact_sheet.png`.

    Unchanged scenes come from the cache, so rendering again after an edit only pays for the
    scenes you changed and those that start from them. If a render is interrupted, run the same
    command again to finish it (with `--force` or `--only` too): it re-attaches to jobs still
    running and pays only for what the interrupted render had not finished. On success it prints
    the final video's path on stdout (with `--only`, first the clips it made); progress and a
    summary go to stderr.

    **Examples**

    ```
    videokit render examples/story.yaml
    videokit render examples/story.yaml --only tuxedo --only beach   # redo two scenes
    videokit render examples/story.yaml --force -o /tmp/fresh        # ignore the cache
    videokit render examples/story.yaml --output ~/films/robbie.mp4  # the film elsewhere
    videokit render examples/story.yaml --backend runpod -j 2        # on RunPod, 2 jobs at once
    videokit render examples/story.yaml --backend runpod --max-cost 2  # spend at most $2
    videokit render examples/story.yaml --json | jq -c 'select(.type == "scene_done")'
    videokit render examples/story.yaml 2>&1 | tee render.log        # plain progress lines
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json, interrupted=_resume_hint()):
        from videokit.pipeline.runner import Pipeline

        pipeline = Pipeline(
            story,
            backend=backend,
            out=out,
            output=output,
            overwrite=overwrite,
            force=force,
            only=only,
            concurrency=concurrency,
            max_cost=max_cost,
        )
        _warn_plan(pipeline.plan())
        pipeline.check_workdir()
        if pipeline.backend().name == "preview" and not (as_json or quiet):
            stderr().print(
                "[cyan]videokit:[/] no GPU endpoints configured, rendering a CPU [bold]preview[/] "
                "(an animatic of the story) — see README, 'Rendering for real'"
            )
        result = _run_with_display(pipeline, as_json=as_json, quiet=quiet)
        if as_json:
            return  # the warnings and the summary are in the render_done line
        for warning in result.warnings:
            warn(warning)
        if only:
            for scene_id in result.rendered:
                print(result.scenes[scene_id].clip)
        if result.final_video is not None:
            print(result.final_video)


def _run_with_display(pipeline: Pipeline, *, as_json: bool, quiet: bool) -> RenderResult:
    # A handler that raises (BrokenPipeError from `| head -1`) aborts the render, which
    # cancels its jobs, and run() re-raises that exception for errors() to report.
    if as_json:
        from videokit.cli.progress import JsonLines

        pipeline.on_event = JsonLines()
        return pipeline.run()
    if quiet:
        return pipeline.run()
    err = stderr()
    if not err.is_terminal:
        from videokit.cli.progress import PlainProgress

        pipeline.on_event = PlainProgress(sys.stderr)
        return pipeline.run()
    from videokit.cli.live_progress import LiveProgress

    with LiveProgress(err) as display:
        pipeline.on_event = display
        return pipeline.run()


def validate(
    story: StoryArg,
    backend: BackendOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Check STORY completely without submitting anything: schema, scene graph, every file it
    names, and the backend it would render with (endpoint ids, API key).

    Exit code 0 when it can be rendered, 2 with every problem listed (file, line, field, scene
    and a hint) when it cannot: one run reports them all. Warnings (legal but probably
    unintended, such as a reference image that will be cropped) go to stderr.

    **Examples**

    ```
    videokit validate examples/story.yaml
    videokit validate story.yaml --backend runpod     # also check RUNPOD_API_KEY and endpoints
    videokit validate story.yaml --json | jq '.problems[]?.field'
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.pipeline.runner import Pipeline

        pipeline = Pipeline(story, backend=backend)
        plan = pipeline.plan()
        _warn_plan(plan)
        chosen = _check_backend(pipeline, plan)
        jobs = plan.job_count()
        if as_json:
            summary = {
                "type": "valid",
                "ok": True,
                "story": str(story),
                "backend": chosen.name,
                "scenes": len(plan.scenes),
                "jobs": jobs,
                "frames": plan.final_frames,
                "warnings": list(plan.warnings),
            }
            print(json.dumps(summary))
        elif not quiet:
            print(
                f"{story}: ok — {len(plan.scenes)} scenes, {jobs['edit']} edits, "
                f"{plan.final_frames} frames ({plan.final_frames / plan.fps:.2f} s), "
                f"backend {chosen.name}"
            )


def plan(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Plan as if nothing were cached.")] = False,
    refresh_prices: Annotated[
        bool,
        typer.Option(
            "--refresh-prices",
            help="Read RunPod's GPU catalog now instead of the copy cached for a day.",
        ),
    ] = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show what rendering STORY would do: the scene graph, jobs, cache hits, the final frame
    count (and how it is computed), estimated GPU time and cost. Submits nothing.

    On RunPod with RUNPOD_API_KEY set, GPU prices come from RunPod's GPU catalog (cached for a
    day in the user cache dir); otherwise, or when it cannot be read, from videokit's built-in
    table, and the plan says which (and the table's date).

    **Examples**

    ```
    videokit plan examples/story.yaml
    videokit plan examples/story.yaml --backend runpod     # cost of the jobs not cached yet
    videokit plan examples/story.yaml --backend runpod --refresh-prices   # today's GPU prices
    videokit plan examples/story.yaml --json | jq .formula
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.backends.base import Stage
        from videokit.cli.endpoint_notes import endpoint_notes, route_endpoints
        from videokit.cli.output import stdout
        from videokit.cli.plan_view import plan_json, print_plan
        from videokit.pipeline.forecast import forecast
        from videokit.pipeline.runner import Pipeline

        pipeline = Pipeline(story, backend=backend, out=out)
        story_plan = pipeline.plan()
        _warn_plan(story_plan)
        pipeline.check_workdir()
        chosen = pipeline.backend()
        settings = pipeline.settings
        costs = settings.cost_model()  # the same prices and GPUs render bills with
        prices_note = None
        on_gpu = [stage for stage in story_plan.stages() if stage not in costs.output_prices]
        if chosen.name == "runpod" and on_gpu and settings.api_key:
            # Today's prices from RunPod's catalog (cached for a day); never on the preview.
            from videokit.rest.catalog import try_catalog

            key = settings.api_key.reveal()
            catalog, prices_note = try_catalog(key, settings.environ, refresh=refresh_prices)
            if catalog is not None:
                costs = settings.cost_model(catalog.prices())
        routes = route_endpoints(chosen, costs)
        guess = forecast(
            story_plan,
            chosen,
            pipeline.workdir,
            costs=costs,
            force=force,
            routes=routes,
            store=pipeline.store(),
            concurrency=settings.concurrency,
        )
        # Only endpoints that will get jobs are asked (health is read-only and bounded).
        both: tuple[Stage, ...] = ("edit", "animate")
        notes = endpoint_notes(chosen, [stage for stage in both if guess.jobs(stage)])
        if as_json:
            body = plan_json(
                story_plan, guess, chosen.name, pipeline.workdir, costs, prices_note=prices_note
            )
            print(json.dumps({**body, "endpoints": notes}))
            return
        print_plan(story_plan, guess, chosen.name, pipeline.workdir, costs, prices_note=prices_note)
        for note in notes:
            stdout().print(f"[dim]{note}[/dim]")
