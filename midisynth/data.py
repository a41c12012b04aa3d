"""Training examples and batches from a cache (``cache.py``): note tokens, context mel, target mel.

One training example (spec §5.1, §5.4) is one 256-frame target segment on the renderer's grid
(segment i = frames [256·i, 256·i + 256) of the piece):

* ``tokens``: the segment's note tokens (tie section, events, EOS), as ``render`` makes them;
* ``context`` / ``context_mask``: the ≤ 256 frames of *real* audio just before the target, scaled to
  [-1, 1], left-aligned with the mask True on the valid frames (the context encoder numbers
  positions from the last valid frame, so a short context reads as "immediately before"); segment
  0 of a piece gets no context (mask all False), exactly as the first rendered segment;
* ``target``: the segment's log-mel scaled to [-1, 1], padded with silence after the piece ends.

Classifier-free-guidance dropout (probability 0.1) replaces the tokens by PAD and the context mask
by all False. Alignment augmentation: each example shifts the whole piece later by a random number
of frames (prepending silence and moving the notes), so targets see every phase of the music
relative to the segment grid. Log-mels are computed once per piece over the whole audio (by the
cache); because frame k only looks at samples [320k, 320k + 640), a slice of the whole-piece STFT
equals the original's per-segment encoding (segment + ADDITIONAL_FRAMES_FOR_ENCODING following
frames, first 256 kept), and shifting by whole frames is exact.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import audio, tokens
from .cache import Piece, array_to_notes
from .programs import ProgramMap, get_program_map

# ---- Data constants -------------------------------------------------------------------------------
SEG = audio.SEGMENT_FRAMES  # 256 frames per target (and per context)
CFG_DROP_PROB = 0.1  # classifier-free-guidance dropout (spec §5.1)


# ---- Examples ---------------------------------------------------------------------------------------


def window_tokens(
    notes: np.ndarray,
    segment: int,
    *,
    shift: float = 0.0,
    codec: tokens.Codec = tokens.DEFAULT_CODEC,
    program_map: str | ProgramMap = "slakh",
    max_length: int = tokens.MAX_TOKENS,
) -> np.ndarray:
    """Tokens of segment ``segment`` of the piece shifted later by ``shift`` seconds.

    Equal to ``notes_to_segments(all notes shifted, ...)[segment]`` but encodes only the notes that
    can matter: those still sounding at the segment start or starting in it, the latest-ending
    earlier note of each of their (program, pitch) keys (with overlapping same-key notes, its late
    offset switches the key off), and the note holding the piece's last event (segments after it
    keep the reference's tail-tie quirk, as rendering does). Times are not re-based, so 10 ms
    rounding is bit-identical to encoding the whole piece.
    """
    seg_s = tokens.SEGMENT_SECONDS
    start, end = notes[:, 0] + shift, notes[:, 1] + shift
    drum = notes[:, 5] > 0.5
    t0 = segment * seg_s
    if len(notes):
        event_time = np.where(drum, start, end)  # a note's last event (drums have no offset)
        last = int(np.argmax(event_time))
        threshold = min(t0, float(event_time[last])) - 0.02
        keep = (end >= threshold) & (start < t0 + seg_s)
        keep[last] = True
        table = np.asarray(get_program_map(program_map).table)
        key = table[notes[:, 4].astype(np.int64)] * 128 + notes[:, 2].astype(np.int64)
        early = np.flatnonzero(~keep & ~drum & (end < threshold))
        early = early[np.isin(key[early], np.unique(key[keep & ~drum]))]
        if len(early):
            order = early[np.lexsort((end[early], key[early]))]
            keep[order[np.r_[key[order][1:] != key[order][:-1], True]]] = True
        notes = notes[keep]
    segs = tokens.notes_to_segments(
        array_to_notes(notes, shift),
        t0 + seg_s,
        codec=codec,
        program_map=program_map,
        max_length=max_length,
    )
    return segs[segment]


@dataclass
class Example:
    tokens: np.ndarray  # [L] int64, EOS-terminated, unpadded (all PAD under CFG dropout)
    context: np.ndarray  # [256, 128] float32 scaled to [-1, 1]
    context_mask: np.ndarray  # [256] bool, True on the (left-aligned) valid frames
    target: np.ndarray  # [256, 128] float32 scaled to [-1, 1]


def scaled_mel(mel: np.ndarray) -> np.ndarray:
    """Log-mel feature units → float32 clipped to [SCALE_MIN, SCALE_MAX] and mapped to [-1, 1]
    (``audio.scale`` on numpy arrays)."""
    lo, hi = audio.SCALE_MIN, audio.SCALE_MAX
    return (np.clip(mel.astype(np.float32), lo, hi) - lo) / (hi - lo) * 2 - 1


def mel_frames(mel: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Frames [lo, hi) of ``mel`` [F, 128] as float32, silence (LOG_FLOOR) outside it."""
    out = np.full((hi - lo, mel.shape[1]), audio.LOG_FLOOR, np.float32)
    a, b = max(lo, 0), min(hi, len(mel))
    if b > a:
        out[a - lo : b - lo] = mel[a:b]
    return out


