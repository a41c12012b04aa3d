"""Write the example MIDI files of this folder (our own compositions; public domain / CC0).

    python examples/make_examples.py

melody_chords.mid  piano melody over block chords (format 1, 2 tracks), ~10 s
band.mid           electric piano, bass, strings and drums (format 1, 5 tracks), ~10 s
piano_pedal.mid    piano arpeggios held with the sustain pedal (format 0), ~8 s
"""

from __future__ import annotations

from pathlib import Path

import mido

HERE = Path(__file__).resolve().parent
TPB = 480  # ticks per beat


def track(events: list[tuple[int, mido.Message]], name: str) -> mido.MidiTrack:
    """Absolute-tick (tick, message) pairs → a delta-time MidiTrack ending with end_of_track."""
    t = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, msg in sorted(events, key=lambda e: (e[0], e[1].type == "note_on")):
        t.append(msg.copy(time=tick - now))
        now = tick
    t.append(mido.MetaMessage("end_of_track", time=0))
    return t


def notes(ch: int, seq: list[tuple[float, float, int]], vel: int = 90) -> list:
    """(start beat, length in beats, pitch) → note on/off events on channel ch."""
    ev = []
    for start, length, pitch in seq:
        a, b = int(start * TPB), int((start + length) * TPB)
        ev.append((a, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
        ev.append((b, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    return ev


CHORDS = [(48, 52, 55), (45, 48, 52), (41, 45, 48), (43, 47, 50)]  # C Am F G
MELODY = [72, 74, 76, 79, 77, 76, 74, 72, 69, 72, 74, 76, 74, 72, 71, 74]


def melody_chords() -> mido.MidiFile:
    mel = notes(0, [(i, 1, p) for i, p in enumerate(MELODY)], 96)
    chords = notes(1, [(4 * (i % 4), 4, p) for i in range(4) for p in CHORDS[i % 4]], 70)
    f = mido.MidiFile(type=1, ticks_per_beat=TPB)
    f.tracks.append(track([(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(96)))], "tempo"))
    f.tracks.append(
        track([(0, mido.Message("program_change", channel=0, program=0))] + mel, "melody")
    )
    f.tracks.append(
        track([(0, mido.Message("program_change", channel=1, program=0))] + chords, "chords")
    )
    return f


def band() -> mido.MidiFile:
    bars = 5
    keys = notes(
        0, [(4 * b + 2 * h, 2, p) for b in range(bars) for h in range(2) for p in CHORDS[b % 4]], 80
    )
    bass = notes(
        1, [(4 * b + q, 1, CHORDS[b % 4][0] - 12) for b in range(bars) for q in range(4)], 100
    )
    strings = notes(2, [(4 * b, 4, CHORDS[b % 4][2] + 12) for b in range(bars)], 64)
    drums = []
    for beat in range(4 * bars):
        drums += notes(9, [(beat, 0.25, 42)], 70)  # closed hi-hat
        drums += notes(9, [(beat, 0.25, 36 if beat % 2 == 0 else 38)], 100)  # kick / snare
    f = mido.MidiFile(type=1, ticks_per_beat=TPB)
    f.tracks.append(track([(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(120)))], "tempo"))
    for ch, prog, ev, name in [
        (0, 4, keys, "e-piano"),
        (1, 33, bass, "bass"),
        (2, 48, strings, "strings"),
    ]:
        f.tracks.append(
            track([(0, mido.Message("program_change", channel=ch, program=prog))] + ev, name)
        )
    f.tracks.append(track(drums, "drums"))
    return f


def piano_pedal() -> mido.MidiFile:
    ev = [(0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)))]
    for b, chord in enumerate(CHORDS):
        base = 3 * b
        ev += notes(
            0, [(base + i * 0.25, 0.25, p) for i, p in enumerate(chord + (chord[0] + 12,) * 1)], 85
        )
        ev.append(
            (int(base * TPB), mido.Message("control_change", channel=0, control=64, value=127))
        )
        ev.append(
            (
                int((base + 2.9) * TPB),
                mido.Message("control_change", channel=0, control=64, value=0),
            )
        )
    f = mido.MidiFile(type=0, ticks_per_beat=TPB)
    f.tracks.append(track(ev, "piano"))
    return f


def main() -> None:
    for name, make in [
        ("melody_chords", melody_chords),
        ("band", band),
        ("piano_pedal", piano_pedal),
    ]:
        path = HERE / f"{name}.mid"
        make().save(path)
        print(f"{path.name}: {mido.MidiFile(path).length:.1f} s")


if __name__ == "__main__":
    main()
