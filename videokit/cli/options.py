"""The options several commands share, declared once so they read the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["BackendOpt", "JsonOpt", "OutOpt", "QuietOpt", "StoryArg", "VerboseOpt"]

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
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only errors (and the result on stdout)."),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "--verbose",
        "-v",
        count=True,
        help="Also print what videokit does (requests, jobs, retries); -vv for debug detail.",
    ),
]
