"""What every `midisynth` command shares: the consoles, one-line failures, the option enums.

Nothing here imports torch (``--help`` must stay instant).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from enum import Enum
from typing import NoReturn

import typer
from rich.console import Console

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
stdout = out  # for commands whose own `out` parameter hides the console

# Help of every --model option (weights.DEFAULT_MODEL, not imported: it would import torch).
MODEL_HELP = (
    "Model name (`midisynth models`) or folder. Default: frame-s, bundled, offline "
    "($MIDISYNTH_MODEL sets another); `official` = the released 410 M model (download)."
)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit."""
    from rich.markup import escape

    # escape: messages quote pip commands such as `pip install -e '.[eval]'`, which rich
    # would otherwise read as markup and drop.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def make_folder(folder, quiet: bool = False) -> None:
    """Create a missing output folder (and its parents), saying so unless ``quiet``."""
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        if not quiet:
            from rich.markup import escape

            err.print(f"created folder {escape(str(folder))}", soft_wrap=True)


def fail_on(e: BaseException) -> NoReturn:
    """Exit with the first line of an expected exception (its type name if it has no message)."""
    fail(str(e).splitlines()[0] if str(e) else type(e).__name__)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input, not our bugs (imported lazily)."""
    from ..inverter import InverterError
    from ..midi import MidiError
    from ..weights import ModelError

    return (MidiError, ModelError, InverterError, ValueError, OSError)


class Sampler(str, Enum):  # = diffusion.SAMPLERS (kept literal: --help must not import torch)
    ddpm = "ddpm"
    ddpm_cosine = "ddpm-cosine"
    ddim = "ddim"
    ddim_cosine = "ddim-cosine"
    dpmpp_2m = "dpmpp-2m"
    dpmpp_2m_cosine = "dpmpp-2m-cosine"


class Normalize(str, Enum):
    none = "none"
    peak = "peak"
    loudness = "loudness"


_UNITS = {"": 1.0, "s": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str = "--max-duration") -> float | None:
    """'90s', '10min', '6h', '2d' or plain seconds → seconds; '0' or 'none' → None (no limit).
    ValueError (one line, naming ``option``) for anything else."""
    import re

    value = text.strip().lower()
    if value in ("0", "none"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)", value)
    if m is None or m[2] not in _UNITS or float(m[1]) <= 0:
        raise ValueError(
            f"{option} must look like 90s, 10min, 6h or 2d (0 = no limit), got {text!r}"
        )
    return float(m[1]) * _UNITS[m[2]]


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Within: midisynth's own warnings (e.g. tokens.TokenOverflowWarning) print as one
    ``warning: ...`` line, not Python's two lines with a source path."""
    import warnings

    from rich.markup import escape

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.startswith("midisynth"):
            err.print(f"warning: {escape(str(message))}", soft_wrap=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