def num_segments_shifted(piece: Piece, shift_frames: int) -> int:
    """Segments of ``piece`` shifted later by ``shift_frames`` (at least one)."""
    return max(1, -(-(len(piece.mel) + shift_frames) // SEG))


def make_example(
    piece: Piece,
    segment: int,
    shift_frames: int = 0,
    *,
    codec: tokens.Codec = tokens.DEFAULT_CODEC,
    program_map: str | ProgramMap = "slakh",
    drop: bool = False,
    max_length: int = tokens.MAX_TOKENS,
) -> Example:
    """Example for target segment ``segment`` of ``piece`` shifted later by ``shift_frames``.

    ``drop``: classifier-free-guidance dropout (tokens all PAD, context mask all False).
    """
    k, lo = shift_frames, segment * SEG
    # Shifted frame f is original frame f - k; frames before the piece (f < k) are prepended
    # silence: part of a target, but never counted as real context audio.
    target = scaled_mel(mel_frames(piece.mel, lo - k, lo + SEG - k))
    context = np.full((SEG, piece.mel.shape[1]), scaled_mel(np.zeros(1))[0], np.float32)
    mask = np.zeros(SEG, bool)
    real_lo = max(lo - SEG, k)
    n_valid = lo - real_lo if segment > 0 else 0
    if n_valid > 0 and not drop:
        context[:n_valid] = scaled_mel(mel_frames(piece.mel, real_lo - k, lo - k))
        mask[:n_valid] = True
    if drop:
        ids = np.zeros(1, np.int64)
    else:
        ids = window_tokens(
            piece.notes,
            segment,
            shift=k / audio.FRAME_RATE,
            codec=codec,
            program_map=program_map,
            max_length=max_length,
        )
    return Example(ids, context, mask, target)


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, L) int64, PAD-padded to the longest row
    context: torch.Tensor  # (B, 256, 128) float32
    context_mask: torch.Tensor  # (B, 256) bool
    target: torch.Tensor  # (B, 256, 128) float32

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            *(t.to(device) for t in (self.tokens, self.context, self.context_mask, self.target))
        )


def collate(examples: Sequence[Example]) -> Batch:
    ids = tokens.pad_segments([e.tokens for e in examples], length=None)
    return Batch(
        torch.from_numpy(ids),
        torch.from_numpy(np.stack([e.context for e in examples])),
        torch.from_numpy(np.stack([e.context_mask for e in examples])),
        torch.from_numpy(np.stack([e.target for e in examples])),
    )


