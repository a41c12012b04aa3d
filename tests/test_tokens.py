"""MT3 codec: literal ids from the spec, small mido-built files, and parity with diffusers.

The reference is diffusers' ``MidiProcessor`` (note-seq 0.0.5 + the MT3 codec), imported with
``pytest.importorskip``. Parity runs MIDI file → ``midisynth.midi.read_midi`` → ``notes_to_segments``
against ``MidiProcessor()(file)``; while ``read_midi`` does not exist yet the notes come from note-seq.
"""

from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path

import mido
import numpy as np
import pytest

from midisynth import midi as midi_module
from midisynth.midi import Note
from midisynth.tokens import (
    DEFAULT_CODEC,
    EOS_ID,
    MAX_TOKENS,
    Codec,
    TokenOverflowWarning,
    notes_to_segments,
    num_segments,
    pad_segments,
    segment_info,
    velocity_to_bin,
)

# The synthetic example of spec §3.9: piano C4 0-6 s, viola G4 0.5-2 s, kick at 0.25 s, and a
# "Pad 8" C5 1.0-1.5 s (program 95, which the released model maps to 88).
SPEC_NOTES = [
    Note(0.0, 6.0, 60, 100, 0, False, 0),
    Note(0.5, 2.0, 67, 100, 41, False, 1),
    Note(0.25, 0.35, 36, 100, 0, True, 2),
    Note(1.0, 1.5, 72, 100, 95, False, 3),
]
SPEC_SEGMENTS = [
    [
        1134,
        1135,
        1133,
        1064,
        28,
        1299,
        53,
        1176,
        1071,
        103,
        1223,
        1076,
        153,
        1132,
        1076,
        203,
        1176,
        1071,
        1,
    ],
    [1135, 1064, 1134, 91, 1132, 1064, 1],
]


def ids(segments) -> list[list[int]]:
    return [s.tolist() for s in segments]


# ---- codec ---------------------------------------------------------------------------------------


def test_codec_layout_matches_spec():
    c = DEFAULT_CODEC
    assert c.first_id == {
        "shift": 3,
        "pitch": 1004,
        "velocity": 1132,
        "tie": 1134,
        "program": 1135,
        "drum": 1263,
    }
    assert (c.num_classes, c.vocab_size, c.max_shift_steps) == (1388, 1536, 1000)
    assert c.token_id("shift", 87) == 90
    assert c.token_id("pitch", 76) == 1080
    assert c.token_id("velocity", 0) == 1132 and c.token_id("velocity", 1) == 1133
    assert c.token_id("program", 127) == 1262
    assert c.token_id("drum", 127) == 1390  # last id in use; 1391..1535 never produced
    with pytest.raises(ValueError):
        c.token_id("velocity", 2)
    with pytest.raises(ValueError):
        c.token_id("shift", 1001)


def test_codec_decode_roundtrip():
    c = DEFAULT_CODEC
    for token in range(3, 3 + c.num_classes):
        assert c.token_id(*c.decode(token)) == token
    assert c.decode(1) == ("eos", 0)
    assert c.describe([1134, 90, 1135, 1133, 1080, 1]) == [
        "tie",
        "shift 87",
        "program 0",
        "velocity 1",
        "pitch 76",
        "eos",
    ]
    with pytest.raises(ValueError):
        c.decode(1391)


def test_codec_with_velocity_bins():
    c = Codec(num_velocity_bins=127)
    assert c.first_id["tie"] == 1132 + 128
    assert c.num_classes == 1388 + 126
    assert c.vocab_size == 1664  # 3 + 1514 + 100 = 1617, rounded up to 128
    with pytest.raises(ValueError):
        Codec(program_granularity="coarse")


def test_codec_dict_round_trip():
    c = Codec(steps_per_second=50, num_velocity_bins=8, program_granularity="midi_class")
    assert Codec.from_dict(c.to_dict()) == c
    # config.json's key order, as every saved model has it
    assert list(Codec().to_dict()) == [
        "num_velocity_bins",
        "steps_per_second",
        "max_shift_seconds",
        "program_granularity",
    ]


def test_velocity_to_bin_is_mt3s():
    for bins in (1, 4, 16, 127):
        for v in range(128):
            expected = 0 if v == 0 else math.ceil(bins * v / 127)
            assert velocity_to_bin(v, bins) == expected


