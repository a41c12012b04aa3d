"""What a midisynth model folder is made of, below everything that reads or writes one.

The format's name and config file, ``ModelError`` (the one-line error of every model problem), the
sha256 of a weight file, a JSON file read as a ModelError, the strict key/shape check of a state
dict, the folder of bundled weights and the cache folder for converted models. ``weights.py`` (the
registry, ``load_model``), ``official.py`` (the diffusers layout it converts) and ``inverter.py``
(which finds the bundled vocoder) build on these, so none imports another for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMAT = "midisynth-1"
CONFIG_FILE = "config.json"
# The bundled folders (models, the trained vocoder): a clone's weights/, beside the package.
BUNDLED_DIR = Path(__file__).resolve().parents[1] / "weights"


class ModelError(RuntimeError):
    """A model that cannot be found, downloaded or loaded; the message is one line for users."""


def cache_dir() -> Path:
    """Where converted models are kept (MIDISYNTH_CACHE, else ~/.cache/midisynth)."""
    env = os.environ.get("MIDISYNTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "midisynth"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """Strict key and shape check, with a one-line summary of what differs."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        raise ModelError(f"{where}: weights do not match the model: {'; '.join(parts)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(
                f"{where}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file's contents; a missing or unreadable file is a one-line ModelError."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: file missing") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable JSON ({e})") from None
