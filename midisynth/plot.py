"""Pictures of a render: the log-mel with note onsets marked, over the waveform's envelope.

matplotlib is optional (the ``plot`` extra) and imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import audio
from .extras import pip_install

PLOT_HINT = f"pictures need matplotlib: {pip_install('plot')}"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(PLOT_HINT) from None
    return plt


def check_available() -> None:
    """ImportError with the pip command when matplotlib is missing (call before rendering)."""
    _pyplot()


def plot_render(
    path: str | os.PathLike,
    mel: np.ndarray,
    wave: np.ndarray,
    sample_rate: int,
    onsets: Sequence[float] = (),
    title: str = "",
) -> Path:
    """Write a PNG: log-mel [frames, 128] (time in s, mel bin), onsets (s) as ticks above it, and
    the waveform's envelope (peak per 10 ms) below. Written atomically."""
    plt = _pyplot()
    fig, (ax, env) = plt.subplots(
        2, 1, figsize=(12, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    seconds = len(mel) / audio.FRAME_RATE
    ax.imshow(
        mel.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(0, seconds, 0, mel.shape[1]),
        vmin=audio.LOG_FLOOR,
        vmax=max(float(mel.max()), audio.LOG_FLOOR + 1),
    )
    if len(onsets):
        ax.plot(
            onsets,
            np.full(len(onsets), mel.shape[1] - 3),
            "v",
            color="cyan",
            ms=4,
            label="note onsets",
        )
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("mel bin")
    ax.set_title(title)
    hop = max(1, sample_rate // 100)
    n = len(wave) // hop
    peaks = np.abs(wave[: n * hop]).reshape(n, hop).max(1) if n else np.zeros(0)
    t = np.arange(n) * hop / sample_rate
    env.fill_between(t, -peaks, peaks, color="0.3", lw=0)
    env.set_ylim(-1, 1)
    env.set_ylabel("amplitude")
    env.set_xlabel("time (s)")
    env.set_xlim(0, max(seconds, len(wave) / sample_rate))
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
