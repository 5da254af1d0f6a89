"""The ``videokit`` command line: render, plan, report, serve, deploy, cost, workers, logs...

Quiet on success (a render prints the final video's path on stdout), loud and clear on failure
(one ``error: ...`` message with a hint on stderr, no traceback, a non-zero exit code), ``--json``
for programs. The commands live in :mod:`~videokit.cli.story_commands`,
:mod:`~videokit.cli.report_command`, :mod:`~videokit.cli.service_commands` and
:mod:`~videokit.cli.runpod_commands`; this module builds the ``typer`` app and its entry point.
Nothing heavy is imported here, so ``videokit --help`` and ``--version`` start fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from videokit._version import __version__
from videokit.cli import (
    cache_commands,
    report_command,
    runpod_commands,
    service_commands,
    story_commands,
)
from videokit.cli.output import EXIT_USAGE, stderr
from videokit.cli.signals import interrupt_exit_code, sigterm_as_interrupt

__all__ = ["app", "main"]


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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _plain_flags(self.params)

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
        "videokit report out/story --open         # the film, its scenes and costs, in a browser\n"
        "videokit schema -o story.schema.json     # editor completion for stories\n"
        "```\n\n"
        "Rendering for real: set RUNPOD_API_KEY, VIDEOKIT_EDIT_ENDPOINT and "
        "VIDEOKIT_ANIMATE_ENDPOINT: RunPod's public endpoints need no deployment "
        "(qwen-image-edit-2511 and wan-2-2-i2v-720, plus an S3 bucket: VIDEOKIT_S3_*), or "
        "your own endpoint ids, or URLs of `videokit serve`. "
        "Run any command with --help for its options and examples. Every command takes -q "
        "(errors only) and -v (more detail); NO_COLOR=1 turns colour off."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"videokit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    # The app's help text is Typer(help=...) above; this callback only adds --version.
    return None


_COMMANDS: tuple[Any, ...] = (
    story_commands.render,
    story_commands.validate,
    story_commands.plan,
    report_command.report,
    service_commands.serve,
    service_commands.deploy,
    service_commands.schema,
    runpod_commands.cost,
    runpod_commands.workers,
    runpod_commands.logs,
    cache_commands.cache,
)
for _command in _COMMANDS:
    app.command(cls=_Command)(_command)


def _usage_error(error: typer.TyperException) -> int:
    """typer's usage errors (a misspelt option, a missing argument) in videokit's style:
    ``error: ...`` and a hint, exit code 2."""
    if type(error).__name__ == "NoArgsIsHelpError":
        return EXIT_USAGE  # `videokit` alone: typer has printed the help already
    from rich.markup import escape

    ctx = getattr(error, "ctx", None)
    command = ctx.command_path if ctx is not None else "videokit"
    format_message = getattr(error, "format_message", None)
    message = format_message() if callable(format_message) else str(error)
    err = stderr()
    err.print(f"[bold red]error:[/] {escape(message)}")
    err.print(f"  hint: see `{escape(command)} --help` for the options and examples")
    code = getattr(error, "exit_code", EXIT_USAGE)
    return code if isinstance(code, int) else EXIT_USAGE


def main() -> None:
    """Entry point of the ``videokit`` script. SIGTERM interrupts it like Ctrl-C: jobs are
    cancelled, then it exits with 143 (130 after Ctrl-C)."""
    try:
        # standalone_mode=False: usage errors come here, to be printed like videokit's own.
        with sigterm_as_interrupt():
            code = app(standalone_mode=False, prog_name="videokit")
    except typer.Abort:
        stderr().print("[yellow]interrupted[/]")
        sys.exit(interrupt_exit_code())
    except typer.TyperException as error:
        sys.exit(_usage_error(error))
    except Exception:
        if os.environ.get("VIDEOKIT_DEBUG"):
            raise
        import traceback

        from rich.markup import escape

        err = stderr()
        err.print(
            "[bold red]internal error[/] (a bug in videokit; please report it with the line "
            "below, or run again with VIDEOKIT_DEBUG=1 for the full traceback):"
        )
        err.print(escape(traceback.format_exc().strip().splitlines()[-1]))
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
