"""notegrid: which notes each frame lists, with literal expected values."""

from __future__ import annotations

import numpy as np
import pytest

from midisynth import audio, notegrid
from midisynth.midi import Note


def one(start, end, pitch=60, vel=100, inst=0, drum=0.0):
    return np.array([[start, end, pitch, vel, inst, drum]], np.float64)


def test_a_note_spans_onset_to_release_end():
    # Onset 1.00 s = frame position 50; offset 2.00 s = 100. Frame k's window is [k, k+2).
    g = notegrid.note_grid(one(1.0, 2.0), 0, 256)
    present = np.flatnonzero(g[:, 0, 2] > 0)
    assert present[0] == 49  # window [49, 51) reaches the onset at 50
    assert present[-1] == 100 + notegrid.RELEASE_FRAMES - 2  # centre 149 < 150
    assert g[49, 0, 3] == 1 and g[50, 0, 3] == 2 and g[60, 0, 3] == 12  # ⌊centre − onset⌋ + 1
    rem = g[:, 0, 4].astype(int) - notegrid.RELEASE_FRAMES
    assert rem[50] == 49 and rem[99] == 0 and rem[120] == -21
    assert g[60, 0, 0] == 60 and g[60, 0, 1] == 0 and g[60, 0, 2] == 100
    assert (g[:, 1:] == 0).all()  # one note: only slot 0 used


def test_segment_offset_and_drums():
    notes = one(5.0, 5.1, pitch=36, inst=0, drum=1.0)  # frame position 250
    g = notegrid.note_grid(notes, 256, 256)  # second segment: frames 256..511
    assert g[0, 0, 1] == notegrid.DRUM_INST
    assert g[0, 0, 3] == 8  # frame 256, centre 257: 7 frames after the onset at 250, + 1
    assert np.array_equal(g, notegrid.segment_grids(notes, 2)[1])


def test_slots_keep_the_most_recent_sounding_notes():
    notes = np.concatenate([one(0.1 * i, 3.0, pitch=40 + i) for i in range(10)])
    notes = np.concatenate([notes, one(0.0, 0.5, pitch=90)])  # released by frame 100
    g = notegrid.note_grid(notes, 0, 256, slots=4)
    assert list(g[100, :, 0]) == [49, 48, 47, 46]  # newest onsets first, released one dropped
    assert (g[..., 2] > 0).sum(1).max() == 4


def test_empty_and_program_mapping():
    assert not notegrid.note_grid(np.zeros((0, 6)), 0).any()
    arr = notegrid.notes_array([Note(0.0, 1.0, 60, 80, 5, False, 0)], list(range(127, -1, -1)))
    assert arr[0, 4] == 122
    mapped = notegrid.map_programs(one(0, 1, inst=3), list(range(127, -1, -1)))
    assert mapped[0, 4] == 124


@pytest.mark.parametrize("first", [0, 256, 1024])
def test_grid_matches_a_direct_per_frame_count(first):
    rng = np.random.default_rng(first)
    start = rng.uniform(0, 30, 200)
    notes = np.stack(
        [
            start,
            start + rng.uniform(0.05, 3, 200),
            rng.integers(20, 100, 200),
            rng.integers(1, 128, 200),
            rng.integers(0, 128, 200),
            np.zeros(200),
        ],
        1,
    )
    g = notegrid.note_grid(notes, first, 256, slots=64)
    centre = np.arange(first, first + 256) + 1.0
    on, off = notes[:, 0] * audio.FRAME_RATE, notes[:, 1] * audio.FRAME_RATE
    want = ((centre[:, None] + 1 > on) & (centre[:, None] < off + notegrid.RELEASE_FRAMES)).sum(1)
    assert np.array_equal((g[..., 2] > 0).sum(1), np.minimum(want, 64))
