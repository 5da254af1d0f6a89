"""``videokit serve``, ``deploy`` and ``schema``: the commands around the GPU endpoints.

Their heavy imports (uvicorn, the worker engines, the RunPod SDK) happen inside each command.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from videokit.cli.options import QuietOpt, VerboseOpt
from videokit.cli.output import configure_logging, errors

__all__ = ["deploy", "endpoint_line", "schema", "serve"]


def endpoint_line(worker: str, host: str, port: int) -> str:
    """The setting that points a client at this server, ready to paste into a shell or .env."""
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = socket.gethostname()  # reachable from other machines, unlike the wildcard
    elif ":" in host:
        shown = f"[{host}]"  # an IPv6 address in a URL
    return f"VIDEOKIT_{worker.upper()}_ENDPOINT=http://{shown}:{port}/v2/{worker}"


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
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Serve a worker on your own machine behind RunPod's v2 queue API.

    The same client that drives RunPod endpoints drives this server: point a stage at it with
    its full URL: once it listens, the server prints the exact line to paste, e.g.
    `VIDEOKIT_ANIMATE_ENDPOINT=http://127.0.0.1:8002/v2/animate`. Routes: run, runsync, status,
    stream, cancel, retry, purge-queue, health.

    **Examples**

    ```
    videokit serve animate --port 8002
    VIDEOKIT_SERVE_API_KEY=secret videokit serve edit --host 0.0.0.0 --port 8001
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors():
        from videokit.backends.base import Stage
        from videokit.errors import ConfigError
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

        def ready() -> None:
            # stdout, so `videokit serve edit > endpoint.env &` keeps just the line to paste.
            print(endpoint_line(worker, host, port), flush=True)
            if api_key:
                print(
                    "# clients send this server's key: set VIDEOKIT_SERVE_API_KEY where they run",
                    flush=True,
                )

        run_server(
            make_handler(stage, loaded),
            on_ready=ready,
            host=host,
            port=port,
            concurrency=concurrency,
            api_key=api_key,
            faults=fault_config,
        )


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
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Create or update the RunPod templates and serverless endpoints of both workers.

    Uses RunPod's REST API v2 (https://api.runpod.io/v2; VIDEOKIT_RUNPOD_REST_URL overrides it,
    and only RunPod's own host gets the key). Reads RUNPOD_API_KEY from the environment or `.env`
    (there is no flag: it would end up in shell history). Idempotent: templates and endpoints are
    found by name, and only the fields that differ are PATCHed.
    Prints the endpoint ids and the `.env` lines to render with them.

    **Examples**

    ```
    videokit deploy examples/deploy.yaml --dry-run     # every field it would send
    videokit deploy examples/deploy.yaml >> .env       # create/update, keep the endpoint ids
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors():
        from videokit.config import Settings
        from videokit.deploy import run_deploy
        from videokit.rest import DEFAULT_REST_URL

        environment = Settings.environment()
        key = environment.get("RUNPOD_API_KEY") or None
        # VIDEOKIT_RUNPOD_REST_URL: another REST v2 base (a proxy); it never gets the key.
        base_url = environment.get("VIDEOKIT_RUNPOD_REST_URL") or DEFAULT_REST_URL
        run_deploy(
            spec, dry_run=dry_run, api_key=key, out=sys.stdout, offline=offline, base_url=base_url
        )


def schema(
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write to this file instead of stdout."
        ),
    ] = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
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
    configure_logging(quiet=quiet, verbose=verbose)
    with errors():
        from videokit.story.model import Story

        document = Story.model_json_schema(by_alias=True)
        document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        document["title"] = "videokit story"
        text = json.dumps(document, indent=2)
        if output is None:
            print(text)
        else:
            output.write_text(text + "\n")
