"""Frame-aligned note features: notes → per-frame note slots on the 256-frame segment grid.

The models trained here (``framenet.py``) are told *which notes sound in which frame* instead of
having to discover the alignment between note tokens and frames (which the released model learned
in 500k steps at batch 256, far beyond a CPU). For each frame of a segment the grid lists the notes
whose sound can reach it — from their onset until ``RELEASE_FRAMES`` after their offset (the
release tail) — each as five small integers:

    pitch      MIDI key 0..127
    inst       GM program 0..127 after swaps and the model's program map; DRUM_INST for drums
    velocity   1..127 (0 marks an empty slot)
    age        ⌊window centre − onset⌋ + 1 in frames, clipped to 0..AGE_MAX (0: the window
               reaches the onset but its centre is still before it)
    remaining  frames until the offset, clipped to −RELEASE_FRAMES..REMAINING_MAX, stored + RELEASE_FRAMES

Frame k of the TF-style log-mel (``audio.log_mel``) covers samples [HOP·k, HOP·k + WIN), so its
window is centred on time (k + 1)·HOP / SAMPLE_RATE. A note enters a frame's slots as soon as the
window reaches its onset. When more than ``slots`` notes reach a frame, the most recent onsets win
(notes already released go first). Pure numpy: shared by rendering and training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import audio

SLOTS = 32  # notes kept per frame (polyphony the model hears; more recent onsets win)
AGE_MAX = 255  # frames since onset are clipped here (5.1 s)
REMAINING_MAX = 255  # frames until offset are clipped here
RELEASE_FRAMES = 50  # a note stays in the grid this long after its offset (1 s release tail)
DRUM_INST = 128  # the ``inst`` value of drum notes (channel 10)
COLUMNS = ("pitch", "inst", "velocity", "age", "remaining")
N_INST = DRUM_INST + 1  # embedding sizes the model needs
N_AGE = AGE_MAX + 1
N_REMAINING = REMAINING_MAX + RELEASE_FRAMES + 1


def _window_centres(first: int, n_frames: int) -> np.ndarray:
    """Centre of frames first..first+n−1 in frame units (time·FRAME_RATE)."""
    return np.arange(first, first + n_frames, dtype=np.float64) + audio.WIN / (2 * audio.HOP)


def note_grid(
    notes: np.ndarray,
    first_frame: int,
    n_frames: int = audio.SEGMENT_FRAMES,
    slots: int = SLOTS,
) -> np.ndarray:
    """The note slots of frames [first_frame, first_frame + n_frames).

    Args:
        notes: float [N, 6] columns start s, end s, pitch, velocity, inst (0..127, or DRUM_INST),
            is_drum — as ``notes_array`` makes them (programs already mapped).
        first_frame: absolute index of the first frame (segment i starts at 256·i).
    Returns:
        int16 [n_frames, slots, 5] (``COLUMNS``), empty slots all zero.
    """
    out = np.zeros((n_frames, slots, len(COLUMNS)), np.int16)
    if len(notes) == 0:
        return out
    rate = audio.FRAME_RATE
    half = audio.WIN / (2 * audio.HOP)  # window centre offset in frames (1.0)
    onset = notes[:, 0] * rate
    offset = np.maximum(notes[:, 1] * rate, onset)
    # Frame k sees the note once its window end (k + 2) passes the onset, and until the release ends.
    k0 = np.floor(onset - 2 * half).astype(np.int64) + 1
    k1 = np.ceil(offset + RELEASE_FRAMES - half).astype(np.int64)
    lo = np.maximum(k0, first_frame)
    hi = np.minimum(k1, first_frame + n_frames)
    live = np.flatnonzero(hi > lo)
    if len(live) == 0:
        return out
    counts = hi[live] - lo[live]
    note = np.repeat(live, counts)  # one entry per (note, frame)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    frame = np.repeat(lo[live], counts) + (np.arange(len(note)) - starts)
    centre = frame + half
    age = centre - onset[note]
    remaining = offset[note] - centre
    # Priority within a frame: sounding before released, then the most recent onset.
    released = remaining < 0
    order = np.lexsort((age, released, frame))
    frame, note, age, remaining = frame[order], note[order], age[order], remaining[order]
    first = np.r_[0, np.flatnonzero(np.diff(frame)) + 1]
    rank = np.arange(len(frame)) - np.repeat(first, np.diff(np.r_[first, len(frame)]))
    keep = rank < slots
    f, r, n = frame[keep] - first_frame, rank[keep], note[keep]
    out[f, r, 0] = notes[n, 2]
    out[f, r, 1] = np.where(notes[n, 5] > 0.5, DRUM_INST, notes[n, 4])
    out[f, r, 2] = np.clip(notes[n, 3], 1, 127)
    out[f, r, 3] = np.clip(np.floor(age[keep] + 1), 0, AGE_MAX)
    out[f, r, 4] = (
        np.clip(np.round(remaining[keep]), -RELEASE_FRAMES, REMAINING_MAX) + RELEASE_FRAMES
    )
    return out


def notes_array(notes: Sequence, program_table: Sequence[int] | None = None) -> np.ndarray:
    """Notes (``midi.Note``) → float64 [N, 6]: start, end, pitch, velocity, inst, is_drum, with each
    program passed through ``program_table`` (the model's program map; None = unchanged)."""
    rows = [
        (
            n.start,
            n.end,
            n.pitch,
            n.velocity,
            program_table[n.program] if program_table is not None else n.program,
            float(n.is_drum),
        )
        for n in notes
    ]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def map_programs(notes: np.ndarray, program_table: Sequence[int] | None) -> np.ndarray:
    """Cached note arrays (column 4 = GM program) with their programs mapped (a copy)."""
    if program_table is None:
        return notes
    out = notes.copy()
    out[:, 4] = np.asarray(program_table)[notes[:, 4].astype(np.int64)]
    return out


def segment_grids(notes: np.ndarray, n_segments: int, slots: int = SLOTS) -> list[np.ndarray]:
    """``note_grid`` of every 256-frame segment of a song: n_segments × int16 [256, slots, 5]."""
    seg = audio.SEGMENT_FRAMES
    return [note_grid(notes, i * seg, seg, slots) for i in range(n_segments)]
