"""How to install an optional extra, as a command the user can run.

The distribution is ``midisynth-diffusion`` (pyproject ``[project].name``); the import name and
the command stay ``midisynth``. The name ``midisynth`` on PyPI belongs to an unrelated project, so
a hint must never send pip to PyPI for that name: installed from a clone (the README's way,
``pip install -e .``), the hint names that clone's folder; otherwise the distribution's name.
"""

from __future__ import annotations

import shlex
from pathlib import Path

DIST_NAME = "midisynth-diffusion"
CLONE = Path(__file__).resolve().parents[1]  # the repository root, for an install from a clone


def pip_install(extra: str) -> str:
    """The pip command that adds ``extra`` (``web``, ``ray``, ``plot``, ``onnx``, ``eval``…) to
    this installation: ``pip install -e '/path/to/clone[extra]'`` when midisynth runs from a
    clone, else ``pip install 'midisynth-diffusion[extra]'``."""
    if (CLONE / "pyproject.toml").is_file() and (CLONE / "midisynth").is_dir():
        return f"pip install -e {shlex.quote(f'{CLONE}[{extra}]')}"
    return f"pip install {shlex.quote(f'{DIST_NAME}[{extra}]')}"