def test_frame_constants_match_audio_module():
    pytest.importorskip("torch")
    from midisynth import audio, tokens

    for name in ("SAMPLE_RATE", "HOP", "FRAME_RATE", "SEGMENT_FRAMES", "SEGMENT_SECONDS"):
        assert getattr(tokens, name) == getattr(audio, name), name


# ---- segmentation, literal ids ---------------------------------------------------------------------


def test_spec_synthetic_example():
    assert ids(notes_to_segments(SPEC_NOTES, 6.0)) == SPEC_SEGMENTS


def test_note_order_does_not_matter():
    shuffled = SPEC_NOTES[::-1]
    assert ids(notes_to_segments(shuffled, 6.0)) == SPEC_SEGMENTS


def test_identity_program_map_keeps_program():
    seg0 = notes_to_segments(SPEC_NOTES, 6.0, program_map="identity")[0].tolist()
    assert 1135 + 95 in seg0 and 1135 + 88 not in seg0


def test_segment_count_follows_reference_framing():
    assert num_segments(165.596) == 33  # elise_format0.mid (spec §3.4)
    assert num_segments(0.0) == 1
    assert num_segments(5.1199) == 1
    assert num_segments(5.12) == 2  # 256 frames + the reference's one padding frame
    assert len(notes_to_segments([], 12.0)) == 3


def test_empty_piece_is_all_empty_tie_sections():
    assert ids(notes_to_segments([], 6.0)) == [[1134, 1], [1134, 1]]


def test_onset_at_segment_start_belongs_to_that_segment():
    notes = [Note(5.12, 5.5, 60, 90, 0, False, 0)]
    assert ids(notes_to_segments(notes, 6.0)) == [
        [1134, 1],
        [1134, 1135, 1133, 1064, 41, 1132, 1064, 1],
    ]


def test_drums_are_not_tied_or_released():
    notes = [Note(5.0, 5.5, 38, 90, 0, True, 0), Note(5.0, 5.5, 60, 90, 0, False, 1)]
    seg0, seg1 = ids(notes_to_segments(notes, 6.0))
    assert seg0 == [1134, 503, 1135, 1133, 1064, 1263 + 38, 1]  # pitched sorts before drums
    assert seg1 == [1135, 1064, 1134, 41, 1132, 1064, 1]


def test_total_time_shorter_than_notes_is_extended():
    assert ids(notes_to_segments(SPEC_NOTES, 1.0)) == SPEC_SEGMENTS


def test_tail_ties_quirk():
    # The piano ends and a long drum note starts at 6 s, so segment 2 (from 10.24 s) starts after
    # the last event. The reference repeats the state from before that event: piano still tied.
    notes = [Note(0.0, 6.0, 60, 100, 0, False, 0), Note(6.0, 12.0, 36, 100, 0, True, 1)]
    assert notes_to_segments(notes, 12.0)[2].tolist() == [1134, 1]
    stale = notes_to_segments(notes, 12.0, reference_tail_ties=True)
    assert stale[2].tolist() == [1135, 1064, 1134, 1]
    info = segment_info(notes, 12.0)
    assert [(i.start_time, i.num_tied, i.num_onsets) for i in info] == [
        (0.0, 0, 1),
        (5.12, 1, 1),
        (10.24, 0, 0),
    ]


def test_render_tail_has_no_stale_ties():
    # A tail after the piece (render's `tail` option) must not hold the final note.
    notes = [Note(0.0, 4.0, 60, 100, 0, False, 0)]
    assert ids(notes_to_segments(notes, 4.0 + 6.0))[1] == [1134, 1]


def test_velocity_bins_are_encoded_and_deduplicated():
    codec = Codec(num_velocity_bins=4)
    vel = codec.first_id["velocity"]
    notes = [
        Note(0.0, 1.0, 60, 127, 0, False, 0),  # bin 4
        Note(0.0, 1.0, 64, 100, 0, False, 0),  # bin 4: no velocity token
        Note(0.5, 1.0, 67, 20, 0, False, 0),  # bin 1
    ]
    (seg,) = notes_to_segments(notes, 1.0, codec=codec)
    d = codec.describe(seg)
    assert d[:6] == ["tie", "program 0", "velocity 4", "pitch 60", "pitch 64", "shift 50"]
    assert seg.tolist().count(vel + 0) == 1  # one note-off velocity token for the three offsets
    assert d[6:8] == ["velocity 1", "pitch 67"]


