"""Training data: tokens per window, paired-folder cache, examples, CFG dropout, MIDI writing, synth."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import SONG, additive, make_midi

from midisynth import audio, data, synth, tokens
from midisynth.midi import Note, read_midi

CODEC = tokens.Codec(num_velocity_bins=8)


def _note(s, e, p, v=100, prog=0, drum=False, inst=0) -> Note:
    return Note(s, e, p, v, prog, drum, inst)


@pytest.fixture(scope="module")
def paired(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paired")
    (root / "sub").mkdir()
    make_midi(root / "sub" / "song.mid", SONG)
    sf.write(root / "sub" / "song.wav", additive(SONG, 10.0), audio.SAMPLE_RATE)
    make_midi(root / "lonely.mid", SONG)  # no audio beside it: not a pair
    return root


@pytest.fixture(scope="module")
def piece(paired) -> data.Piece:
    [(mid, wav)] = data.paired_files(paired)
    return data.render_job(data.Job("paired/sub/song.mid", "paired", str(mid), str(wav)))


def test_paired_files_convention(paired):
    pairs = data.paired_files(paired)
    assert [(m.name, w.name) for m, w in pairs] == [("song.mid", "song.wav")]


def test_window_tokens_equal_whole_piece_encoding():
    rng = np.random.default_rng(0)
    notes = []
    for i in range(300):  # dense, overlapping same-key notes, several programs, drums
        s = float(rng.uniform(0, 30))
        drum = bool(rng.random() < 0.2)
        notes.append(
            _note(
                s,
                s + float(rng.uniform(0.05, 3)),
                int(rng.integers(40, 52)),
                int(rng.integers(1, 128)),
                int(rng.choice([0, 33, 41])),
                drum,
                i % 3,
            )
        )
    arr = data.notes_to_array(notes)
    for shift in (0.0, 0.34):
        full = tokens.notes_to_segments(
            data.array_to_notes(arr, shift), 31.0 + shift, codec=CODEC, program_map="identity"
        )
        for i, seg in enumerate(full):
            got = data.window_tokens(arr, i, shift=shift, codec=CODEC, program_map="identity")
            np.testing.assert_array_equal(got, seg, err_msg=f"segment {i} shift {shift}")


def test_cached_piece_matches_audio_and_notes(piece, tmp_path):
    assert piece.mel.dtype == np.float16 and piece.mel.shape[1] == audio.N_MELS
    assert len(piece.mel) == math.ceil(10.0 * audio.FRAME_RATE)
    got = piece.notes[np.argsort(piece.notes[:, 0]), :3]
    np.testing.assert_allclose(got, np.array(SONG, dtype=float), atol=1e-3)
    data.save_shard(tmp_path / "train-00000.npz", [piece, piece])
    back = data.load_cache(tmp_path, "train")
    assert [p.name for p in back] == [piece.name] * 2
    np.testing.assert_array_equal(back[1].mel, piece.mel)
    np.testing.assert_array_equal(back[1].notes, piece.notes)


def test_compact_shards_and_cache(piece, tmp_path):
    import dataclasses
    import json

    mel = piece.mel.astype(np.float32)
    back = data.dequantize_mel(data.quantize_mel(mel)).astype(np.float32)
    inside = (mel > audio.SCALE_MIN) & (mel < audio.SCALE_MAX)
    step = (audio.SCALE_MAX - audio.SCALE_MIN) / 255
    assert np.abs(back - mel)[inside].max() <= step / 2 + 1e-2  # half a step (+ float16)
    assert back.min() >= audio.SCALE_MIN - 1e-2 and back.max() <= audio.SCALE_MAX + 1e-2
    src = tmp_path / "src"
    src.mkdir()
    pieces = [dataclasses.replace(piece, name=f"paired/{i}.mid") for i in range(40)]
    data.save_shard(src / "train-00000.npz", pieces)
    data.save_shard(src / "val-00000.npz", pieces[:2])
    (src / "index.json").write_text(json.dumps({"settings": {"seed": 0}}))
    full = (src / "train-00000.npz").stat().st_size
    info = data.compact_cache(src, tmp_path / "dst", max_mib=full / 2**20 / 8)
    dst = tmp_path / "dst"
    files = list(dst.glob("*.npz"))
    assert sum(f.stat().st_size for f in files) <= full / 8  # within the budget
    kept = data.load_cache(dst, "train")
    assert 0 < len(kept) < 40 and info["pieces"] == {"train": len(kept), "val": 2}
    assert info["settings"] == {"seed": 0} and info["compact"]["mel"] == "uint8"
    assert kept[0].mel.dtype == np.float16 and kept[0].mel.shape == piece.mel.shape
    np.testing.assert_array_equal(kept[0].notes, piece.notes)
    with pytest.raises(ValueError, match="no room"):
        data.compact_cache(src, tmp_path / "tiny", max_mib=1e-4)


def _band(pitch: int) -> int:
    """Mel band holding the fundamental of ``pitch``."""
    f = 440.0 * 2 ** ((pitch - 69) / 12)
    mel = 1127 * math.log1p(f / 700) / (1127 * math.log1p(8000 / 700)) * (audio.N_MELS + 1)
    return int(round(mel)) - 1


def test_example_alignment_context_and_shift(piece):
    ex0 = data.make_example(piece, 0, codec=CODEC, program_map="identity")
    assert ex0.target.shape == ex0.context.shape == (256, 128)
    assert not ex0.context_mask.any()  # first segment: no context, as the renderer
    assert ex0.tokens[-1] == tokens.EOS_ID
    # The note G4 (67) sounds 2.0–6.0 s: frames 100..256 of segment 0, strongest near its band.
    b = _band(67)
    assert ex0.target[150, b - 1 : b + 2].max() > ex0.target[50, b - 1 : b + 2].max() + 0.3
    ex1 = data.make_example(piece, 1, codec=CODEC, program_map="identity")
    assert ex1.context_mask.all()
    np.testing.assert_array_equal(ex1.context, ex0.target)  # context = the real previous segment
    # Shift by 40 frames (0.8 s): the piece moves later; segment 1's context holds 216 real frames,
    # left-aligned, and its last valid frame is the last frame before the target.
    k = 40
    sh0 = data.make_example(piece, 0, k, codec=CODEC, program_map="identity")
    sh1 = data.make_example(piece, 1, k, codec=CODEC, program_map="identity")
    np.testing.assert_allclose(sh0.target[k:], ex0.target[:-k])
    np.testing.assert_allclose(sh0.target[:k], -1.0)  # prepended silence
    assert sh1.context_mask.sum() == 256 - k and sh1.context_mask[: 256 - k].all()
    np.testing.assert_array_equal(sh1.context[: 256 - k], sh0.target[k:])
    shifted = data.array_to_notes(piece.notes, k / audio.FRAME_RATE)
    want = tokens.notes_to_segments(shifted, 12.0, codec=CODEC, program_map="identity")
    np.testing.assert_array_equal(sh1.tokens, want[1])
    # Past the end of the piece the target is silence.
    last = data.make_example(piece, 2, 255, codec=CODEC, program_map="identity")
    np.testing.assert_allclose(last.target[-10:], -1.0)


def test_cfg_dropout(piece):
    ex = data.make_example(piece, 1, drop=True)
    assert not ex.tokens.any() and not ex.context_mask.any()
    always = data.ExampleSampler([piece], cfg_drop=1.0)
    never = data.ExampleSampler([piece], cfg_drop=0.0)
    rng = np.random.default_rng(0)
    b = always.batch(rng, 4)
    assert not b.tokens.any() and not b.context_mask.any()
    b = never.batch(rng, 8)
    assert (b.tokens[:, 0] > 0).all() and b.target.shape == (8, 256, 128)
    assert float(b.target.min()) >= -1 and float(b.target.max()) <= 1


def test_sampler_redraws_too_long_segments(piece):
    s = data.ExampleSampler([piece], cfg_drop=0.0, max_tokens=3)
    ex = s.example(np.random.default_rng(0))
    assert len(ex.tokens) <= 3 and s.rejected > 0


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


def test_validation_split_is_stable():
    # Pinned: the split must not change between processes, machines or releases.
    names = [f"pop909/{i:03d}.mid" for i in range(40)]
    assert [n for n in names if data.is_validation(n, 0.1)] == ["pop909/032.mid"]
    names = [f"pop909/{i:03d}.mid" for i in range(1000)]
    assert 60 < sum(data.is_validation(n, 0.1) for n in names) < 140


def _fake_piece(job):
    return data.Piece(job.name, job.source, np.zeros((60, 128), np.float16), np.zeros((0, 6)))


def test_small_corpus_still_gets_a_validation_piece(tmp_path, monkeypatch):
    # Issue 13: `--procedural 20` gave 0 val pieces, and training then failed.
    monkeypatch.setattr(data, "render_job", _fake_piece)  # forked workers inherit it
    jobs = [data.Job(f"procedural/{i:05d}", "procedural") for i in range(20)]
    assert not any(data.is_validation(j.name, 0.04) for j in jobs)
    stats = data.build_cache(jobs, tmp_path, workers=1, log=lambda *_: None)
    assert stats.pieces == {"train": 19, "val": 1}
    data.check_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match="no val"):
        (tmp_path / "val-00000.npz").unlink()
        data.check_cache(tmp_path)


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


def test_length_bucketed_batches(piece):
    s = data.ExampleSampler([piece], cfg_drop=0.5)
    bs = s.batches(np.random.default_rng(0), 3, pool=4)
    assert len(bs) == 4 and all(b.target.shape == (3, 256, 128) for b in bs)
    longest = sorted(int((b.tokens > 0).sum(1).max()) for b in bs)
    shortest = sorted(int((b.tokens > 0).sum(1).min()) for b in bs)
    assert all(hi <= lo2 for hi, lo2 in zip(longest[:-1], shortest[1:], strict=True))


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_stream_is_seeded_and_keeps_going(piece, workers):
    sampler = data.ExampleSampler([piece], cfg_drop=0.0, codec=CODEC, program_map="identity")

    def first(n: int, seed: int) -> list[data.Batch]:
        stream = data.BatchStream(sampler, seed, batch_size=2, buckets=2, workers=workers)
        try:
            it = iter(stream)
            return [next(it) for _ in range(n)]
        finally:
            stream.close()

    a, b, c = first(5, 0), first(5, 0), first(5, 1)  # more batches than one call makes
    assert all(x.target.shape == (2, 256, 128) for x in a)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.tokens, y.tokens) and torch.equal(x.target, y.target)
    assert any(not torch.equal(x.target, y.target) for x, y in zip(a, c, strict=True))
    if workers == 1:  # one thread: exactly the calls of sampler.batches on one generator
        rng = np.random.default_rng(0)
        direct = (
            sampler.batches(rng, 2, 2) + sampler.batches(rng, 2, 2) + sampler.batches(rng, 2, 2)
        )
        for x, y in zip(a, direct[:5], strict=True):
            assert torch.equal(x.target, y.target)
