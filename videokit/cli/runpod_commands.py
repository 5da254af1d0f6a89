"""``videokit cost``, ``workers`` and ``logs``: what RunPod's REST API v2 says about your endpoints.

They read ``RUNPOD_API_KEY`` (environment or ``.env``) and the endpoint ids of the settings
(``VIDEOKIT_EDIT_ENDPOINT``/``VIDEOKIT_ANIMATE_ENDPOINT`` or ``videokit.toml``);
``VIDEOKIT_RUNPOD_REST_URL`` points them at another REST v2 base, which never gets the key.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from videokit.cli.options import JsonOpt, QuietOpt, VerboseOpt
from videokit.cli.output import configure_logging, errors, stderr, stdout

if TYPE_CHECKING:
    from videokit.config import Settings
    from videokit.pipeline.manifest import Manifest
    from videokit.rest.billing import EndpointEstimate, Reconciliation
    from videokit.rest.models import Worker

__all__ = ["cost", "logs", "workers"]

StageArg = Annotated[
    str,
    typer.Argument(metavar="STAGE", help="Which endpoint: 'edit' or 'animate'."),
]


def _rest_access() -> tuple[Settings, str, str]:
    """The settings, the API key and the REST base URL; a ConfigError without a key."""
    from videokit.config import Settings
    from videokit.errors import ConfigError
    from videokit.rest import DEFAULT_REST_URL

    settings = Settings.resolve()
    if settings.api_key is None:
        raise ConfigError(
            "RUNPOD_API_KEY is not set: this command reads RunPod's REST API",
            hint="export RUNPOD_API_KEY=... (RunPod console > Settings > API Keys), or put it "
            "in .env",
        )
    base_url = settings.environ.get("VIDEOKIT_RUNPOD_REST_URL") or DEFAULT_REST_URL
    return settings, settings.api_key.reveal(), base_url


def _own_endpoint(settings: Settings, stage: str) -> str:
    """The RunPod endpoint id of ``stage``; a ConfigError for a public endpoint or a URL."""
    from urllib.parse import urlsplit

    from videokit.backends.kinds.catalogue import public_model
    from videokit.errors import ConfigError

    if stage not in ("edit", "animate"):
        raise ConfigError(f"unknown stage '{stage}'", hint="use 'edit' or 'animate'")
    route = settings.route(stage)
    # `workers` and `logs` look at one endpoint: a stage's first choice.
    endpoint = route[0][1] if route else None
    variable = f"VIDEOKIT_{stage.upper()}_ENDPOINT"
    if not endpoint:
        raise ConfigError(
            f"no {stage} endpoint is configured",
            hint=f"set {variable} to its RunPod endpoint id (`videokit deploy` prints it)",
        )
    if public_model(endpoint) is not None:
        raise ConfigError(
            f"the {stage} endpoint '{endpoint}' is a RunPod Public Endpoint: RunPod runs its "
            "workers, so it has no worker list or logs for you",
            hint="`videokit cost WORKDIR` shows what it billed",
        )
    if "://" in endpoint:
        parts = urlsplit(endpoint)
        segments = [s for s in parts.path.split("/") if s]
        if (parts.hostname or "").endswith("runpod.ai") and len(segments) >= 2:
            return segments[1]  # https://api.runpod.ai/v2/ID
        raise ConfigError(
            f"the {stage} endpoint is a URL ({endpoint}), not a RunPod endpoint id: workers "
            "and logs are RunPod's",
            hint="a `videokit serve` prints its own logs in the terminal that runs it",
        )
    return endpoint


# -- workers ---------------------------------------------------------------------------------------


def workers(
    stage: StageArg,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """List the workers of the edit or animate endpoint and their state.

    States: RUNNING (a job), IDLE (warm, waiting), INITIALIZING (pulling the image, loading
    the model), THROTTLED (no GPU free in its pools), UNHEALTHY (failed to start or crashed).
    No worker at all: the endpoint has scaled to zero.

    **Examples**

    ```
    videokit workers animate
    videokit workers edit --json | jq -r '.workers[].id'
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.pipeline.interrupts import run_interruptibly
        from videokit.rest import RunPodRest
        from videokit.rest.workers import list_workers

        settings, key, base_url = _rest_access()
        endpoint = _own_endpoint(settings, stage)

        async def fetch() -> Any:
            async with RunPodRest(key, base_url=base_url) as rest:
                return await list_workers(rest, endpoint)

        answer = run_interruptibly(fetch)
        if as_json:
            document = {"type": "workers", "stage": stage, "endpoint": endpoint}
            print(json.dumps({**document, **answer.model_dump(mode="json")}))
            return
        _print_workers(stage, endpoint, answer.workers)


def _print_workers(stage: str, endpoint: str, found: list[Worker]) -> None:
    from rich.markup import escape

    out = stdout()
    if not found:
        out.print(f"{stage} endpoint {escape(endpoint)}: no workers (scaled to zero)")
        return
    out.print(f"{stage} endpoint {escape(endpoint)}: {len(found)} worker(s)")
    colours = {"RUNNING": "green", "IDLE": "cyan", "INITIALIZING": "yellow"}
    for worker in found:
        colour = colours.get(worker.status, "red")
        uptime = f"{worker.uptimeSeconds}s up" if worker.uptimeSeconds is not None else ""
        details = [worker.gpuTypeId or "", uptime, worker.dataCenterId or ""]
        if worker.isStale:
            details.append("stale (an older version of the endpoint)")
        shown = "  ".join(d for d in details if d)
        out.print(
            f"  {escape(worker.id):<14} [{colour}]{worker.status:<12}[/] {escape(shown)}".rstrip()
        )


# -- logs ------------------------------------------------------------------------------------------


def logs(
    stage: StageArg,
    worker: Annotated[
        str | None,
        typer.Option(
            "--worker", "-w", metavar="ID", help="Which worker (default: the latest started)."
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep streaming new lines until Ctrl-C.")
    ] = False,
    tail: Annotated[
        int,
        typer.Option("--tail", "-n", metavar="N", min=0, max=5000, help="Earlier lines first."),
    ] = 100,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Print a worker's logs (container and system lines), or follow them.

    Without --worker it picks the latest started worker and says which on stderr (the others:
    `videokit workers STAGE`). --follow reconnects by itself (at most one request a second)
    and stops on Ctrl-C.

    **Examples**

    ```
    videokit logs animate --follow            # watch a cold start or a job
    videokit logs edit --worker 8g3n5t6r -n 500
    videokit logs animate --json | jq -r .line
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json, interrupted="stopped following the logs"):
        from videokit.errors import ConfigError
        from videokit.pipeline.interrupts import run_interruptibly
        from videokit.rest import RunPodRest
        from videokit.rest.workers import WorkerLogs, list_workers

        settings, key, base_url = _rest_access()
        endpoint = _own_endpoint(settings, stage)

        async def stream() -> None:
            worker_id = worker
            if worker_id is None:
                async with RunPodRest(key, base_url=base_url) as rest:
                    found = (await list_workers(rest, endpoint)).workers
                if not found:
                    raise ConfigError(
                        f"the {stage} endpoint {endpoint} has no workers (scaled to zero): no "
                        "logs to show",
                        hint="send it a job (or set min workers) and try again",
                    )
                oldest = datetime.min.replace(tzinfo=UTC)
                chosen = max(found, key=lambda w: w.startedAt or oldest)
                worker_id = chosen.id
                if not quiet:
                    others = len(found) - 1
                    more = f"; {others} other(s): `videokit workers {stage}`" if others else ""
                    stderr().print(f"[dim]logs of worker {worker_id} ({chosen.status}){more}[/]")
            async with WorkerLogs(key, base_url=base_url) as reader:
                async for item in reader.stream(endpoint, worker_id, tail=tail, follow=follow):
                    event = item.event
                    if as_json:
                        line = json.dumps({"type": "log", **event.model_dump(mode="json")})
                    else:
                        mark = "" if event.source == "container" else "[system] "
                        line = f"{event.ts.isoformat(timespec='seconds')} {mark}{event.line}"
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()

        run_interruptibly(stream)