def test_pad_segments():
    segs = notes_to_segments(SPEC_NOTES, 6.0)
    padded = pad_segments(segs)
    assert padded.shape == (2, MAX_TOKENS) and padded.dtype == np.int64
    assert padded[0, :19].tolist() == SPEC_SEGMENTS[0] and not padded[0, 19:].any()
    assert pad_segments(segs, length=None).shape == (2, 19)
    assert pad_segments([]).shape == (0, MAX_TOKENS)
    with pytest.raises(ValueError):
        pad_segments(segs, length=10)


# ---- too-long segments ---------------------------------------------------------------------------


def _dense_notes() -> list[Note]:
    """Three-note chords on every 10 ms step of segment 0, alternating programs: ~6000 tokens."""
    notes = []
    for step in range(512):
        for pitch in (48, 52, 55):
            start = step / 100
            notes.append(
                Note(start, start + 0.03, pitch + step % 12, 80, 40 * (step % 2), False, 0)
            )
    notes.append(Note(1.0, 7.0, 30, 80, 33, False, 1))  # a long bass note tied into segment 1
    return notes


def test_too_long_segment_drops_latest_notes_and_warns_once():
    notes = _dense_notes()
    full = notes_to_segments(notes, 7.0, max_length=10**6)
    assert len(full[0]) > 4000
    with pytest.warns(TokenOverflowWarning) as record:
        cut = notes_to_segments(notes, 7.0)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"segment 0 (0.00 s) needs {len(full[0])} tokens" in message
    assert len(cut[0]) <= MAX_TOKENS and cut[0][-1] == EOS_ID
    assert ids(cut[1:]) == ids(full[1:])  # later segments untouched

    # The cut segment is exactly the encoding of the notes that start before some step T.
    info = segment_info(notes, 7.0)[0]
    assert info.num_tokens == len(cut[0]) and info.num_tokens_needed == len(full[0])
    assert info.num_dropped_onsets > 0
    kept_onsets = info.num_onsets
    starts = sorted(round(n.start * 100) for n in notes)
    t_cut = starts[kept_onsets]
    assert starts[kept_onsets - 1] < t_cut  # whole steps are kept or dropped
    kept = [n for n in notes if round(n.start * 100) < t_cut]
    assert cut[0].tolist() == notes_to_segments(kept, 7.0)[0].tolist()
    one_more_step = [n for n in notes if round(n.start * 100) <= t_cut]
    assert len(notes_to_segments(one_more_step, 7.0, max_length=10**6)[0]) > MAX_TOKENS


def test_too_long_tie_section_is_shortened():
    # 2048 notes sounding across the segment boundary: the tie section alone is > 2047 tokens.
    notes = [Note(0.0, 6.0, pitch, 80, 8 * k, False, k) for k in range(16) for pitch in range(128)]
    with pytest.warns(TokenOverflowWarning, match="2 segment") as record:
        seg0, seg1 = notes_to_segments(notes, 6.0, program_map="identity")
    assert len(record) == 1
    assert seg0.tolist() == [1134, 1]  # every onset is at step 0: nothing fits but the tie
    assert len(seg1) == MAX_TOKENS and seg1[-2:].tolist() == [1134, 1]
    assert DEFAULT_CODEC.decode(int(seg1[0])) == ("program", 0)


def test_no_warning_when_everything_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        notes_to_segments(SPEC_NOTES, 6.0)


# ---- reference implementation --------------------------------------------------------------------


def _midi_utils():
    pytest.importorskip("note_seq")
    return pytest.importorskip("diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils")


def _notes_from_note_sequence(ns) -> list[Note]:
    return [
        Note(n.start_time, n.end_time, n.pitch, n.velocity, n.program, n.is_drum, n.instrument)
        for n in ns.notes
    ]


def _read_with_note_seq(path: Path):
    import note_seq

    ns = note_seq.midi_to_note_sequence(path.read_bytes())
    ns = note_seq.apply_sustain_control_changes(ns)
    return _notes_from_note_sequence(ns), ns.total_time


def _read(path: Path) -> tuple[list[Note], float]:
    """Notes and length of a MIDI file: midisynth's reader once it exists, else note-seq's."""
    read_midi = getattr(midi_module, "read_midi", None)
    if read_midi is None:
        return _read_with_note_seq(path)
    score = read_midi(path)
    return list(score.notes), score.total_time


