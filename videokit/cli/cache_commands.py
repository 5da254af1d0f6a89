"""``videokit cache``: the user's result store, shown and pruned (see videokit.pipeline.store)."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from videokit.cli.options import JsonOpt, QuietOpt, VerboseOpt
from videokit.cli.output import configure_logging, errors, stdout

__all__ = ["cache"]

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9}
_AGES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _size(text: str) -> int:
    from videokit.errors import ConfigError

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match[2].lower() not in _UNITS:
        raise ConfigError(f"--max-size {text!r} is not a size", hint="e.g. 500MB, 20GB, 0")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def _age(text: str) -> float:
    from videokit.errors import ConfigError

    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw]?)\s*", text)
    if match is None:
        raise ConfigError(f"--older-than {text!r} is not an age", hint="e.g. 30d, 12h, 2w")
    return float(match[1]) * _AGES[match[2] or "d"]


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def cache(
    action: Annotated[
        str,
        typer.Argument(metavar="[show|prune]", help="Show the store (default), or prune it."),
    ] = "show",
    older_than: Annotated[
        str | None,
        typer.Option("--older-than", metavar="AGE", help="prune: entries unused this long (30d)."),
    ] = None,
    max_size: Annotated[
        str | None,
        typer.Option(
            "--max-size",
            metavar="SIZE",
            help="prune: then the least recently used until the store is this big (20GB).",
        ),
    ] = None,
    include_used: Annotated[
        bool,
        typer.Option(
            "--include-used",
            help="prune: also entries a work dir still needs (its scene files keep them: a "
            "render of it puts them back without paying).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Show or prune the result store that every story and work dir shares.

    Every result a render paid for is stored once per user (VIDEOKIT_CACHE_DIR or cache_dir in
    videokit.toml; default the user cache dir), so a renamed story, another --out or another
    checkout pays nothing for unchanged scenes. Pruning never deletes what a work dir still
    needs unless --include-used; half-written entries of killed renders are removed.

    **Examples**

    ```
    videokit cache                         # size and entries, by story and by age
    videokit cache prune --older-than 30d
    videokit cache prune --max-size 20GB --json
    ```
    """
    configure_logging(quiet=quiet, verbose=verbose)
    with errors(as_json):
        from videokit.config import Settings
        from videokit.errors import ConfigError
        from videokit.pipeline.cache import CacheStore
        from videokit.pipeline.store import describe, prune, store_root

        settings = Settings.resolve()
        store = CacheStore(store_root(settings.cache_dir, settings.environ))
        if action == "show":
            shown = describe(store)
            if as_json:
                print(json.dumps({"type": "cache", **shown}))
                return
            out = stdout()
            out.print(f"{shown['root']}: {shown['entries']} entries, {_human(shown['bytes'])}")
            for story, row in sorted(shown["by_story"].items()):
                out.print(f"  {story}: {row['entries']} entries, {_human(row['bytes'])}")
            ages = ", ".join(f"{n} {age}" for age, n in shown["by_age"].items() if n)
            if ages:
                out.print(f"  last used: {ages}")
            return
        if action != "prune":
            raise ConfigError(f"unknown action '{action}'", hint="use `videokit cache` or `prune`")
        if older_than is None and max_size is None:
            raise ConfigError(
                "prune needs --older-than AGE or --max-size SIZE",
                hint="e.g. videokit cache prune --older-than 30d",
            )
        report = prune(
            store,
            older_than_s=_age(older_than) if older_than is not None else None,
            max_bytes=_size(max_size) if max_size is not None else None,
            keep_used=not include_used,
        )
        if as_json:
            print(json.dumps({"type": "cache_pruned", **report.__dict__}))
        elif not quiet:
            kept = (
                f"; kept {report.kept_in_use} a work dir still needs (--include-used)"
                if report.kept_in_use
                else ""
            )
            stdout().print(
                f"removed {report.removed} entries ({_human(report.freed_bytes)}){kept}; "
                f"{report.remaining} left ({_human(report.remaining_bytes)})"
            )
