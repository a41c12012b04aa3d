"""The `midisynth` command line: a thin Typer layer over the library.

Everything heavy (torch, the model) is imported inside the commands so that `--help` is instant.
Expected failures (bad MIDI, missing model, bad flag values) print one line and exit non-zero;
tracebacks are for bugs only.

``rendering.py`` holds the render command, ``tools.py`` the others, ``common.py`` what they share;
this module makes the app, registers the commands in the order ``--help`` lists them, and runs it.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .common import Normalize, Sampler, err
from .rendering import render
from .tools import cache, download, evaluate, inspect, invert, models, programs, serve, train

__all__ = ["Normalize", "Sampler", "app", "main"]

app = typer.Typer(
    name="midisynth",
    help="Render MIDI to audio with the spectrogram-diffusion neural synthesizer.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"max_content_width": 100},  # (terminals narrower than this wrap sooner)
    pretty_exceptions_enable=False,
    # Help is plain text: rich markup would read `pip install -e '.[web]'` or `[frames, 128]` as
    # style tags and drop them.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..extras import DIST_NAME

        typer.echo(f"midisynth {__version__} ({DIST_NAME})")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Render MIDI to audio with the spectrogram-diffusion neural synthesizer."""


app.command()(inspect)
app.command()(render)
app.command()(models)
app.command()(programs)
app.command()(download)
app.command()(train)
app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)(cache)  # its options are cache.main's, passed through as they are
app.command()(serve)
app.command()(invert)
app.command()(evaluate)


def _stop_on_signal(signum: int, _frame) -> None:
    # SIGTERM/SIGHUP (timeout, Docker, systemd, Slurm, Ray) unwind like Ctrl-C: every writer's
    # `except (KeyboardInterrupt, SystemExit)` removes its temporaries on the way out.
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    import signal

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _stop_on_signal)
    try:
        app()
    except KeyboardInterrupt:
        err.print("[bold red]error:[/] interrupted")
        sys.exit(130)