def _reference_ids(path: Path) -> list[list[int]]:
    """diffusers' MidiProcessor output with the padding stripped."""
    processor = _midi_utils().MidiProcessor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pretty_midi on tempo events in tracks > 0
        segments = processor(str(path))
    return [[t for t in seg if t != 0] for seg in segments]


def _reference_ids_with(ns, num_velocity_bins: int, granularity: str) -> list[list[int]]:
    """The reference pipeline (MidiProcessor.__call__) with a different codec / granularity."""
    mu = _midi_utils()
    codec = mu.Codec(
        max_shift_steps=1000,
        steps_per_second=100,
        event_ranges=[
            mu.EventRange("pitch", 0, 127),
            mu.EventRange("velocity", 0, num_velocity_bins),
            mu.EventRange("tie", 0, 0),
            mu.EventRange("program", 0, 127),
            mu.EventRange("drum", 0, 127),
        ],
    )
    for note in ns.notes:
        if not note.is_drum:
            note.program = mu.program_to_slakh_program(note.program)
    _, frame_times = mu.audio_to_frames(np.zeros(int(ns.total_time * 16000)), 320, 50)
    times, values = mu.note_sequence_to_onsets_and_offsets_and_programs(ns)
    features = mu.encode_and_index_events(
        mu.NoteEncodingState(),
        times,
        values,
        codec,
        frame_times,
        mu.note_event_data_to_events,
        mu.note_encoding_state_to_events,
    )
    tie = codec.encode_event(mu.Event("tie", 0))
    out = []
    for f in features:
        f = mu.extract_sequence_with_indices(f, state_events_end_token=tie)
        f = mu.map_midi_programs(f, codec, granularity)
        f = mu.run_length_encode_shifts_fn(
            f, codec, state_change_event_types=["velocity", "program"]
        )
        out.append([int(t) + 3 for t in f["inputs"]] + [1])
    return out


def _write_midi(path: Path, tracks, tempo: int = 500_000, tpb: int = 480) -> Path:
    """A type-1 MIDI file. tracks: (channel, program, [(start_beat, dur_beats, pitch, vel)], [cc])
    where cc = (beat, control, value)."""
    mf = mido.MidiFile(type=1, ticks_per_beat=tpb)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    mf.tracks.append(meta)
    for channel, program, notes, ccs in tracks:
        events = [(0, 0, mido.Message("program_change", channel=channel, program=program))]
        for start, dur, pitch, vel in notes:
            events.append(
                (
                    round(start * tpb),
                    2,
                    mido.Message("note_on", channel=channel, note=pitch, velocity=vel),
                )
            )
            events.append(
                (
                    round((start + dur) * tpb),
                    1,
                    mido.Message("note_off", channel=channel, note=pitch),
                )
            )
        for beat, control, value in ccs:
            events.append(
                (
                    round(beat * tpb),
                    0,
                    mido.Message("control_change", channel=channel, control=control, value=value),
                )
            )
        events.sort(key=lambda e: (e[0], e[1]))
        track, now = mido.MidiTrack(), 0
        for tick, _, msg in events:
            track.append(msg.copy(time=tick - now))
            now = tick
        mf.tracks.append(track)
    mf.save(path)
    return path


@pytest.fixture
def band_midi(tmp_path) -> Path:
    """Piano with sustain pedal, a viola, a synth pad and drums over three segments (120 bpm)."""
    piano = [(b * 0.5, 0.4, 60 + (b * 5) % 24, 40 + (b * 13) % 80) for b in range(48)]
    return _write_midi(
        tmp_path / "band.mid",
        [
            (0, 0, piano, [(3.0, 64, 127), (7.5, 64, 0), (16.0, 64, 100), (19.0, 64, 10)]),
            (1, 41, [(1.0, 3.0, 67, 90), (10.0, 12.0, 55, 70)], []),
            (2, 95, [(2.0, 1.0, 72, 100), (20.0, 6.0, 76, 100)], []),
            (9, 0, [(b * 1.0, 0.1, 36 + (b % 3) * 2, 100) for b in range(26)], []),
        ],
    )


