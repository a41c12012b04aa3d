"""MT3 note codec: notes → per-segment token ids for the notes encoder (spec §3).

The piece is cut into segments of 256 spectrogram frames (5.12 s). Each segment's tokens are

    [tie section]  [events]  EOS

* tie section: the notes already sounding at the segment start, as ``program p, pitch n`` pairs
  sorted by (program, pitch), closed by a ``tie`` token;
* events, in time order: a pitched onset/offset is ``program p, velocity v, pitch n`` (velocity
  bin 0 = offset), a drum onset is ``velocity v, drum n`` (drums have no offsets and are never
  tied); before the first event of each new 10 ms step comes one ``shift t`` whose value is the
  *absolute* number of steps since the segment start;
* a program or velocity token equal to the last one emitted in the segment is left out.

Token id = codec index + 3 (PAD 0, EOS 1, UNK 2). Everything here is pure numpy and reproduces
diffusers' ``MidiProcessor`` (note-seq + MT3 code) token for token on real files (2,706 of 2,706
in the test corpus). Two departures, both where the reference breaks: segments too long for the
encoder are cut (the reference crashes), and segments starting after the last note event get
their true tie section (the reference repeats a stale one; ``reference_tail_ties=True`` keeps it).
"""

from __future__ import annotations

import bisect
import functools
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from .programs import DEFAULT_PROGRAM_MAP, ProgramMap, get_program_map

if TYPE_CHECKING:  # pragma: no cover
    from .midi import Note

__all__ = [
    "PAD_ID",
    "EOS_ID",
    "UNK_ID",
    "MAX_TOKENS",
    "SEGMENT_FRAMES",
    "SEGMENT_SECONDS",
    "Codec",
    "DEFAULT_CODEC",
    "SegmentInfo",
    "TokenOverflowWarning",
    "notes_to_segments",
    "iter_segments",
    "count_segments",
    "segment_info",
    "pad_segments",
    "num_segments",
    "velocity_to_bin",
]

# ---- Special ids and vocabulary layout (spec §3.1, §3.7) -----------------------------------------
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
NUM_SPECIAL_TOKENS = 3  # codec index i becomes token id i + 3
NUM_EXTRA_IDS = 100  # T5/seqio sentinel ids appended to the vocabulary (never produced)
VOCAB_MULTIPLE = 128  # embedding rows are rounded up to a multiple of this
MAX_TOKENS = 2048  # notes-encoder input length (rows of its position table), EOS included
MAX_VELOCITY = 127

# ---- Framing the segmentation is defined on. Same values as midisynth.audio (which imports torch,
# so they are repeated here; a test checks they agree). -------------------------------------------
SAMPLE_RATE = 16_000  # Hz
HOP = 320  # samples per spectrogram frame
FRAME_RATE = SAMPLE_RATE // HOP  # 50 frames per second
SEGMENT_FRAMES = 256  # frames per segment
SEGMENT_SECONDS = SEGMENT_FRAMES / FRAME_RATE  # 5.12 s

PROGRAM_GRANULARITIES = ("full", "midi_class", "flat")


