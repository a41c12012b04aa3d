"""Training cache: paired folders, cached pieces, shards (full and compact), the validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import SONG

from midisynth import audio, cache


def test_paired_files_convention(paired):
    pairs = cache.paired_files(paired)
    assert [(m.name, w.name) for m, w in pairs] == [("song.mid", "song.wav")]


def test_cached_piece_matches_audio_and_notes(piece, tmp_path):
    assert piece.mel.dtype == np.float16 and piece.mel.shape[1] == audio.N_MELS
    assert len(piece.mel) == math.ceil(10.0 * audio.FRAME_RATE)
    got = piece.notes[np.argsort(piece.notes[:, 0]), :3]
    np.testing.assert_allclose(got, np.array(SONG, dtype=float), atol=1e-3)
    cache.save_shard(tmp_path / "train-00000.npz", [piece, piece])
    back = cache.load_cache(tmp_path, "train")
    assert [p.name for p in back] == [piece.name] * 2
    np.testing.assert_array_equal(back[1].mel, piece.mel)
    np.testing.assert_array_equal(back[1].notes, piece.notes)


def test_compact_shards_and_cache(piece, tmp_path):
    import dataclasses
    import json

    mel = piece.mel.astype(np.float32)
    back = cache.dequantize_mel(cache.quantize_mel(mel)).astype(np.float32)
    inside = (mel > audio.SCALE_MIN) & (mel < audio.SCALE_MAX)
    step = (audio.SCALE_MAX - audio.SCALE_MIN) / 255
    assert np.abs(back - mel)[inside].max() <= step / 2 + 1e-2  # half a step (+ float16)
    assert back.min() >= audio.SCALE_MIN - 1e-2 and back.max() <= audio.SCALE_MAX + 1e-2
    src = tmp_path / "src"
    src.mkdir()
    pieces = [dataclasses.replace(piece, name=f"paired/{i}.mid") for i in range(40)]
    cache.save_shard(src / "train-00000.npz", pieces)
    cache.save_shard(src / "val-00000.npz", pieces[:2])
    (src / "index.json").write_text(json.dumps({"settings": {"seed": 0}}))
    full = (src / "train-00000.npz").stat().st_size
    info = cache.compact_cache(src, tmp_path / "dst", max_mib=full / 2**20 / 8)
    dst = tmp_path / "dst"
    files = list(dst.glob("*.npz"))
    assert sum(f.stat().st_size for f in files) <= full / 8  # within the budget
    kept = cache.load_cache(dst, "train")
    assert 0 < len(kept) < 40 and info["pieces"] == {"train": len(kept), "val": 2}
    assert info["settings"] == {"seed": 0} and info["compact"]["mel"] == "uint8"
    assert kept[0].mel.dtype == np.float16 and kept[0].mel.shape == piece.mel.shape
    np.testing.assert_array_equal(kept[0].notes, piece.notes)
    with pytest.raises(ValueError, match="no room"):
        cache.compact_cache(src, tmp_path / "tiny", max_mib=1e-4)
    # No budget: every piece is kept, in shards of at most shard_mib each (carried in parts).
    one = (dst / "train-00000.npz").stat().st_size / max(
        1, len(cache.load_shard(dst / "train-00000.npz"))
    )
    info = cache.compact_cache(src, tmp_path / "all", max_mib=None, shard_mib=3.5 * one / 2**20)
    shards = sorted((tmp_path / "all").glob("train-*.npz"))
    assert info["pieces"]["train"] == 40 and len(cache.load_cache(tmp_path / "all")) == 40
    assert len(shards) > 40 // 4 and all(f.stat().st_size <= 3.5 * one for f in shards)


def test_augmented_copies_share_their_originals_split():
    from midisynth.midi import Note

    jobs = [cache.Job(f"src/{i}.mid", "src", midi=f"{i}.mid") for i in range(200)]
    aug = cache.augmented_jobs(jobs, 2, seed=0)
    assert len(aug) == 400 and aug[0].name == "src/0.mid#aug1" and aug[1].name == "src/0.mid#aug2"
    for a in aug:
        assert a.base in {j.name for j in jobs}
        assert cache.is_validation(a.name, 0.1) == cache.is_validation(a.base, 0.1)
        assert a.transpose != 0 and -5 <= a.transpose <= 6 and 0.8 <= a.stretch <= 1.25
    assert aug == cache.augmented_jobs(jobs, 2, seed=0)  # seeded by name: the same every build
    notes = [Note(1.0, 2.0, 60, 100, 0, False, 0), Note(1.0, 1.5, 36, 100, 0, True, 128),
             Note(0.0, 1.0, 125, 90, 0, False, 0)]  # fmt: skip
    out = cache.augment_notes(notes, 4, 1.5)
    assert [(n.start, n.end, n.pitch) for n in out] == [(1.5, 3.0, 64), (1.5, 2.25, 36)]


def test_validation_split_is_stable():
    # Pinned: the split must not change between processes, machines or releases.
    names = [f"pop909/{i:03d}.mid" for i in range(40)]
    assert [n for n in names if cache.is_validation(n, 0.1)] == ["pop909/032.mid"]
    names = [f"pop909/{i:03d}.mid" for i in range(1000)]
    assert 60 < sum(cache.is_validation(n, 0.1) for n in names) < 140


def _fake_piece(job):
    return cache.Piece(job.name, job.source, np.zeros((60, 128), np.float16), np.zeros((0, 6)))


def test_small_corpus_still_gets_a_validation_piece(tmp_path, monkeypatch):
    # Issue 13: `--procedural 20` gave 0 val pieces, and training then failed.
    monkeypatch.setattr(cache, "synthesize_piece", _fake_piece)  # forked workers inherit it
    jobs = [cache.Job(f"procedural/{i:05d}", "procedural") for i in range(20)]
    assert not any(cache.is_validation(j.name, 0.04) for j in jobs)
    stats = cache.build_cache(jobs, tmp_path, workers=1, log=lambda *_: None)
    assert stats.pieces == {"train": 19, "val": 1}
    cache.check_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match="no val"):
        (tmp_path / "val-00000.npz").unlink()
        cache.check_cache(tmp_path)
