"""midisynth: render MIDI to audio with the spectrogram-diffusion neural synthesizer.

Public API: :func:`load_model`, :func:`render`, :class:`RenderOptions`. Heavy modules (torch) are
imported lazily so that ``midisynth --help`` stays instant.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["load_model", "render", "RenderOptions", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .render import RenderOptions, render
    from .weights import load_model


def __getattr__(name: str) -> Any:
    # The function `render` shares its name with the module `midisynth.render`: import the module
    # by its full name and bind the function over the attribute the import system set. Code inside
    # the package therefore imports names *from* `.render`, never the module object itself.
    if name in ("render", "RenderOptions"):
        mod = importlib.import_module(f"{__name__}.render")
        globals().update(render=mod.render, RenderOptions=mod.RenderOptions)
        return globals()[name]
    if name == "load_model":
        from .weights import load_model

        return load_model
    raise AttributeError(f"module 'midisynth' has no attribute {name!r}")
