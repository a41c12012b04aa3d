"""What every `midisynth` command shares: the consoles, one-line failures, the option enums.

Nothing here imports torch (``--help`` must stay instant).
"""

from __future__ import annotations

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
