"""The ``videokit`` command line: render, validate, plan and schema.

Quiet on success (a render prints the final video's path on stdout), loud and clear on failure
(one readable message on stderr, no traceback, a non-zero exit code), ``--json`` for programs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from videokit.backends.base import Stage
from videokit.costs import CostModel
from videokit.errors import ConfigError, StoryError, VideoKitError
from videokit.pipeline.events import Event
from videokit.pipeline.forecast import forecast
from videokit.pipeline.runner import Pipeline, RenderResult
from videokit.story.model import Story
from videokit.story.plan import StoryPlan

__all__ = ["app", "main"]

app = typer.Typer(
    name="videokit",
    help=(
        "Turn a story (YAML) into a finished AI video.\n\n"
        "Each scene optionally edits its first frame (Qwen-Image-Edit), then animates it "
        "(Wan2.2 image-to-video); each clip's last frame starts the next scene, and the clips "
        "are stitched into one MP4.\n\n"
        "Start with:  videokit validate story.yaml  →  videokit plan story.yaml  →  "
        "videokit render story.yaml\n\n"
        "Rendering for real: set RUNPOD_API_KEY, VIDEOKIT_EDIT_ENDPOINT and "
        "VIDEOKIT_ANIMATE_ENDPOINT (RunPod endpoint ids, or URLs of `videokit serve`)."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

StoryArg = Annotated[
    Path, typer.Argument(help="The story file (YAML). Paths inside it are relative to it.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        help="Where jobs run: 'preview' (CPU animatic) or 'runpod' (RunPod endpoints, or "
        "`videokit serve`). Default: $VIDEOKIT_BACKEND; 'runpod' when endpoint ids are "
        "configured; else preview.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Work directory (default: out/STORY-NAME)."),
]

_err = Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


@contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """Print videokit's own errors without a traceback and exit with their exit code."""
    try:
        yield
    except VideoKitError as exc:
        if as_json:
            print(json.dumps(_error_json(exc)))
        _err.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        _err.print(
            "[yellow]interrupted[/]: running jobs were cancelled; finished scenes are cached"
        )
        raise typer.Exit(130) from None


def _error_json(exc: VideoKitError) -> dict[str, Any]:
    data: dict[str, Any] = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, StoryError):
        data["problems"] = [
            {
                "message": p.message,
                "file": str(p.file) if p.file else None,
                "line": p.line,
                "field": p.field,
                "scene": p.scene,
                "hint": p.hint,
            }
            for p in exc.problems
        ]
    return data


def _warn(plan: StoryPlan) -> None:
    for warning in plan.warnings:
        _err.print(f"[yellow]warning:[/] {escape(warning)}")