def test_single_note_file(tmp_path):
    path = _write_midi(tmp_path / "one.mid", [(0, 0, [(1.0, 1.0, 60, 100)], [])])  # 0.5-1.0 s
    notes, total = _read(path)
    assert ids(notes_to_segments(notes, total)) == [
        [1134, 53, 1135, 1133, 1064, 103, 1132, 1064, 1]
    ]


def test_band_file_matches_reference(band_midi):
    notes, total = _read(band_midi)
    ours = ids(notes_to_segments(notes, total))
    assert len(ours) == 3
    assert ours == _reference_ids(band_midi)


@pytest.mark.parametrize(
    ("bins", "granularity"), [(1, "midi_class"), (1, "flat"), (4, "full"), (127, "full")]
)
def test_codec_variants_match_reference_pipeline(band_midi, bins, granularity):
    notes, total = _read_with_note_seq(band_midi)
    codec = Codec(num_velocity_bins=bins, program_granularity=granularity)
    ours = ids(notes_to_segments(notes, total, codec=codec))
    import note_seq

    ns = note_seq.apply_sustain_control_changes(
        note_seq.midi_to_note_sequence(band_midi.read_bytes())
    )
    assert ours == _reference_ids_with(ns, bins, granularity)


def test_tail_ties_quirk_is_the_reference_behaviour(tmp_path):
    path = _write_midi(
        tmp_path / "tail.mid",
        [(0, 0, [(0.0, 12.0, 60, 100)], []), (9, 0, [(12.0, 12.0, 36, 100)], [])],
    )
    notes, total = _read(path)
    assert _reference_ids(path)[2] == [1135, 1064, 1134, 1]
    assert ids(notes_to_segments(notes, total, reference_tail_ties=True)) == _reference_ids(path)


# ---- parity over the shared corpus -----------------------------------------------------------------


def _corpus(shared_midi: Path) -> list[Path]:
    return sorted(p for p in shared_midi.rglob("*") if p.suffix.lower() in (".mid", ".midi"))


def _sample(root: Path, n: int) -> list[Path]:
    """A fixed spread of about n files over every source folder, from the smaller half of each
    folder so that the default run stays fast."""
    rng = random.Random(0)
    folders: dict[str, list[Path]] = {}
    for f in _corpus(root):
        folders.setdefault(f.relative_to(root).parts[0], []).append(f)
    chosen = []
    for group in folders.values():
        small = sorted(group, key=lambda p: (p.stat().st_size, p))[: max(1, len(group) // 2)]
        chosen += rng.sample(small, min(len(small), max(1, n // len(folders))))
    return chosen


def _parity(files: list[Path]) -> tuple[int, list[str], list[str]]:
    """(files compared, mismatches, skipped) of midisynth vs MidiProcessor.

    Skipped: files the reference cannot read, and files ``read_midi`` rejects on purpose
    (``MidiError``: format 2, unknown formats...). The budget is lifted so that segments the
    reference leaves too long (it does not cut them) compare too.
    """
    compared, mismatches, skipped = 0, [], []
    for path in files:
        try:
            expected = _reference_ids(path)
        except Exception as e:  # what mido / note-seq cannot read
            skipped.append(f"{path.name}: reference {type(e).__name__}")
            continue
        try:
            notes, total = _read(path)
        except midi_module.MidiError as e:
            skipped.append(f"{path.name}: read_midi: {e}")
            continue
        ours = ids(notes_to_segments(notes, total, max_length=10**9))
        compared += 1
        if ours != expected:
            pairs = zip(ours, expected, strict=False)
            bad = next(
                (i for i, (a, b) in enumerate(pairs) if a != b), min(len(ours), len(expected))
            )
            mismatches.append(
                f"{path}: {len(ours)} vs {len(expected)} segments, first difference in segment {bad}"
            )
    return compared, mismatches, skipped


def test_parity_sample(shared_midi):
    _midi_utils()
    files = _sample(shared_midi, 20)
    compared, mismatches, _ = _parity(files)
    assert compared > 0
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.slow
def test_parity_full_corpus(shared_midi):
    _midi_utils()
    files = _corpus(shared_midi)
    t0 = time.perf_counter()
    compared, mismatches, skipped = _parity(files)
    print(
        f"\nparity: {compared} compared, {compared - len(mismatches)} identical, "
        f"{len(skipped)} skipped, {time.perf_counter() - t0:.0f} s"
    )
    for line in skipped:
        print("  skipped", line)
    assert not mismatches, f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:50])
