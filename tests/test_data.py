"""Training examples from cached pieces: tokens per window, alignment and shift, CFG dropout, batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from midisynth import audio, cache, data, tokens
from midisynth.midi import Note

CODEC = tokens.Codec(num_velocity_bins=8)


def _note(s, e, p, v=100, prog=0, drum=False, inst=0) -> Note:
    return Note(s, e, p, v, prog, drum, inst)


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
    arr = cache.notes_to_array(notes)
    for shift in (0.0, 0.34):
        full = tokens.notes_to_segments(
            cache.array_to_notes(arr, shift), 31.0 + shift, codec=CODEC, program_map="identity"
        )
        for i, seg in enumerate(full):
            got = data.window_tokens(arr, i, shift=shift, codec=CODEC, program_map="identity")
            np.testing.assert_array_equal(got, seg, err_msg=f"segment {i} shift {shift}")


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
    shifted = cache.array_to_notes(piece.notes, k / audio.FRAME_RATE)
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
