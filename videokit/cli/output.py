"""How the CLI talks: consoles, one error style, warnings, verbosity and exit codes.

Errors (videokit's own and typer's usage errors alike) print as ``error: ...`` with a
``hint: ...`` and no traceback; ``--json`` adds one ``{"type": "error", ...}`` line on stdout.
Output into a closed pipe (``| head -1``) stops quietly with exit code 141, like any Unix tool
killed by SIGPIPE. Consoles are made when a command runs, so NO_COLOR, COLUMNS and the terminal
are read as they are then.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from videokit.cli.signals import interrupt_exit_code
from videokit.errors import RenderError, StoryError, VideoKitError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "EXIT_BROKEN_PIPE",
    "EXIT_USAGE",
    "configure_logging",
    "errors",
    "fail",
    "stderr",
    "stdout",
    "warn",
]

#: The exit status of a process killed by SIGPIPE (128 + 13), which shells and pipelines expect.
EXIT_BROKEN_PIPE = 141
#: Bad input or configuration, typer's usage errors included.
EXIT_USAGE = 2


def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def warn(message: str) -> None:
    """A warning on stderr, unless ``--quiet`` (see :func:`configure_logging`)."""
    if not _state.quiet:
        stderr().print(f"[yellow]warning:[/] {_escape(message)}")


class _State:
    quiet = False


_state = _State()


class _LogLines(logging.Handler):
    """videokit's own log records, printed like the CLI's other lines (``warning: ...``)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            label = record.levelname.lower()
            colour = {"warning": "yellow", "error": "red"}.get(label, "dim")
            stderr().print(f"[{colour}]{label}:[/] {_escape(record.getMessage())}")
        except Exception:
            self.handleError(record)


def configure_logging(*, quiet: bool = False, verbose: int = 0) -> None:
    """``-q``: errors only. Default: videokit's warnings. ``-v``: also what it does (requests,
    jobs, retries); ``-vv``: debug detail."""
    _state.quiet = quiet
    logger = logging.getLogger("videokit")
    level = (
        logging.ERROR
        if quiet
        else logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose
        else logging.WARNING
    )
    handler = next((h for h in logger.handlers if isinstance(h, _LogLines)), None)
    if handler is None:
        handler = _LogLines()
        logger.addHandler(handler)
    handler.setLevel(level)
    logger.setLevel(min(level, logger.level or logging.WARNING))


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
def errors(as_json: bool = False, *, interrupted: str | None = None) -> Iterator[None]:
    """Print videokit's own errors without a traceback and exit with their exit code.

    ``interrupted`` is what to say after Ctrl-C or SIGTERM (how to resume); the exit code is
    then 130 or 143 (128 plus the signal, see :mod:`videokit.cli.signals`). With ``--json`` a
    failure also ends stdout with one ``{"type": "error", ...}`` object, so a program reading
    the stream learns why it stopped.
    """
    try:
        yield
    except BrokenPipeError:
        _mute_output()
        raise typer.Exit(EXIT_BROKEN_PIPE) from None
    except VideoKitError as exc:
        fail(as_json, exc.exit_code, _error_json(exc), f"[bold red]error:[/] {_escape(str(exc))}")
    except KeyboardInterrupt:
        said = interrupted or "running jobs were cancelled; finished scenes are cached"
        fail(
            as_json,
            interrupt_exit_code(),
            {"error": "KeyboardInterrupt", "message": "interrupted", "hint": interrupted},
            f"[yellow]interrupted[/]: {_escape(said)}",
        )
    except typer.Exit:
        raise
    except Exception as exc:
        if as_json:
            message = f"{type(exc).__name__}: {exc}"
            _json_line({"error": "InternalError", "message": message, "hint": None}, 1)
        raise  # main() reports it as the bug it is


def fail(as_json: bool, code: int, data: dict[str, Any], human: str) -> None:
    """Report a failure (on stderr, and as a JSON line with ``--json``) and exit with ``code``."""
    try:
        if as_json:
            _json_line(data, code)
        stderr().print(human)
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