class ExampleSampler:
    """Random training examples from cached pieces: every segment of the corpus equally likely.

    Each draw: a piece (∝ its segments), a shift of 0..255 frames, a segment of the shifted piece,
    CFG dropout with ``cfg_drop``. Segments needing more than ``max_tokens`` tokens are redrawn
    (their audio would hold notes the cut tokens do not), counted in ``rejected``.
    """

    def __init__(
        self,
        pieces: Sequence[Piece],
        *,
        codec: tokens.Codec = tokens.DEFAULT_CODEC,
        program_map: str | ProgramMap = "slakh",
        cfg_drop: float = CFG_DROP_PROB,
        max_tokens: int = tokens.MAX_TOKENS,
        shift: bool = True,
    ) -> None:
        if not pieces:
            raise ValueError("no pieces to sample from")
        self.pieces = list(pieces)
        self.codec, self.program_map = codec, program_map
        self.cfg_drop, self.max_tokens, self.shift = cfg_drop, max_tokens, shift
        w = np.array([num_segments_shifted(p, SEG // 2) for p in self.pieces], np.float64)
        self.weights = w / w.sum()
        self.rejected = 0

    def example(self, rng: np.random.Generator) -> Example:
        with warnings.catch_warnings():
            # Segments over 2048 tokens are cut (and warned about) by the tokenizer; they are
            # over max_tokens too and get redrawn.
            warnings.simplefilter("ignore", tokens.TokenOverflowWarning)
            return self._example(rng)

    def _example(self, rng: np.random.Generator) -> Example:
        for _ in range(20):
            piece = self.pieces[int(rng.choice(len(self.pieces), p=self.weights))]
            k = int(rng.integers(0, SEG)) if self.shift else 0
            seg = int(rng.integers(0, num_segments_shifted(piece, k)))
            drop = bool(rng.random() < self.cfg_drop)
            ex = make_example(
                piece,
                seg,
                k,
                codec=self.codec,
                program_map=self.program_map,
                drop=drop,
            )
            if len(ex.tokens) <= self.max_tokens:
                return ex
            self.rejected += 1
        ex.tokens = np.concatenate([ex.tokens[: self.max_tokens - 1], [tokens.EOS_ID]])
        return ex

    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        return collate([self.example(rng) for _ in range(size)])

    def batches(self, rng: np.random.Generator, size: int, pool: int = 4) -> list[Batch]:
        """``pool`` batches from ``pool·size`` examples grouped by token count (little padding:
        the notes encoder runs over the longest row of a batch), in random order."""
        exs = sorted((self.example(rng) for _ in range(size * pool)), key=lambda e: len(e.tokens))
        groups = [exs[i : i + size] for i in range(0, len(exs), size)]
        return [collate(groups[i]) for i in rng.permutation(len(groups))]


_WORKER_SAMPLER: ExampleSampler | None = None  # set in each BatchStream worker process


def _init_worker(sampler: ExampleSampler) -> None:
    global _WORKER_SAMPLER
    torch.set_num_threads(1)  # as DataLoader workers: forked OpenMP pools must stay unused
    _WORKER_SAMPLER = sampler


def _worker_batches(seed: tuple[int, int], size: int, pool: int) -> tuple[list[Batch], int]:
    sampler = _WORKER_SAMPLER
    assert sampler is not None
    before = sampler.rejected
    out = sampler.batches(np.random.default_rng(seed), size, pool)
    return out, sampler.rejected - before


class BatchStream:
    """Endless training batches, prepared ahead of the model.

    ``workers`` ≤ 1: one background thread drawing from a single generator seeded with ``seed``
    (the stream of ``sampler.batches(rng, …)`` calls in order). ``workers`` > 1: that many forked
    processes, call k seeded with (seed, k) — for a GPU, which one Python thread cannot keep fed.
    Iterate for batches; ``rejected`` counts the redrawn too-long examples; ``close()`` at the end.
    Any sampler with ``batches(rng, size, pool) -> list`` and ``rejected`` works (FrameNet's too).
    """

    def __init__(
        self,
        sampler: ExampleSampler,
        seed: int,
        batch_size: int,
        buckets: int = 4,
        workers: int = 1,
    ) -> None:
        import multiprocessing
        from collections import deque
        from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor

        self.sampler, self.rejected, self._calls = sampler, 0, 0
        self._args = (batch_size, buckets)
        self._pool: ThreadPoolExecutor | ProcessPoolExecutor
        if workers <= 1:
            self._pool, self._rng = ThreadPoolExecutor(max_workers=1), np.random.default_rng(seed)
        else:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(sampler,),
            )
        self._seed, self._workers = seed, workers
        self._futures: deque[Future] = deque(self._submit() for _ in range(max(2, 2 * workers)))

    def _submit(self) -> Any:
        self._calls += 1
        if self._workers <= 1:
            return self._pool.submit(self.sampler.batches, self._rng, *self._args)
        return self._pool.submit(_worker_batches, (self._seed, self._calls), *self._args)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            done = self._futures.popleft()
            self._futures.append(self._submit())
            if self._workers <= 1:
                batches = done.result()
                self.rejected = self.sampler.rejected
            else:
                batches, rejected = done.result()
                self.rejected += rejected
            yield from batches

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def fixed_examples(
    pieces: Sequence[Piece], n: int, seed: int = 1234, **sampler_args
) -> list[Example]:
    """A deterministic set of ``n`` examples (no CFG dropout), e.g. for validation."""
    sampler = ExampleSampler(pieces, cfg_drop=0.0, **sampler_args)
    rng = np.random.default_rng(seed)
    return [sampler.example(rng) for _ in range(n)]
