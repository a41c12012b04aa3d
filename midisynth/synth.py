"""SoundFont synthesis for training and evaluation references: notes → FluidSynth → audio.

Why FluidSynth and not ``tinysoundfont`` (pip): FluidSynth is the reference SF2 implementation (all
SF2 modulators incl. velocity-to-filter, exclusive classes for hi-hats, GM drum kits), is packaged
by every Linux distribution with permissively licensed General-MIDI SoundFonts (FluidR3_GM and
MuseScore General, both MIT), renders 16 kHz at ~100× real time, and running it as a subprocess gives
a hard timeout. A training-time tool only: nothing at render time needs it.

Also here: General-MIDI program randomization and procedurally generated multi-instrument pieces.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import audio
from .midi import Note

RANDOM_PROGRAMS = np.arange(112)  # GM 0..111: no percussive (112-119) or sound-effect programs
DEBIAN_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
FLUIDSYNTH_GAIN = 0.4  # master gain; float WAV output, so loud passages are not clipped
_TICKS_PER_SECOND = 1920  # written MIDI: 960 ticks per beat at 120 qpm (0.52 ms resolution)


# ---- Synthesis ------------------------------------------------------------------------------------


def find_soundfont(path: str | os.PathLike | None = None) -> Path:
    """The SoundFont to synthesize with: ``path``, else $MIDISYNTH_SOUNDFONT, else the Debian one."""
    for cand in (path, os.environ.get("MIDISYNTH_SOUNDFONT"), DEBIAN_SOUNDFONT):
        if cand and Path(cand).is_file():
            return Path(cand)
        if cand and cand is not DEBIAN_SOUNDFONT:
            raise FileNotFoundError(f"SoundFont not found: {cand}")
    raise FileNotFoundError(
        "no General-MIDI SoundFont: pass one, set MIDISYNTH_SOUNDFONT, or "
        "`apt install fluid-soundfont-gm` (installs /usr/share/sounds/sf2/FluidR3_GM.sf2)"
    )


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError("the fluidsynth program is needed: `apt install fluidsynth`")
    return exe


def assign_channels(notes: Sequence[Note]) -> tuple[list[Note], list[int]]:
    """Give each instrument a MIDI channel; returns (notes as they will sound, channel per note).

    Drums go to channel 9. Pitched instruments (by ``Note.instrument``, largest first) get the 15
    other channels; beyond 15, an instrument shares the channel of its program if there is one,
    else the least-used channel, taking over that channel's program (the returned notes say so).
    """
    free = [c for c in range(16) if c != 9]
    groups: dict[tuple[int, int], list[int]] = {}
    for i, n in enumerate(notes):
        if not n.is_drum:
            groups.setdefault((n.instrument, n.program), []).append(i)
    chan_prog: dict[int, int] = {}
    use: dict[int, int] = {}
    out, chans = list(notes), [9] * len(notes)
    for (_, prog), idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        same = [c for c, p in chan_prog.items() if p == prog]
        if free:
            ch = free.pop(0)
            chan_prog[ch], use[ch] = prog, 0
        else:
            ch = same[0] if same else min(use, key=use.get)
        use[ch] += len(idx)
        for i in idx:
            chans[i] = ch
            if notes[i].program != chan_prog[ch]:
                n = notes[i]
                out[i] = Note(
                    n.start, n.end, n.pitch, n.velocity, chan_prog[ch], False, n.instrument
                )
    return out, chans


def write_midi(notes: Sequence[Note], path: str | os.PathLike, end_time: float) -> list[Note]:
    """Write notes as a format-0 MIDI file (120 qpm) that ends at ``end_time`` seconds.

    Every used channel gets All-Notes-Off and All-Sound-Off at ``end_time``, so no synthesizer can
    ring on past it. Returns the notes as written (programs folded when > 15 instruments).
    """
    import mido

    notes, chans = assign_channels(notes)
    end_tick = max(1, round(end_time * _TICKS_PER_SECOND))
    ev: list[tuple[int, int, mido.Message]] = []  # (tick, order, message); order: off < on
    progs = {c: n.program for n, c in zip(notes, chans, strict=True) if c != 9}
    for c, p in progs.items():
        ev.append((0, 0, mido.Message("program_change", channel=c, program=p)))
    for n, c in zip(notes, chans, strict=True):
        a = min(round(n.start * _TICKS_PER_SECOND), end_tick - 1)
        b = min(max(round(n.end * _TICKS_PER_SECOND), a + 1), end_tick)
        ev.append((a, 2, mido.Message("note_on", channel=c, note=n.pitch, velocity=n.velocity)))
        ev.append((b, 1, mido.Message("note_off", channel=c, note=n.pitch, velocity=0)))
    for c in sorted(set(chans)):
        for cc in (123, 120):  # All Notes Off, All Sound Off
            ev.append((end_tick, 3, mido.Message("control_change", channel=c, control=cc)))
    ev.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500_000, time=0)])
    now = 0
    for tick, _, msg in ev:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mf = mido.MidiFile(type=0, ticks_per_beat=_TICKS_PER_SECOND // 2)
    mf.tracks.append(track)
    mf.save(os.fspath(path))
    return notes


def synthesize(
    notes: Sequence[Note],
    duration: float,
    soundfont: str | os.PathLike | None = None,
    *,
    gain: float = FLUIDSYNTH_GAIN,
    reverb: bool = False,
    timeout: float | None = None,
) -> tuple[np.ndarray, list[Note]]:
    """Render notes with FluidSynth: (mono float32 audio [round(duration·16000)], notes as played).

    Reverb and chorus are off by default (drier targets are easier for a small model). The
    subprocess is killed after ``timeout`` seconds (default 60 + duration).
    """
    import soundfile as sf

    exe, sf2 = find_fluidsynth(), find_soundfont(soundfont)
    n_samples = round(duration * audio.SAMPLE_RATE)
    with tempfile.TemporaryDirectory(prefix="midisynth-synth-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        played = write_midi(notes, mid, duration)
        fx = [] if reverb else ["-R", "0", "-C", "0"]
        cmd = [exe, "-ni", "-q", *fx, "-g", str(gain), "-r", str(audio.SAMPLE_RATE)]
        cmd += ["-O", "float", "-T", "wav", "-F", str(wav), str(sf2), str(mid)]
        subprocess.run(
            cmd,
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout if timeout is not None else 60 + duration,
        )
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if sr != audio.SAMPLE_RATE:  # fluidsynth honours -r; never expected
        mono = audio.resample(torch.from_numpy(mono), sr, audio.SAMPLE_RATE).numpy()
    out = np.zeros(n_samples, np.float32)
    out[: min(n_samples, len(mono))] = mono[:n_samples]
    return out, played


def randomize_programs(
    notes: Sequence[Note], rng: np.random.Generator, keep_prob: float = 0.3
) -> list[Note]:
    """With probability ``keep_prob`` the notes unchanged, else one random program per instrument."""
    if rng.random() < keep_prob:
        return list(notes)
    new: dict[int, int] = {}
    out = []
    for n in notes:
        if n.is_drum:
            out.append(n)
            continue
        p = new.setdefault(n.instrument, int(rng.choice(RANDOM_PROGRAMS)))
        out.append(Note(n.start, n.end, n.pitch, n.velocity, p, False, n.instrument))
    return out


# ---- Procedural pieces ----------------------------------------------------------------------------

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_DRUM_KIT = {"kick": 36, "snare": 38, "hat": 42, "open": 46, "crash": 49, "ride": 51, "tom": 45}


# A part writes one bar: (start s, length s, pitch, velocity) per note, drawing from ``rng`` as it
# goes. Each is a generator, so its draws interleave with nothing else.
NoteSpec = tuple[float, float, int, int]


@dataclass(frozen=True)
class _Harmony:
    """What every part of a piece shares: tempo, length, key and the chord of each bar."""

    beat: float  # seconds per beat
    bars: int  # of four beats
    root: int  # pitch class of the key
    scale: np.ndarray  # the key's 7 pitch classes above the root
    degrees: np.ndarray  # scale degree of each bar's chord root

    def chord(self, bar: int, base: int) -> list[int]:
        """The bar's triad (root, third, fifth) above MIDI pitch ``base``."""
        d = int(self.degrees[bar])
        return [
            base + self.root + int(self.scale[(d + k) % 7]) + 12 * ((d + k) // 7) for k in (0, 2, 4)
        ]


def _harmony(rng: np.random.Generator, seconds: float) -> _Harmony:
    beat = 60.0 / rng.uniform(70, 170)
    n_beats = max(4, int(seconds / beat) // 4 * 4)
    root = int(rng.integers(0, 12))
    scale = np.array(_SCALES[str(rng.choice(list(_SCALES)))])
    degrees = rng.choice(
        [0, 3, 4, 5, 1, 2, 6], size=n_beats // 4 + 1, p=[0.3, 0.15, 0.2, 0.15, 0.1, 0.05, 0.05]
    )
    return _Harmony(beat, n_beats // 4, root, scale, degrees)


def _chords(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    t0, beat = bar * 4 * h.beat, h.beat
    hits = [0, 2] if rng.random() < 0.5 else [0, 1, 2, 3]
    for k in hits:
        for p in h.chord(bar, 48):
            length = beat * rng.uniform(0.5, 1.0) * (4 / len(hits)) / 2
            yield t0 + k * beat, length, p, vel + rng.integers(-10, 10)


def _pad(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    for p in h.chord(bar, 60):
        yield bar * 4 * h.beat, 4 * h.beat * rng.uniform(0.8, 1.0), p, vel


def _arp(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    t0, beat = bar * 4 * h.beat, h.beat
    ps = h.chord(bar, 60)
    for k in range(8):
        length = beat / 2 * rng.uniform(0.6, 1.0)
        yield t0 + k * beat / 2, length, ps[k % 3] + 12 * (k // 6), vel + rng.integers(-15, 15)


def _bass(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    t0, beat = bar * 4 * h.beat, h.beat
    p = h.chord(bar, 36)[0]
    for q in range(4):
        length = beat * rng.uniform(0.4, 0.95)
        yield t0 + q * beat, length, p + (7 if q == 2 and rng.random() < 0.4 else 0), vel


def _melody(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    t0, beat = bar * 4 * h.beat, h.beat
    t = 0.0
    while t < 4:
        dur = float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0]))
        if rng.random() < 0.85:  # else a rest
            deg = int(rng.integers(0, 10))
            p = 60 + h.root + int(h.scale[deg % 7]) + 12 * (deg // 7)
            length = dur * beat * rng.uniform(0.7, 1.0)
            yield t0 + t * beat, length, p, vel + rng.integers(-20, 20)
        t += dur


def _sweep(rng: np.random.Generator, h: _Harmony, bar: int, vel: int) -> Iterator[NoteSpec]:
    """Isolated notes anywhere in the range, each at its own velocity: pitch ↔ spectrum."""
    t0, beat = bar * 4 * h.beat, h.beat
    for q in range(int(rng.integers(1, 5))):
        length = beat * rng.uniform(0.3, 2.0)
        yield t0 + q * beat, length, int(rng.integers(24, 104)), int(rng.integers(20, 127))


# The order of this table is part of the seed → piece mapping (``rng.choice`` draws from it).
_PARTS = {
    "chords": _chords,
    "arp": _arp,
    "bass": _bass,
    "melody": _melody,
    "sweep": _sweep,
    "pad": _pad,
}


def _drums(rng: np.random.Generator, h: _Harmony) -> Iterator[NoteSpec]:
    """A one-bar pattern of 16 steps per drum, repeated, with a crash now and then."""
    pattern = {
        k: rng.random(16) < p
        for k, p in (("kick", 0.3), ("snare", 0.2), ("hat", 0.6), ("tom", 0.05), ("open", 0.05))
    }
    pattern["kick"][0] = True
    for bar in range(h.bars):
        t0 = bar * 4 * h.beat
        if bar % 4 == 0 and rng.random() < 0.5:
            yield t0, 0.2, _DRUM_KIT["crash"], 100
        for k, hits in pattern.items():
            for s in np.flatnonzero(hits):
                yield t0 + s * h.beat / 4, 0.1, _DRUM_KIT[k], int(rng.integers(60, 127))


def _notes(specs: Iterable[NoteSpec], program: int, instrument: int, drum: bool) -> list[Note]:
    """Notes from specs, velocity clipped to 1…127; empty or out-of-range ones dropped."""
    return [
        Note(start, start + length, pitch, int(np.clip(vel, 1, 127)), program, drum, instrument)
        for start, length, pitch, vel in specs
        if 0 <= pitch <= 127 and length > 0
    ]


def procedural_piece(rng: np.random.Generator, seconds: float = 30.0) -> list[Note]:
    """A random multi-instrument piece of about ``seconds`` s: harmony (tempo, key, a chord per
    bar), one to four parts (chords, arpeggio, bass, melody, sweep, pad), each its own instrument
    with a random program and level, and drums in half the pieces (always when no part sounds).

    The sequence of draws from ``rng`` (harmony, parts, drums) defines every procedural piece of a
    cache, which is seeded by the piece's number; ``test_procedural_pieces_are_pinned`` holds it.
    """
    h = _harmony(rng, seconds)
    notes: list[Note] = []
    parts = rng.choice(list(_PARTS), size=rng.integers(1, 5), replace=False)
    for inst, part in enumerate(parts):
        prog = int(rng.choice(RANDOM_PROGRAMS))
        vel = int(rng.integers(50, 120))
        for bar in range(h.bars):
            notes += _notes(_PARTS[str(part)](rng, h, bar, vel), prog, inst, drum=False)
    if rng.random() < 0.5 or not notes:
        notes += _notes(_drums(rng, h), 0, len(parts) + 128, drum=True)
    return notes


def pick_soundfont(name: str, fonts: Sequence[str | None]) -> str | None:
    """One of ``fonts`` for the piece ``name``: stable (a hash of the name), evenly spread."""
    return fonts[int(hashlib.sha1(b"sf:" + name.encode()).hexdigest()[:8], 16) % len(fonts)]
