"""Inversion speed: mel → audio realtime factor of each inverter, the way a render runs it.

    python benchmarks/inverter_speed.py --threads 1 [--inverter weights/vocoder-s] [--seconds 30]

The log-mel of an additive test signal (harmonic notes every 0.25 s; the speed of these inverters
does not depend on the content) is cut into 256-frame segments and fed to ``StreamingInverter`` as
``render`` does (context and crossfade included); RTF = seconds spent / seconds of audio, the
median of ``--repeats`` runs after one warm-up. Griffin-Lim is always measured; each
``--inverter`` (a vocoder folder or name) is added as a row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402


def _test_mel(seconds: float) -> torch.Tensor:
    """Log-mel [frames, 128] of a few seconds of harmonic notes (no FluidSynth needed)."""
    from midisynth import audio

    sr = audio.SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    wave = np.zeros_like(t)
    for start in np.arange(0, seconds, 0.25):
        f = 110 * 2 ** (rng.integers(0, 36) / 12)
        env = np.exp(-(t - start) * 3) * (t >= start)
        wave += sum(0.1 / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3, 4)) * env
    return audio.log_mel(torch.from_numpy(wave.astype(np.float32)))


def _time(inverter, mel: torch.Tensor, repeats: int) -> float:
    from midisynth import audio
    from midisynth.inverter import StreamingInverter

    def once() -> float:
        stream = StreamingInverter(inverter)
        t0 = time.perf_counter()
        for i in range(0, mel.shape[0], audio.SEGMENT_FRAMES):
            stream.push(mel[i : i + audio.SEGMENT_FRAMES])
        stream.flush()
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--inverter", action="append", default=[], help="vocoder folder or name")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from midisynth.inverter import load_inverter

    mel = _test_mel(args.seconds)
    audio_s = mel.shape[0] * 0.02
    rows = []
    for name in ["griffin-lim", *args.inverter]:
        sec = _time(load_inverter(name), mel, args.repeats)
        rows.append([name, f"{audio_s:.1f}", f"{sec:.2f}", f"{sec / audio_s:.4f}"])
    print(machine(args.threads))
    print_table(["inverter", "audio s", "seconds", "RTF"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
