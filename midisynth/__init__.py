"""midisynth: render MIDI to audio with the spectrogram-diffusion neural synthesizer.

Public API: :func:`load_model`, :func:`render`, :class:`RenderOptions`. Heavy modules (torch) are
imported lazily so that ``midisynth --help`` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_model", "render", "RenderOptions", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .render import RenderOptions, render
    from .weights import load_model


def __getattr__(name: str) -> Any:
    if name in ("render", "RenderOptions"):
        from . import render as _render

        return getattr(_render, name)
    if name == "load_model":
        from .weights import load_model

        return load_model
    raise AttributeError(f"module 'midisynth' has no attribute {name!r}")
