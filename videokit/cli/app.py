"""The ``videokit`` command line: render, validate, plan, serve, deploy and schema.

Quiet on success (a render prints the final video's path on stdout), loud and clear on failure
(one readable message on stderr, no traceback, a non-zero exit code), ``--json`` for programs:
with it, stdout carries only JSON objects, one per line, and a failure ends with one
``{"type": "error", ...}`` object. Output into a closed pipe (``| head -1``) stops quietly with
exit code 141, like any Unix tool killed by SIGPIPE.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from typer.core import TyperArgument, TyperCommand, TyperGroup

from videokit.backends.base import Backend, Stage
from videokit.costs import CostModel
from videokit.errors import ConfigError, RenderError, StoryError, VideoKitError
from videokit.pipeline.events import Event
from videokit.pipeline.forecast import forecast
from videokit.pipeline.requests import payload_bounds
from videokit.pipeline.runner import Pipeline, RenderResult
from videokit.story.model import Story
from videokit.story.plan import StoryPlan

__all__ = ["app", "main"]

#: The exit status of a process killed by SIGPIPE (128 + 13), which shells and pipelines expect.
EXIT_BROKEN_PIPE = 141


def _plain_flags(params: Iterable[Any]) -> None:
    # typer shows every option's type, so flags read `--force <bool>` as if they took a value.
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


class _Command(TyperCommand):
    """Help that reads like a man page: flags without a type, `Usage: ... [OPTIONS] STORY`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_flags([option] if option is not None else [])
        return option

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as `{story}`; the convention is `STORY`.
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class _Group(TyperGroup):
    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        _plain_flags([option] if option is not None else [])
        return option