@dataclass(frozen=True)
class Codec:
    """The event vocabulary (MT3 ``Codec`` + special ids). Defaults are the released model's.

    Event types in codec order, each a contiguous block of ids: shift (0..max_shift_steps),
    pitch (0..127), velocity (0..num_velocity_bins), tie (0), program (0..127), drum (0..127).
    """

    steps_per_second: int = 100  # time resolution of shifts (10 ms)
    max_shift_seconds: int = 10  # largest value of one shift token
    num_velocity_bins: int = 1  # 1: every onset is "on" (MIDI velocity discarded)
    program_granularity: str = "full"  # "full": as is; "midi_class": 8·(p//8); "flat": no programs

    def __post_init__(self) -> None:
        if self.program_granularity not in PROGRAM_GRANULARITIES:
            raise ValueError(
                f"program_granularity must be one of {PROGRAM_GRANULARITIES}, "
                f"got {self.program_granularity!r}"
            )
        if min(self.steps_per_second, self.max_shift_seconds, self.num_velocity_bins) < 1:
            raise ValueError(
                "steps_per_second, max_shift_seconds and num_velocity_bins must be ≥ 1"
            )

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Codec:
        """A codec from a model's config.json ``codec`` entry (missing keys keep the defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in settings.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        """The settings as a config.json ``codec`` entry (inverse of ``from_dict``; keys in the
        order saved models have always had them)."""
        return {
            "num_velocity_bins": self.num_velocity_bins,
            "steps_per_second": self.steps_per_second,
            "max_shift_seconds": self.max_shift_seconds,
            "program_granularity": self.program_granularity,
        }

    @property
    def max_shift_steps(self) -> int:
        return self.steps_per_second * self.max_shift_seconds

    @functools.cached_property
    def event_ranges(self) -> dict[str, tuple[int, int]]:
        """Event type → (min value, max value), in codec order."""
        return {
            "shift": (0, self.max_shift_steps),
            "pitch": (0, 127),
            "velocity": (0, self.num_velocity_bins),
            "tie": (0, 0),
            "program": (0, 127),
            "drum": (0, 127),
        }

    @functools.cached_property
    def first_id(self) -> dict[str, int]:
        """Event type → token id of its smallest value (e.g. ``first_id["pitch"] == 1004``)."""
        out, next_id = {}, NUM_SPECIAL_TOKENS
        for kind, (lo, hi) in self.event_ranges.items():
            out[kind] = next_id
            next_id += hi - lo + 1
        return out

    @property
    def num_classes(self) -> int:
        """Number of codec events (1388 for the default codec)."""
        return sum(hi - lo + 1 for lo, hi in self.event_ranges.values())

    @property
    def vocab_size(self) -> int:
        """Embedding rows: special + events + extra ids, rounded up to 128 (1536 by default)."""
        n = NUM_SPECIAL_TOKENS + self.num_classes + NUM_EXTRA_IDS
        return -(-n // VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def token_id(self, kind: str, value: int) -> int:
        """Token id of one event, e.g. ``token_id("program", 41) == 1176``."""
        lo, hi = self.event_ranges[kind]
        if not lo <= value <= hi:
            raise ValueError(f"{kind} value {value} outside [{lo}, {hi}]")
        return self.first_id[kind] + value - lo

    def decode(self, token_id: int) -> tuple[str, int]:
        """Inverse of :meth:`token_id`; special ids decode to ("pad" | "eos" | "unk", 0)."""
        if 0 <= token_id < NUM_SPECIAL_TOKENS:
            return ("pad", "eos", "unk")[token_id], 0
        for kind, (lo, hi) in self.event_ranges.items():
            offset = token_id - self.first_id[kind]
            if 0 <= offset <= hi - lo:
                return kind, lo + offset
        raise ValueError(f"token id {token_id} is not in the codec")

    def describe(self, ids: Sequence[int]) -> list[str]:
        """Readable form of a token sequence, e.g. ``["tie", "shift 87", "program 0", ...]``."""
        return [
            k if k in ("pad", "eos", "unk", "tie") else f"{k} {v}" for k, v in map(self.decode, ids)
        ]


DEFAULT_CODEC = Codec()


def velocity_to_bin(velocity: int | np.ndarray, num_bins: int) -> int | np.ndarray:
    """MT3 velocity bin: 0 for velocity 0 (note-off), else ceil(num_bins · velocity / 127)."""
    return -(-(num_bins * np.asarray(velocity)) // MAX_VELOCITY)  # exact integer ceil


def num_segments(total_time: float) -> int:
    """Segments covering ``total_time`` seconds, framed like the reference (one extra frame)."""
    n_frames = int(total_time * SAMPLE_RATE) // HOP + 1  # audio padded to a whole frame, always +1
    return -(-n_frames // SEGMENT_FRAMES)


def count_segments(notes: Sequence[Note], total_time: float) -> int:
    """How many segments ``notes_to_segments`` / ``iter_segments`` make of a piece."""
    return num_segments(_piece_length(notes, total_time))


def _piece_length(notes: Sequence[Note], total_time: float) -> float:
    # A note-seq total_time never ends before the last note; one passed in by hand might.
    return max(total_time, max((x.end for x in notes), default=0.0))


# --------------------------------------------------------------------------------------------
# Timed note events


@dataclass(frozen=True)
class _Events:
    """Note onsets and offsets in encoding order (all arrays [E]).

    Sorted by time in seconds (not steps: two events in one 10 ms step keep their exact order); at
    equal times offsets come before onsets, then by (is_drum, program, pitch), then by note order:
    exactly the reference's stable sort.
    """

    step: np.ndarray  # int64, round(time · steps_per_second), ≥ 0
    pitch: np.ndarray  # int64
    program: np.ndarray  # int64, after the program map
    is_drum: np.ndarray  # bool
    vbin: np.ndarray  # int64 velocity bin, 0 for offsets
    onset_step: np.ndarray  # int64 step of the event's note onset (for dropping whole notes)


def _note_events(notes: Sequence[Note], codec: Codec, program_map: ProgramMap) -> _Events:
    """Turn notes into sorted onset/offset events (spec §3.3)."""
    n = len(notes)
    start = np.fromiter((x.start for x in notes), np.float64, n)
    end = np.fromiter((x.end for x in notes), np.float64, n)
    pitch = np.fromiter((x.pitch for x in notes), np.int64, n)
    velocity = np.fromiter((x.velocity for x in notes), np.int64, n)
    is_drum = np.fromiter((x.is_drum for x in notes), np.bool_, n)
    program = np.fromiter((x.program for x in notes), np.int64, n)
    for name, values, hi in (("pitch", pitch, 127), ("program", program, 127)):
        if n and not (values.min() >= 0 and values.max() <= hi):
            raise ValueError(f"note {name} outside 0..{hi}")
    if n and not (velocity.min() >= 0 and velocity.max() <= MAX_VELOCITY):
        raise ValueError("note velocity outside 0..127")
    # The model's program mapping applies to pitched notes only; drums keep their program.
    program = np.where(is_drum, program, np.asarray(program_map.table, np.int64)[program])

    # Notes in (is_drum, program, pitch) order (lexsort is stable: equal keys keep note order),
    # then the event list [offsets of pitched notes] + [onsets of all notes], stably sorted by time.
    order = np.lexsort((pitch, program, is_drum))
    pitched = order[~is_drum[order]]
    note = np.concatenate([pitched, order])
    is_onset = np.arange(len(note)) >= len(pitched)
    time = np.where(is_onset, start[note], end[note])
    by_time = np.argsort(time, kind="stable")
    note, is_onset, time = note[by_time], is_onset[by_time], time[by_time]

    sps = codec.steps_per_second
    # np.rint rounds half to even, like Python's round() in the reference.
    step = np.maximum(np.rint(time * sps), 0).astype(np.int64)
    onset_step = np.maximum(np.rint(start[note] * sps), 0).astype(np.int64)
    vbin = np.where(is_onset, velocity_to_bin(velocity[note], codec.num_velocity_bins), 0)
    return _Events(step, pitch[note], program[note], is_drum[note], vbin, onset_step)


# --------------------------------------------------------------------------------------------
# One segment


class _SegmentEncoder:
    """Run-length encodes one segment: tie section + events → token ids (without EOS)."""

    def __init__(self, codec: Codec) -> None:
        self.ids = codec.first_id
        self.max_shift = codec.max_shift_steps
        # Program token value per program, or -1 where the granularity drops program tokens.
        if codec.program_granularity == "full":
            self.program_token = list(range(128))
        elif codec.program_granularity == "midi_class":
            self.program_token = [8 * (p // 8) for p in range(128)]
        else:
            self.program_token = [-1] * 128

    def __call__(self, tie: Sequence[tuple[int, int]], events: Sequence[tuple]) -> list[int]:
        """Token ids for one segment.

        Args:
            tie: (program, pitch) of the notes sounding at the segment start, sorted.
            events: (t, pitch, program, is_drum, vbin) per event in order; t = steps since the
                segment start.
        """
        first = self.ids
        out: list[int] = []
        program_state = velocity_state = -1  # "none": the first program/velocity is always written

        def program(p: int) -> None:
            nonlocal program_state
            token = self.program_token[p]
            if token >= 0 and token != program_state:
                out.append(first["program"] + token)
                program_state = token

        for p, pitch in tie:
            program(p)
            out.append(first["pitch"] + pitch)
        out.append(first["tie"])

        t_last = 0
        for t, pitch, p, is_drum, vbin in events:
            if t > t_last:  # one absolute-time shift (split if > max_shift, as the reference)
                remaining = t
                while remaining > 0:
                    out.append(first["shift"] + min(remaining, self.max_shift))
                    remaining -= self.max_shift
                t_last = t
            if not is_drum:
                program(p)
            if vbin != velocity_state:
                out.append(first["velocity"] + vbin)
                velocity_state = vbin
            out.append(first["drum" if is_drum else "pitch"] + pitch)
        return out


def _largest_fitting(n: int, fits: Callable[[int], bool]) -> int:
    """Largest i in 0..n with ``fits(i)`` for a monotone predicate (True…True False…); -1 if none."""
    lo, hi = -1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------------------------
# Whole piece


@dataclass(frozen=True)
class SegmentInfo:
    """What one segment holds, for ``midisynth inspect``."""

    index: int
    start_time: float  # seconds; the segment covers [start_time, start_time + 5.12)
    num_tokens: int  # token ids incl. EOS, as encoded (≤ max_length)
    num_tokens_needed: int  # before any cut; > num_tokens only for a too-long segment
    num_tied: int  # notes sounding at the segment start (tie section)
    num_onsets: int  # note onsets encoded in this segment (pitched + drums)
    num_dropped_onsets: int  # onsets left out because the segment was too long


class TokenOverflowWarning(UserWarning):
    """Some segments needed more tokens than the notes encoder takes and were cut."""


def _encode(
    notes: Sequence[Note],
    total_time: float,
    codec: Codec,
    program_map: str | ProgramMap,
    max_length: int,
    reference_tail_ties: bool,
) -> Iterator[tuple[np.ndarray, SegmentInfo]]:
    """(token ids, summary) of each segment in turn, each made when asked for: the state carried
    from one segment to the next is the notes sounding, so memory does not grow with the length."""
    ev = _note_events(notes, codec, get_program_map(program_map))
    encode = _SegmentEncoder(codec)
    budget = max_length - 1  # room for EOS
    sps = codec.steps_per_second

    n_seg = num_segments(_piece_length(notes, total_time))
    steps = ev.step.tolist()
    last_step = steps[-1] if steps else 0

    columns = (ev.step, ev.pitch, ev.program, ev.is_drum, ev.vbin)
    rows = list(zip(*(c.tolist() for c in columns), strict=True))  # one tuple per event
    onset_steps = ev.onset_step.tolist()
    active: dict[tuple[int, int], int] = {}  # (program, pitch) → velocity bin of its last event
    applied = 0  # events folded into `active` so far
    # First step of segment k = first step of frame 256k (floor, as the reference's frame filling).
    seg_step = 0
    lo = bisect.bisect_left(steps, seg_step)  # first event of segment k
    for k in range(n_seg):
        # Events of segment k: [lo, hi); the last segment runs to the end.
        next_step = (k + 1) * SEGMENT_FRAMES * sps // FRAME_RATE
        hi = bisect.bisect_left(steps, next_step, lo=lo) if k + 1 < n_seg else len(steps)
        # State at the segment start = all events at earlier steps. The reference stops updating
        # its state index once it is past the last event, so there segments starting after the
        # last event step repeat the state from *before* that step.
        boundary = min(seg_step, last_step) if reference_tail_ties else seg_step
        upto = bisect.bisect_left(steps, boundary, lo=applied)
        for _, pitch, program, is_drum, vbin in rows[applied:upto]:
            if not is_drum:
                active[(program, pitch)] = vbin
        applied = upto
        tie = sorted(key for key, vbin in active.items() if vbin)

        seg_events = [(s - seg_step, *rest) for s, *rest in rows[lo:hi]]
        ids = encode(tie, seg_events)
        needed = len(ids) + 1
        n_onsets = int(np.count_nonzero(ev.vbin[lo:hi]))
        dropped = 0
        if len(ids) > budget:
            ids, dropped = _fit(encode, tie, seg_events, onset_steps[lo:hi], seg_step, budget)
        ids.append(EOS_ID)
        info = SegmentInfo(
            k, seg_step / sps, len(ids), needed, len(tie), n_onsets - dropped, dropped
        )
        yield np.asarray(ids, dtype=np.int64), info
        seg_step, lo = next_step, hi


def _fit(
    encode: _SegmentEncoder,
    tie: list[tuple[int, int]],
    events: list[tuple],
    onset_steps: list[int],
    seg_start: int,
    budget: int,
) -> tuple[list[int], int]:
    """Cut a too-long segment to ``budget`` tokens; returns (ids, number of onsets dropped).

    Rule: drop whole notes, latest onsets first. Keep every onset before some step T (the largest
    T that fits) and every offset of a kept or tied note; drop onsets at or after T together with
    their offsets in this segment. What remains is a valid, time-ordered description of all notes
    that start before T: nothing is cut mid-note, so no kept note hangs to the segment end. Notes
    still sounding at the next segment start are in that segment's tie section as usual.
    Fallback when even the tie section plus its offsets is too long: the tie section alone,
    shortened to fit (only reachable with hundreds of simultaneous notes).
    """
    is_onset = [e[4] > 0 for e in events]
    n_onsets = sum(is_onset)
    cuts = sorted({s for s, on in zip(onset_steps, is_onset, strict=True) if on and s >= seg_start})

    def kept(i: int) -> list[tuple]:  # events of the notes with onset before cuts[i]
        return [e for e, s in zip(events, onset_steps, strict=True) if s < cuts[i]]

    # Keeping all onsets is known not to fit, so try cuts[0..n-1] (cuts[0]: no onset kept).
    i = _largest_fitting(len(cuts) - 1, lambda i: len(encode(tie, kept(i))) <= budget)
    if i >= 0:
        events = kept(i)
        return encode(tie, events), n_onsets - sum(e[4] > 0 for e in events)
    m = _largest_fitting(len(tie), lambda m: len(encode(tie[:m], [])) <= budget)
    return encode(tie[:m], []), n_onsets


def notes_to_segments(
    notes: Sequence[Note],
    total_time: float,
    *,
    codec: Codec = DEFAULT_CODEC,
    program_map: str | ProgramMap = DEFAULT_PROGRAM_MAP,
    max_length: int = MAX_TOKENS,
    reference_tail_ties: bool = False,
) -> list[np.ndarray]:
    """Token ids of every 5.12 s segment of a piece (spec §3.3–3.7).

    Args:
        notes: the piece's notes (``midisynth.midi.Note``: start/end seconds, pitch, velocity,
            program, is_drum), sustain pedal already applied. Any order.
        total_time: length of the piece in seconds (raised to the last note end if shorter);
            sets the number of segments, ``floor(total_time·50 + 1) / 256`` rounded up.
        codec: event vocabulary; ``num_velocity_bins > 1`` encodes velocities.
        program_map: how pitched notes' programs are folded for the model (name or object).
        max_length: token budget per segment, EOS included (the encoder's 2048 positions).
        reference_tail_ties: for segments that start after the last note event, False (default)
            ties the notes actually sounding then (usually none); True reproduces the reference,
            which repeats the notes sounding *before* that last event: a final chord that ends
            is shown as held, with no release, through every later segment. Only a total_time
            beyond the last event reaches this (a render tail; never note-seq's own length on
            the test corpus), so both settings match the reference on real files.

    Returns:
        One int64 array [L_k] per segment, L_k ≤ max_length, ending with EOS, not padded.

    A segment needing more than ``max_length`` tokens is cut by dropping its latest-starting
    notes (see ``_fit``); one :class:`TokenOverflowWarning` per call lists the segments cut.
    Like the reference: events are assigned to segments by 10 ms step, and a note that ends and
    starts at the same step keeps sounding (offsets sort before onsets).
    """
    segments, infos = [], []
    encoded = _encode(notes, total_time, codec, program_map, max_length, reference_tail_ties)
    for ids, info in encoded:
        segments.append(ids)
        infos.append(info)
    _warn_overflow([i for i in infos if i.num_tokens_needed > i.num_tokens], max_length)
    return segments


def iter_segments(
    notes: Sequence[Note],
    total_time: float,
    *,
    codec: Codec = DEFAULT_CODEC,
    program_map: str | ProgramMap = DEFAULT_PROGRAM_MAP,
    max_length: int = MAX_TOKENS,
    reference_tail_ties: bool = False,
) -> Iterator[np.ndarray]:
    """``notes_to_segments`` one segment at a time, each made when the loop asks for it: memory
    stays flat in the song's length (``count_segments`` says how many). A segment that is cut
    gives its own :class:`TokenOverflowWarning` when it is made."""
    encoded = _encode(notes, total_time, codec, program_map, max_length, reference_tail_ties)
    for ids, info in encoded:
        if info.num_tokens_needed > info.num_tokens:
            _warn_overflow([info], max_length)
        yield ids


def _warn_overflow(cut: list[SegmentInfo], max_length: int) -> None:
    """One TokenOverflowWarning (one line) naming the segments in ``cut``, if any."""
    if not cut:
        return
    detail = "; ".join(
        f"segment {i.index} ({i.start_time:.2f} s) needs {i.num_tokens_needed} tokens, "
        f"dropped {i.num_dropped_onsets} of {i.num_onsets + i.num_dropped_onsets} onsets"
        for i in cut
    )
    warnings.warn(
        f"{len(cut)} segment(s) exceed the {max_length}-token limit of the notes encoder; "
        f"their latest-starting notes were left out: {detail}",
        TokenOverflowWarning,
        stacklevel=3,
    )


def segment_info(
    notes: Sequence[Note],
    total_time: float,
    *,
    codec: Codec = DEFAULT_CODEC,
    program_map: str | ProgramMap = DEFAULT_PROGRAM_MAP,
    max_length: int = MAX_TOKENS,
    reference_tail_ties: bool = False,
) -> list[SegmentInfo]:
    """Per-segment summary (start time, token counts, tied/encoded/dropped notes); no warning."""
    encoded = _encode(notes, total_time, codec, program_map, max_length, reference_tail_ties)
    return [info for _, info in encoded]


def pad_segments(segments: Sequence[np.ndarray], length: int | None = MAX_TOKENS) -> np.ndarray:
    """Right-pad segments with PAD into one array [S, length] int64.

    ``length=None`` pads to the longest segment (for batching fewer than 2048 positions).
    """
    longest = max((len(s) for s in segments), default=0)
    if length is None:
        length = max(longest, 1)
    if longest > length:
        raise ValueError(f"a segment has {longest} tokens, more than length={length}")
    out = np.full((len(segments), length), PAD_ID, dtype=np.int64)
    for row, seg in zip(out, segments, strict=True):
        row[: len(seg)] = seg
    return out
