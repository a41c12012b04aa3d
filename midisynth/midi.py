"""Standard MIDI File → notes (placeholder; being written)."""

from __future__ import annotations

from dataclasses import dataclass


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message is one line meant for users."""


@dataclass(frozen=True)
class Note:
    """One note. Times in seconds from the start of the file."""

    start: float
    end: float
    pitch: int  # MIDI key 0..127
    velocity: int  # 1..127
    program: int  # GM program 0..127 (as in the file; drums keep their channel program)
    is_drum: bool  # MIDI channel 10
    instrument: int  # instrument index (pretty_midi/note-seq numbering: per track, channel, program)
