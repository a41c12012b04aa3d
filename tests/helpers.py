"""Small test helpers shared by several test modules (not a test module itself)."""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from midisynth import audio


def make_midi(path: Path, notes: list[tuple[float, float, int]], program: int = 0) -> None:
    """(start s, end s, pitch) on channel 0 at 120 qpm (960 ticks per beat = 1920 ticks/s)."""
    ev = [(0, mido.Message("program_change", channel=0, program=program))]
    for s, e, p in notes:
        ev.append((round(s * 1920), mido.Message("note_on", note=p, velocity=100)))
        ev.append((round(e * 1920), mido.Message("note_off", note=p, velocity=0)))
    track, now = mido.MidiTrack(), 0
    for tick, msg in sorted(ev, key=lambda x: x[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    mf = mido.MidiFile(type=0, ticks_per_beat=960)
    mf.tracks.append(track)
    mf.save(path)


def additive(notes: list[tuple[float, float, int]], seconds: float) -> np.ndarray:
    """A few harmonics per note with a short release: a stand-in for a recording."""
    sr = audio.SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for s, e, p in notes:
        f = 440.0 * 2 ** ((p - 69) / 12)
        env = np.clip((t - s) * 200, 0, 1) * np.clip(1 - (t - e) * 20, 0, 1) * (t >= s)
        out += sum(0.2 / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3)) * env
    return out.astype(np.float32)


SONG = [(0.5, 1.5, 60), (2.0, 6.0, 67), (5.0, 5.6, 72), (7.0, 9.0, 64)]  # crosses the 5.12 s line