app = typer.Typer(
    cls=_Group,
    name="videokit",
    help=(
        "Turn a story (YAML) into a finished AI video.\n\n"
        "Each scene optionally edits its first frame (Qwen-Image-Edit), then animates it "
        "(Wan2.2 image-to-video); each clip's last frame starts the next scene, and the clips "
        "are stitched into one MP4.\n\n"
        "Try it (no GPU or account needed: it renders a CPU preview):\n\n"
        "```\n"
        "videokit validate examples/story.yaml    # check everything, submit nothing\n"
        "videokit plan examples/story.yaml        # scene graph, jobs, cache hits, cost\n"
        "videokit render examples/story.yaml      # -> out/story/final.mp4\n"
        "videokit schema -o story.schema.json     # editor completion for stories\n"
        "```\n\n"
        "Rendering for real: set RUNPOD_API_KEY, VIDEOKIT_EDIT_ENDPOINT and "
        "VIDEOKIT_ANIMATE_ENDPOINT (RunPod endpoint ids, or URLs of `videokit serve`). "
        "Run any command with --help for its options and examples."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

StoryArg = Annotated[
    Path,
    typer.Argument(
        metavar="STORY", help="The story file (YAML). Paths inside it are relative to it."
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Machine-readable output: JSON objects on stdout, one per line."),
]
BackendOpt = Annotated[
    str | None,
    typer.Option(
        "--backend",
        "-b",
        metavar="NAME",
        help="Where jobs run: 'preview' (CPU animatic) or 'runpod' (RunPod endpoints, or "
        "`videokit serve`). Default: $VIDEOKIT_BACKEND; 'runpod' when endpoint ids are "
        "configured; else preview.",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", "-o", metavar="DIR", help="Work directory (default: out/STORY-NAME)."),
]


# Consoles are made when a command runs, not at import: they read the terminal and the
# environment (NO_COLOR, COLUMNS, ...) as they are then.
def _stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class _LibraryWarnings(logging.Handler):
    """videokit's own log warnings (a cancel that could not be confirmed, a storage problem),
    printed like the CLI's other warnings instead of as Python's bare last-resort lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _stderr().print(f"[yellow]warning:[/] {escape(record.getMessage())}")
        except Exception:
            self.handleError(record)


def _show_library_warnings() -> None:
    logger = logging.getLogger("videokit")
    if not any(isinstance(handler, _LibraryWarnings) for handler in logger.handlers):
        logger.addHandler(_LibraryWarnings(logging.WARNING))


def _stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _mute_output() -> None:
    """Point stdout and stderr at /dev/null, so nothing more is written into a closed pipe.

    Python flushes sys.stdout at exit; into a closed pipe that flush fails again and prints
    "Exception ignored ... BrokenPipeError". The standard remedy is to swap the descriptors.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            continue  # not a real file (a test runner's capture): nothing to flush into a pipe
    os.close(devnull)


@contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    """Print videokit's own errors without a traceback and exit with their exit code.

    With ``--json`` a failure also ends stdout with one ``{"type": "error", ...}`` object, so a
    program reading the stream learns why it stopped.
    """
    try:
        yield
    except BrokenPipeError:
        _mute_output()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except VideoKitError as exc:
        _fail(as_json, exc.exit_code, _error_json(exc), f"[bold red]error:[/] {escape(str(exc))}")
    except KeyboardInterrupt:
        _fail(
            as_json,
            130,
            {"error": "KeyboardInterrupt", "message": "interrupted", "hint": None},
            "[yellow]interrupted[/]: running jobs were cancelled; finished scenes are cached",
        )
    except typer.Exit:
        raise
    except Exception as exc:
        if as_json:
            message = f"{type(exc).__name__}: {exc}"
            _json_line({"error": "InternalError", "message": message, "hint": None}, 1)
        raise  # main() reports it as the bug it is


def _fail(as_json: bool, code: int, data: dict[str, Any], human: str) -> None:
    try:
        if as_json:
            _json_line(data, code)
        _stderr().print(human)
    except BrokenPipeError:
        _mute_output()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    raise typer.Exit(code)


def _json_line(data: dict[str, Any], code: int) -> None:
    document = {"type": "error", "ok": False, "exit_code": code, "problems": [], **data}
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def _error_json(exc: VideoKitError) -> dict[str, Any]:
    data: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
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
    if isinstance(exc, RenderError):
        data["failed"] = {scene: str(error) for scene, error in exc.failures.items()}
    return data


def _warn(plan: StoryPlan) -> None:
    if plan.warnings:
        err = _stderr()
        for warning in plan.warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}")


def _check_backend(pipeline: Pipeline, plan: StoryPlan) -> Backend:
    """Create the backend and check it can run this story's jobs; submits nothing."""
    backend = pipeline.backend()
    try:
        backend.check(plan.stages(), payload_bytes=payload_bounds(plan))
    finally:
        asyncio.run(backend.aclose())  # it may hold a connection pool; nothing was sent
    return backend


@app.command(cls=_Command)
def render(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Ignore the cache: render (and pay for) every scene.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="SCENE",
            help="Render just this scene (repeatable), ignoring its cache; "
            "what it starts from comes from the cache. Skips the final stitch.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-j", metavar="N", min=1, help="Jobs at once per stage."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Render STORY into a video: `out/STORY-NAME/final.mp4`, `manifest.json`, `contact_sheet.png`.

    Unchanged scenes come from the cache, so rendering again after an edit only pays for the
    scenes you changed and those that start from them. If a render is interrupted, run the same
    command again to finish it: it re-attaches to jobs still running and redoes only the rest.
    On success it prints the final video's path and nothing else.

    **Examples**

    ```
    videokit render examples/story.yaml
    videokit render examples/story.yaml --only tuxedo --only beach   # redo two scenes
    videokit render examples/story.yaml --force -o /tmp/fresh        # ignore the cache
    videokit render examples/story.yaml --backend runpod -j 2        # on RunPod, 2 jobs at once
    videokit render examples/story.yaml --json | jq -c 'select(.type == "scene_done")'
    ```
    """
    with _errors(as_json):
        _show_library_warnings()
        pipeline = Pipeline(
            story, backend=backend, out=out, force=force, only=only, concurrency=concurrency
        )
        plan = pipeline.plan()
        _warn(plan)
        pipeline.check_workdir()
        chosen = pipeline.backend()
        if chosen.name == "preview" and not as_json:
            _stderr().print(
                "[cyan]videokit:[/] no GPU endpoints configured, rendering a CPU [bold]preview[/] "
                "(an animatic of the story) — see README, 'Rendering for real'"
            )
        result = _run_with_display(pipeline, as_json=as_json, quiet=quiet)
        if as_json:
            return  # the warnings are in the render_done line
        for warning in result.warnings:
            _stderr().print(f"[yellow]warning:[/] {escape(warning)}")
        if result.final_video is not None:
            print(result.final_video)
        else:
            for scene in result.scenes.values():
                print(scene.clip)


def _run_with_display(pipeline: Pipeline, *, as_json: bool, quiet: bool) -> RenderResult:
    from videokit.cli.progress import JsonLines, LiveProgress

    # A handler that raises (BrokenPipeError from `| head -1`) aborts the render, which
    # cancels its jobs, and run() re-raises that exception for _errors() to report.
    if as_json:
        pipeline.on_event = JsonLines()
        return pipeline.run()
    err = _stderr()
    if quiet or not err.is_terminal:
        return pipeline.run()
    with LiveProgress(err) as display:
        handler: Callable[[Event], None] = display
        pipeline.on_event = handler
        return pipeline.run()


@app.command(cls=_Command)
def validate(story: StoryArg, backend: BackendOpt = None, as_json: JsonOpt = False) -> None:
    """Check STORY completely without submitting anything: schema, scene graph, every file it
    names, and the backend it would render with (endpoint ids, API key).

    Exit code 0 when it can be rendered, 2 with every problem listed (file, line, field, scene
    and a hint) when it cannot. Warnings (legal but probably unintended) go to stderr.

    **Examples**

    ```
    videokit validate examples/story.yaml
    videokit validate story.yaml --backend runpod     # also check RUNPOD_API_KEY and endpoints
    videokit validate story.yaml --json | jq '.problems[]?.field'
    ```
    """
    with _errors(as_json):
        pipeline = Pipeline(story, backend=backend)
        plan = pipeline.plan()
        _warn(plan)
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
        else:
            print(
                f"{story}: ok — {len(plan.scenes)} scenes, {jobs['edit']} edits, "
                f"{plan.final_frames} frames ({plan.final_frames / plan.fps:.2f} s), "
                f"backend {chosen.name}"
            )


@app.command(cls=_Command)
def plan(
    story: StoryArg,
    backend: BackendOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Plan as if nothing were cached.")] = False,
) -> None:
    """Show what rendering STORY would do: the scene graph, jobs, cache hits, the final frame
    count (and how it is computed), estimated GPU time and cost. Submits nothing.

    **Examples**

    ```
    videokit plan examples/story.yaml
    videokit plan examples/story.yaml --backend runpod     # cost of the jobs not cached yet
    videokit plan examples/story.yaml --json | jq .formula
    ```
    """
    with _errors(as_json):
        _show_library_warnings()
        pipeline = Pipeline(story, backend=backend, out=out)
        story_plan = pipeline.plan()
        _warn(story_plan)
        pipeline.check_workdir()
        chosen = pipeline.backend()
        costs = pipeline.settings.cost_model()  # the same prices and GPUs render bills with
        guess = forecast(story_plan, chosen, pipeline.workdir, costs=costs, force=force)
        # Only endpoints that will get jobs are asked (health is read-only and bounded).
        from videokit.backends.runpod import endpoint_notes

        both: tuple[Stage, ...] = ("edit", "animate")
        notes = endpoint_notes(chosen, [stage for stage in both if guess.jobs(stage)])
        if as_json:
            body = _plan_json(story_plan, guess, chosen.name, pipeline.workdir)
            print(json.dumps({**body, "endpoints": notes}))
            return
        _print_plan(story_plan, guess, chosen.name, pipeline.workdir, costs)
        for note in notes:
            _stdout().print(f"[dim]{note}[/dim]")


def _plan_json(plan: StoryPlan, guess: Any, backend: str, workdir: Path) -> dict[str, Any]:
    return {
        "type": "plan",
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
        "longest_chain": plan.graph.longest_chain(),
        "warnings": list(plan.warnings),
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
    chain = plan.graph.longest_chain()
    if len(chain) > 1:
        console.print(
            f"longest chain: {' → '.join(chain)} ({len(chain)} scenes that must run one after "
            "another; the others run alongside)"
        )

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
    modes = {
        stage: f" in {mode} mode" for stage, mode in costs.modes.items() if mode != "lightning"
    }
    gpus = ", ".join(
        f"{stage} on {costs.gpu[stage]}{modes.get(stage, '')}" for stage in ("edit", "animate")
    )
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


@app.command(cls=_Command)
def serve(
    worker: Annotated[
        str,
        typer.Argument(metavar="WORKER", help="Which worker to serve: 'edit' or 'animate'."),
    ],
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            "-e",
            metavar="NAME",
            help="The engine behind it: 'diffusers' (the real models, on a GPU), 'tiny' (the "
            "same pipelines with tiny random weights, on a CPU) or 'preview' (CPU animatic, no "
            "weights).",
        ),
    ] = "preview",
    host: Annotated[
        str,
        typer.Option(
            metavar="ADDRESS",
            help="Address to bind. Loopback by default; use 0.0.0.0 to share.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-j", metavar="N", min=1, help="Jobs running at once."),
    ] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            metavar="KEY",
            envvar="VIDEOKIT_SERVE_API_KEY",
            help="Require 'Authorization: Bearer KEY' (prefer the environment variable: "
            "command lines are visible to other users).",
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            metavar="SPEC",
            help="Inject faults for testing clients: '0.2' (20% of requests faulty, kinds "
            "mixed), 'each@0.2' (every kind at 20%), '429=0.2,stuck=0.05' or "
            "'429,5xx,drop@0.1'. Kinds: 429 5xx drop slow failed stuck expired.",
        ),
    ] = None,
    fault_seed: Annotated[
        int | None,
        typer.Option("--fault-seed", metavar="N", help="Make injected faults repeatable."),
    ] = None,
    min_job_seconds: Annotated[
        float,
        typer.Option(
            "--min-job-seconds",
            metavar="SECONDS",
            min=0,
            help="Pad every job to at least this long (emulates a GPU, for benchmarks).",
        ),
    ] = 0.0,
) -> None:
    """Serve a worker on your own machine behind RunPod's v2 queue API.

    The same client that drives RunPod endpoints drives this server: point a stage at it with
    its full URL, e.g. VIDEOKIT_ANIMATE_ENDPOINT=http://gpu-box:8000/v2/animate. Routes: run,
    runsync, status, stream, cancel, retry, purge-queue, health.

    **Examples**

    ```
    videokit serve animate --port 8002
    VIDEOKIT_SERVE_API_KEY=secret videokit serve edit --host 0.0.0.0 --port 8001
    ```
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


@app.command(cls=_Command)
def deploy(
    spec: Annotated[
        Path,
        typer.Argument(metavar="SPEC", help="Deploy spec (YAML), e.g. examples/deploy.yaml."),
    ],
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

    **Examples**

    ```
    videokit deploy examples/deploy.yaml --dry-run     # every field it would send
    videokit deploy examples/deploy.yaml >> .env       # create/update, keep the endpoint ids
    ```
    """
    with _errors():
        from videokit.config import Settings
        from videokit.deploy import run_deploy

        key = Settings.environment().get("RUNPOD_API_KEY") or None
        run_deploy(spec, dry_run=dry_run, api_key=key, out=sys.stdout, offline=offline)


@app.command(cls=_Command)
def schema(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write to this file instead of stdout."
        ),
    ] = None,
) -> None:
    """Print the JSON Schema of the story format, for editor completion.

    In VS Code (YAML extension): run `videokit schema -o story.schema.json`, then put
    `# yaml-language-server: $schema=story.schema.json` at the top of a story.

    **Examples**

    ```
    videokit schema -o story.schema.json
    videokit schema | jq '.["$defs"].Scene.properties | keys'
    ```
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

        err = _stderr()
        err.print(
            "[bold red]internal error[/] (a bug in videokit; please report it with the line "
            "below, or run again with VIDEOKIT_DEBUG=1 for the full traceback):"
        )
        err.print(escape(traceback.format_exc().strip().splitlines()[-1]))
        sys.exit(1)


if __name__ == "__main__":
    main()