@app.command()
def render(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Ignore the cache: render every scene again.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            help="Render just this scene (repeatable), ignoring its cache; "
            "what it starts from comes from the cache. Skips the final stitch.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-j", min=1, help="Jobs at once per stage."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Render STORY into a video: `out/STORY-NAME/final.mp4`, `manifest.json`, `contact_sheet.png`.

    Unchanged scenes come from the cache, so rendering again after an edit only pays for the
    scenes you changed and those that start from them. If a render is interrupted, run the same
    command again to finish it.

    Examples:

      videokit render examples/story.yaml

      videokit render story.yaml --only casino       (redo one scene)

      videokit render story.yaml --json | jq .type   (events as JSON lines)
    """
    with _errors(as_json):
        pipeline = Pipeline(
            story, backend=backend, out=out, force=force, only=only, concurrency=concurrency
        )
        plan = pipeline.plan()
        _warn(plan)
        chosen = pipeline.backend()
        if chosen.name == "preview" and not as_json:
            _err.print(
                "[cyan]videokit:[/] no GPU endpoints configured, rendering a CPU [bold]preview[/] "
                "(an animatic of the story) — see README, 'Rendering for real'"
            )
        result = _run_with_display(pipeline, as_json=as_json, quiet=quiet)
        if as_json:
            return
        if result.final_video is not None:
            print(result.final_video)
        else:
            for scene in result.scenes.values():
                print(scene.clip)


def _run_with_display(pipeline: Pipeline, *, as_json: bool, quiet: bool) -> RenderResult:
    from videokit.cli.progress import JsonLines, LiveProgress

    if as_json:
        pipeline.on_event = JsonLines()
        return pipeline.run()
    if quiet or not _err.is_terminal:
        return pipeline.run()
    with LiveProgress(_err) as display:
        handler: Callable[[Event], None] = display
        pipeline.on_event = handler
        return pipeline.run()


@app.command()
def validate(story: StoryArg, as_json: JsonOpt = False) -> None:
    """Check STORY completely (schema, scene graph, files) without submitting anything.

    Exit code 0 when it can be rendered, 2 with every problem listed (file, line, field, scene
    and a hint) when it cannot.
    """
    with _errors(as_json):
        plan = Pipeline(story).plan()
        _warn(plan)
        summary = {
            "ok": True,
            "story": str(story),
            "scenes": len(plan.scenes),
            "jobs": plan.job_count(),
            "frames": plan.final_frames,
            "warnings": list(plan.warnings),
        }
        if as_json:
            print(json.dumps(summary))
        else:
            jobs = plan.job_count()
            print(
                f"{story}: ok — {len(plan.scenes)} scenes, {jobs['edit']} edits, "
                f"{plan.final_frames} frames ({plan.final_frames / plan.fps:.2f} s)"
            )


@app.command()
def plan(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Plan as if nothing were cached.")] = False,
) -> None:
    """Show what rendering STORY would do: the scene graph, jobs, cache hits, the final frame
    count (and how it is computed), estimated GPU time and cost. Submits nothing."""
    with _errors(as_json):
        pipeline = Pipeline(story, backend=backend, out=out)
        story_plan = pipeline.plan()
        chosen = pipeline.backend()
        costs = CostModel()
        guess = forecast(story_plan, chosen, pipeline.workdir, costs=costs, force=force)
        if as_json:
            print(json.dumps(_plan_json(story_plan, guess, chosen.name, pipeline.workdir)))
            return
        _warn(story_plan)
        _print_plan(story_plan, guess, chosen.name, pipeline.workdir, costs)


def _plan_json(plan: StoryPlan, guess: Any, backend: str, workdir: Path) -> dict[str, Any]:
    return {
        "story": plan.story.title,
        "backend": backend,
        "workdir": str(workdir),
        "size": [plan.width, plan.height],
        "fps": plan.fps,
        "timeline": [
            {
                "scene": e.scene,
                "frames": e.frames,
                "drop_head": e.drop_head,
                "crossfade": e.crossfade,
            }
            for e in plan.timeline
        ],
        "branches": list(plan.branches),
        "final_frames": plan.final_frames,
        "formula": plan.frame_formula(),
        "scenes": {
            sid: {
                "from": s.source.describe(),
                "frames": s.frames,
                "frames_note": s.frames_note,
                "seed": s.seed,
                "seed_derived": s.seed_derived,
                "edit": guess.scenes[sid].edit,
                "animate": guess.scenes[sid].animate,
                "reason": guess.scenes[sid].reason,
                "gpu_seconds": round(guess.scenes[sid].gpu_seconds, 1),
                "cost_usd": round(guess.scenes[sid].cost_usd, 4),
            }
            for sid, s in plan.scenes.items()
        },
        "jobs": {"edit": guess.jobs("edit"), "animate": guess.jobs("animate")},
        "cached": {"edit": guess.cached("edit"), "animate": guess.cached("animate")},
        "gpu_seconds": round(guess.gpu_seconds, 1),
        "cost_usd": round(guess.cost_usd, 4),
        "all_jobs_gpu_seconds": round(guess.full_gpu_seconds, 1),
        "all_jobs_cost_usd": round(guess.full_cost_usd, 4),
        "cost_basis": "RunPod serverless GPU (see videokit.costs)",
    }


def _print_plan(plan: StoryPlan, guess: Any, backend: str, workdir: Path, costs: CostModel) -> None:
    console = _stdout()
    console.print(
        f"[bold]{escape(plan.story.title)}[/]  {plan.width}x{plan.height} @ {plan.fps} fps"
    )
    console.print(f"work dir: {workdir}    backend: {backend}")
    tree = Tree("[bold]scene graph[/] (each scene starts from its parent's frame)")
    nodes: dict[str | None, Any] = {None: tree}
    for scene_id in plan.graph.topological():
        scene = plan.scenes[scene_id]
        parent_key = scene.source.scene
        parent = nodes.get(parent_key, tree)
        label = f"[bold]{scene_id}[/]"
        if scene.source.kind in ("reference", "file"):
            label += f"  from {escape(scene.source.describe())}"
        elif scene.source.kind == "scene_edit":
            label += "  from its edited frame"
        if scene.edit is not None:
            label += "  [magenta]edit[/]"
        if scene_id in plan.branches:
            label += "  [dim](branch, not on the timeline)[/]"
        nodes[scene_id] = parent.add(label)
    console.print(tree)

    table = Table(show_edge=False, header_style="bold")
    for column in ("scene", "frames", "seed", "edit", "animate", "est. GPU s", "est. $"):
        right = column.startswith(("est", "frames", "seed"))
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    marks = {"cached": "[green]cached[/]", "render": "[yellow]render[/]", "none": "-"}
    for scene_id, scene in plan.scenes.items():
        g = guess.scenes[scene_id]
        seed = f"{scene.seed}" + ("*" if scene.seed_derived else " ")
        table.add_row(
            scene_id,
            str(scene.frames),
            seed,
            marks[g.edit],
            marks[g.animate],
            f"{g.gpu_seconds:.0f}",
            f"{g.cost_usd:.3f}",
        )
    console.print(table)
    if any(s.seed_derived for s in plan.scenes.values()):
        console.print("  * seed derived from the story seed and the scene id")
    for scene in plan.scenes.values():
        if scene.frames_note:
            console.print(f"  {scene.id}: duration {scene.frames_note}")
    console.print(f"final video: {plan.frame_formula()}")
    jobs = f"{guess.jobs('edit')} edit + {guess.jobs('animate')} animate jobs to run"
    hits = f"{guess.cached('edit')} edit + {guess.cached('animate')} animate cached"
    console.print(f"jobs: {jobs}; {hits}")
    gpus = ", ".join(f"{stage} on {costs.gpu[stage]}" for stage in ("edit", "animate"))
    if backend == "preview":
        console.print(
            f"cost: free on the preview backend; on RunPod ({gpus}) all "
            f"{sum(plan.job_count().values())} jobs would take ~{guess.full_gpu_seconds:.0f} "
            f"GPU-s, ~${guess.full_cost_usd:.3f}"
        )
    else:
        console.print(
            f"estimate: ~{guess.gpu_seconds:.0f} GPU-s, ~${guess.cost_usd:.3f} on RunPod ({gpus})"
        )


@app.command()
def serve(
    worker: Annotated[str, typer.Argument(help="Which worker to serve: 'edit' or 'animate'.")],
    engine: Annotated[
        str,
        typer.Option("--engine", "-e", help="The engine behind it: 'preview' (CPU animatic)."),
    ] = "preview",
    host: Annotated[
        str, typer.Option(help="Address to bind. Loopback by default; use 0.0.0.0 to share.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-j", min=1, help="Jobs running at once.")
    ] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="VIDEOKIT_SERVE_API_KEY",
            help="Require 'Authorization: Bearer KEY' (prefer the environment variable: "
            "command lines are visible to other users).",
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Inject faults for testing clients, e.g. '0.2' (every kind at 20%) or "
            "'429,5xx,drop@0.1'. Kinds: 429 5xx drop slow failed stuck expired.",
        ),
    ] = None,
    fault_seed: Annotated[
        int | None, typer.Option("--fault-seed", help="Make injected faults repeatable.")
    ] = None,
    min_job_seconds: Annotated[
        float,
        typer.Option(
            "--min-job-seconds",
            min=0,
            help="Pad every job to at least this long (emulates a GPU, for benchmarks).",
        ),
    ] = 0.0,
) -> None:
    """Serve a worker on your own machine behind RunPod's v2 queue API.

    The same client that drives RunPod endpoints drives this server: point a stage at it with
    its full URL, e.g. VIDEOKIT_ANIMATE_ENDPOINT=http://gpu-box:8000/v2/animate. Routes: run,
    runsync, status, stream, cancel, retry, purge-queue, health.

    Examples:

      videokit serve animate --port 8002

      VIDEOKIT_SERVE_API_KEY=secret videokit serve edit --host 0.0.0.0 --port 8001
    """
    with _errors():
        from videokit.serve import FaultConfig
        from videokit.serve import serve as run_server
        from videokit.worker.engines import load_engine
        from videokit.worker.handler import make_handler

        if worker not in ("edit", "animate"):
            raise ConfigError(f"unknown worker '{worker}'", hint="use 'edit' or 'animate'")
        stage: Stage = "edit" if worker == "edit" else "animate"
        options: dict[str, object] = {"min_job_seconds": min_job_seconds} if min_job_seconds else {}
        loaded = load_engine(stage, engine, **options)
        fault_config = FaultConfig.from_spec(faults, seed=fault_seed) if faults else None
        run_server(
            make_handler(stage, loaded),
            host=host,
            port=port,
            concurrency=concurrency,
            api_key=api_key,
            faults=fault_config,
        )


@app.command()
def deploy(
    spec: Annotated[Path, typer.Argument(help="Deploy spec (YAML), e.g. examples/deploy.yaml.")],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print every field that would be sent; change nothing."),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option("--offline", help="With --dry-run: do not read existing templates/endpoints."),
    ] = False,
) -> None:
    """Create or update the RunPod templates and serverless endpoints of both workers.

    Reads RUNPOD_API_KEY from the environment or `.env` (there is no flag: it would end up in
    shell history). Idempotent: templates and endpoints are found by name and updated in place.
    Prints the endpoint ids and the `.env` lines to render with them.

    Examples:

      videokit deploy examples/deploy.yaml --dry-run

      videokit deploy examples/deploy.yaml >> .env
    """
    with _errors():
        from videokit.config import Settings
        from videokit.deploy import run_deploy

        key = Settings.environment().get("RUNPOD_API_KEY") or None
        run_deploy(spec, dry_run=dry_run, api_key=key, out=sys.stdout, offline=offline)


@app.command()
def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of the story format, for editor completion.

    In VS Code (YAML extension): run `videokit schema -o story.schema.json`, then put
    `# yaml-language-server: $schema=story.schema.json` at the top of a story.
    """
    with _errors():
        document = Story.model_json_schema(by_alias=True)
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["title"] = "videokit story"
        text = json.dumps(document, indent=2)
        if output is None:
            print(text)
        else:
            output.write_text(text + "\n")


def main() -> None:
    """Entry point of the ``videokit`` script."""
    try:
        app()
    except Exception:
        if os.environ.get("VIDEOKIT_DEBUG"):
            raise
        import traceback

        _err.print(
            "[bold red]internal error[/] (a bug in videokit; please report it with the line "
            "below, or run again with VIDEOKIT_DEBUG=1 for the full traceback):"
        )
        _err.print(escape(traceback.format_exc().strip().splitlines()[-1]))
        sys.exit(1)


if __name__ == "__main__":
    main()
