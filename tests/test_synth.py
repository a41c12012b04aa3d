"""SoundFont synthesis helpers: MIDI writing, procedural pieces, program randomization, FluidSynth."""

from __future__ import annotations

import hashlib
import shutil

import mido
import numpy as np
import pytest

from midisynth import synth
from midisynth.midi import Note, read_midi


def _note(s, e, p, v=100, prog=0, drum=False, inst=0) -> Note:
    return Note(s, e, p, v, prog, drum, inst)


def test_write_midi_round_trip_and_channel_folding(tmp_path):
    notes = [
        _note(0.1 * i, 0.1 * i + 0.5, 60 + i % 12, 90, i % 20, False, i % 20) for i in range(40)
    ]
    notes.append(_note(0.3, 0.4, 36, 100, 0, True, 99))
    played = synth.write_midi(notes, tmp_path / "x.mid", 6.0)
    score = read_midi(tmp_path / "x.mid")
    assert len(score.notes) == len(notes)
    assert len({n.program for n in played if not n.is_drum}) == 15  # 20 programs, 15 channels
    got = sorted((round(n.start, 3), n.pitch, n.program, n.is_drum) for n in score.notes)
    want = sorted((round(n.start, 3), n.pitch, n.program, n.is_drum) for n in played)
    assert got == want
    mf = mido.MidiFile(tmp_path / "x.mid")
    offs = [m for m in mf.tracks[0] if m.type == "control_change" and m.control == 120]
    assert len(offs) == 16  # every used channel is silenced at the end


def test_procedural_piece_is_seeded():
    a = synth.procedural_piece(np.random.default_rng(5), 20)
    b = synth.procedural_piece(np.random.default_rng(5), 20)
    assert a == b and a
    assert all(0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 and n.end > n.start for n in a)


def test_procedural_pieces_are_pinned():
    # The draws of procedural_piece define every procedural piece of a training cache (seeded by
    # the piece's number): a refactor must give the same notes, of the same types, for the same
    # seed, and leave the generator where it left it.
    h = hashlib.sha256()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        for n in synth.procedural_piece(rng, float(rng.uniform(5, 45))):
            h.update(
                f"{float(n.start).hex()} {float(n.end).hex()} {n.pitch} {n.velocity} {n.program} "
                f"{n.is_drum} {n.instrument} {type(n.start).__name__} {type(n.pitch).__name__};".encode()
            )
        h.update(repr(rng.random()).encode())
    assert h.hexdigest() == "e3813f030e7f8a69d0a87465ce32f37c9828cce1ff119bcbdacbd89df12556f1"


def test_randomize_programs_keeps_drums_and_instruments():
    notes = [
        _note(0, 1, 60, inst=0),
        _note(1, 2, 62, inst=0),
        _note(0, 1, 40, inst=1),
        _note(0, 0.1, 36, drum=True, inst=2),
    ]
    out = synth.randomize_programs(notes, np.random.default_rng(1), keep_prob=0.0)
    assert out[0].program == out[1].program and out[3] == notes[3]
    assert synth.randomize_programs(notes, np.random.default_rng(1), keep_prob=1.0) == notes


def _have_synth() -> bool:
    try:
        synth.find_soundfont()
    except FileNotFoundError:
        return False
    return shutil.which("fluidsynth") is not None


@pytest.mark.skipif(not _have_synth(), reason="needs fluidsynth and a GM SoundFont")
def test_fluidsynth_render():
    notes = [_note(0.2, 0.7, 69, 100, 0), _note(0.2, 0.5, 38, 100, 0, True, 1)]
    wave, played = synth.synthesize(notes, 2.0)
    assert wave.shape == (32_000,) and wave.dtype == np.float32
    rms = lambda a, b: float(np.sqrt(np.mean(wave[int(a * 16000) : int(b * 16000)] ** 2)))  # noqa: E731
    assert rms(0.25, 0.6) > 100 * max(rms(0.0, 0.15), 1e-6)
    assert rms(1.6, 2.0) < rms(0.25, 0.6) / 30
    assert played == notes


def test_find_soundfont_errors(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError):
        synth.find_soundfont(tmp_path / "missing.sf2")
    f = tmp_path / "x.sf2"
    f.write_bytes(b"RIFF")
    monkeypatch.setenv("MIDISYNTH_SOUNDFONT", str(f))
    assert synth.find_soundfont() == f
