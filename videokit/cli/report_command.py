"""``videokit report``: (re)write a work dir's ``report.html`` and open it in the browser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from videokit.cli.options import JsonOpt, QuietOpt, VerboseOpt
from videokit.cli.output import configure_logging, errors, warn

__all__ = ["report"]


def report(
    workdir: Annotated[
        Path,
        typer.Argument(metavar="WORKDIR", help="A render's work directory (default: here)."),
    ] = Path("."),
    open_it: Annotated[
        bool,
        typer.Option("--open", help="Open the report in the web browser once it is written."),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Write WORKDIR/report.html again from the work dir, and print its path.

    Every render writes the report beside its film: the film with a timeline drawn to scale
    (seams and crossfades marked; choose a clip to move the film to its first frame), one card per
    scene (first and last frame, the clip, prompts, seed, endpoint and model, cached or
    rendered, attempts, time and cost), cost per scene and stage, and what changed since the
    previous render and why. It is one file that needs no network: media are linked by relative
    paths, so zip the work dir to share it. Run this to open it (`--open`), or to write it for a
    work dir an older videokit rendered (its timeline needs one render with this version: cached
    scenes cost nothing).

    **Examples**

    ```
    videokit report out/story --open
    videokit report                                  # the work dir you are in
    videokit report out/story --json | jq -r .path
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.report import write_report

        path = write_report(workdir)
        opened = _open(path) if open_it else None
        if as_json:
            print(json.dumps({"type": "report", "ok": True, "path": str(path), "opened": opened}))
            return
        print(path)


def _open(path: Path) -> bool:
    """Open ``path`` in the browser (``$BROWSER`` picks one); a warning when none can."""
    import os
    import sys
    import webbrowser

    # A browser started from here inherits stdout: its chatter goes to stderr, so stdout holds
    # only the path (or the JSON line).
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        opened = webbrowser.open(path.as_uri())
    except webbrowser.Error:
        opened = False
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    if not opened:
        warn(f"no web browser could be started: open {path.as_uri()} yourself")
    return opened