# -- cost ------------------------------------------------------------------------------------------


def cost(
    workdir: Annotated[
        Path,
        typer.Argument(metavar="WORKDIR", help="A render's work directory (default: here)."),
    ] = Path("."),
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Compare a render's estimated cost with what RunPod billed for it.

    Reads the latest render in WORKDIR/manifest.json and RunPod's billing over its time window
    (hourly buckets) for the endpoints of your settings, prints estimated vs billed per endpoint
    and in total, and keeps the result in the manifest (`reconciliation`). Billing cannot tell
    this render from other jobs on the same endpoints in those hours: a bill well above the
    estimate is flagged as other traffic. All Public Endpoints are billed together.

    **Examples**

    ```
    videokit cost out/story
    videokit cost out/story --json | jq .ratio
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.pipeline.interrupts import run_interruptibly
        from videokit.pipeline.manifest import Manifest
        from videokit.rest import RunPodRest
        from videokit.rest.billing import fetch_bills, line_of, reconcile

        path = workdir / "manifest.json"
        manifest = _runpod_manifest(path)
        settings, key, base_url = _rest_access()
        estimates = render_estimates(manifest, settings)
        start, end = _window(manifest)
        lines = sorted({line_of(e.endpoint_id) for e in estimates})

        async def fetch() -> Any:
            async with RunPodRest(key, base_url=base_url) as rest:
                return await fetch_bills(rest, lines, start, end)

        bills = run_interruptibly(fetch)
        run_id = manifest.run.id if manifest.run is not None else None
        result = reconcile(estimates, bills, start, end, now=datetime.now(UTC), run_id=run_id)
        latest = Manifest.load(path)  # as it is now, in case a render wrote it meanwhile
        latest.reconciliation = result
        latest.save(path)
        if as_json:
            print(json.dumps({"type": "cost", **result.model_dump(mode="json")}))
        else:
            _print_cost(result)


def _runpod_manifest(path: Path) -> Manifest:
    from videokit.errors import ConfigError
    from videokit.pipeline.manifest import Manifest

    if not path.is_file():
        raise ConfigError(
            f"{path} not found: not a render's work directory",
            hint="pass the work directory of a render, e.g. `videokit cost out/story`",
        )
    manifest = Manifest.load(path)
    if manifest.run is None or not manifest.run.started:
        raise ConfigError(f"{path} records no render", hint="render the story first")
    if manifest.backend != "runpod":
        raise ConfigError(
            f"the latest render in {path.parent} ran on the '{manifest.backend or '?'}' "
            "backend: RunPod billed nothing for it",
            hint="only renders on RunPod endpoints have a bill",
        )
    return manifest


def _window(manifest: Manifest) -> tuple[datetime, datetime]:
    assert manifest.run is not None
    start = datetime.fromisoformat(manifest.run.started)
    end = datetime.fromisoformat(manifest.updated) if manifest.updated else start
    return start, max(start, end)


def render_estimates(manifest: Manifest, settings: Settings) -> list[EndpointEstimate]:
    """What the latest run's jobs cost per endpoint, by the manifest's attempts.

    A stage counts when it was not taken from the cache and either this run made it
    (``run_id``) or it did not finish (failed, cancelled, still submitted: only the latest
    run leaves those). The warm-up jobs count for the animate endpoint.
    """
    from videokit.errors import ConfigError
    from videokit.pipeline.accounts import run_attempts
    from videokit.rest.billing import EndpointEstimate

    spent = run_attempts(manifest)
    estimates = []
    for stage, attempts in spent.items():
        # Each attempt names its endpoint; older manifests do not, and mean the configured one.
        configured = settings.route(stage)
        fallback = configured[0][1] if configured else None
        by_endpoint: dict[str, list[Any]] = {}
        for attempt in attempts:
            endpoint = attempt.endpoint or fallback
            if endpoint is None:
                raise ConfigError(
                    f"the render ran {stage} jobs, but no {stage} endpoint is configured",
                    hint=f"set VIDEOKIT_{stage.upper()}_ENDPOINT to the endpoint the render used",
                )
            by_endpoint.setdefault(endpoint, []).append(attempt)
        for endpoint, group in by_endpoint.items():
            billed_id = _billed_id(endpoint)
            if billed_id is None:
                continue  # a self-hosted endpoint: RunPod bills nothing for it
            estimates.append(
                EndpointEstimate(
                    endpoint_id=billed_id,
                    stage=stage,
                    jobs=len(group),
                    usd=sum(a.cost_usd for a in group),
                    estimated_usd=sum(a.cost_usd for a in group if a.cost_estimated),
                )
            )
    return estimates


def _billed_id(endpoint: str) -> str | None:
    """The RunPod endpoint id billing knows ``endpoint`` by (None: not on RunPod)."""
    from urllib.parse import urlsplit

    if "://" not in endpoint:
        return endpoint
    parts = urlsplit(endpoint)
    segments = [s for s in parts.path.split("/") if s]
    if parts.hostname == "api.runpod.ai" and len(segments) >= 2:
        return segments[1]  # https://api.runpod.ai/v2/ID
    return None


def _print_cost(result: Reconciliation) -> None:
    from rich.markup import escape

    out = stdout()

    def ratio(value: float | None) -> str:
        return f"{value:.2f}x" if value is not None else "-"

    out.print(
        f"{'billing line':<24} {'stages':<13} {'jobs':>4} {'estimated':>10} {'billed':>10} ratio"
    )
    for line in result.lines:
        flag = "" if line.flag == "ok" else f"  [bold red]{line.flag.replace('_', ' ')}[/]"
        goal = "" if line.within_goal in (None, True) or flag else "  [yellow]outside ±15 %[/]"
        out.print(
            f"{escape(line.billing):<24} {','.join(line.stages):<13} {line.jobs:>4} "
            f"${line.estimated_usd:>9.4f} ${line.billed_usd:>9.4f} {ratio(line.ratio)}{flag}{goal}"
        )
        if line.estimated_part_usd:
            out.print(f"  (of the estimate, ${line.estimated_part_usd:.4f} is videokit's own)")
        for note in line.notes:
            out.print(f"  [yellow]note:[/] {escape(note)}")
    out.print(
        f"{'total':<24} {'':<13} {sum(x.jobs for x in result.lines):>4} "
        f"${result.estimated_usd:>9.4f} ${result.billed_usd:>9.4f} {ratio(result.ratio)}"
        + ("  [bold red](includes flagged lines)[/]" if result.flagged else "")
    )
    for note in result.notes:
        out.print(f"[dim]note: {escape(note)}[/]")
