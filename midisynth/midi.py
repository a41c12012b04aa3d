"""Standard MIDI File → notes in seconds, read exactly as the reference tokenizer reads it.

The reference runs note-seq's ``midi_to_note_sequence`` (pretty_midi) and then
``apply_sustain_control_changes``; the model was trained on that view of a file, so ``read_midi``
reproduces it, quirks included (tests compare against note-seq on ~2,700 real files):
- tempo comes from ``set_tempo`` events on track 0 only; other tracks' are ignored;
- a note belongs to its channel's program *at its note-off*; instruments are (track, channel,
  program) triples numbered in the order of their first completed note;
- a note-off closes every open note of its key and channel begun at an earlier tick; notes
  never released are dropped;
- controls before the first note of a (track, channel) go to all its later instruments (pretty_midi
  hands them one shared list), so a pedal can act across a program change;
- ``total_time`` is the latest note end, then whatever the sustain pedal makes of it.
Format 2 files (independent sequences) are read as format 1, as pretty_midi and players do, with
a warning. Deliberately different, on files where the reference fails or yields nonsense: unknown
formats, SMPTE timing and files without notes raise ``MidiError``; an empty track chunk
or a bad time signature (pretty_midi crashes on both) is read normally.

Tracks are decoded by a small parser covering what real files hold; anything else (corrupt data,
system messages, odd running status) goes to mido, which then fails as it does for pretty_midi.
The parser is there for speed: mido spends ~8 µs per event, a minute on the test corpus.

Reading is bounded, whatever the file: variable-length numbers longer than the MIDI spec's 4 bytes
are refused (mido reads any length, at a cost quadratic in it: a 1 MB run of 0xFF bytes took 100 s),
counts in the header are unsigned (65,535 tracks, not -1), and every failure on a malformed file
is a ``MidiError``.
"""

from __future__ import annotations

import bisect
import io
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import mido
from mido.midifiles import midifiles as mido_io
from mido.midifiles.meta import build_meta_message, meta_charset


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message is one line meant for users."""


class TooLongError(ValueError):
    """A song whose render would last longer than the limit (``RenderOptions.max_duration``)."""


def format_duration(seconds: float) -> str:
    """A length for a one-line message: '95 s', '12.5 min', '6 h', '12 days', '5.33 years'."""
    units = (("years", 365.25 * 86400), ("days", 86400.0), ("h", 3600.0), ("min", 60.0))
    for unit, size in units:
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def check_length(score: Score, limit: float | None, tail: float = 0.0) -> float:
    """Seconds of audio ``score`` renders to (its length + ``tail``), known from the notes before
    any work; ``TooLongError`` (one line) beyond ``limit`` seconds (None = no limit)."""
    seconds = score.total_time + max(0.0, tail)
    if limit is not None and seconds > limit:
        raise TooLongError(
            f"the render would last {format_duration(seconds)}, longer than the "
            f"{format_duration(limit)} limit (--max-duration)"
        )
    return seconds


@dataclass(frozen=True)
class Note:
    """One note. Times in seconds from the start of the file."""

    start: float
    end: float
    pitch: int  # MIDI key 0..127
    velocity: int  # 1..127
    program: int  # GM program 0..127 (as in the file; drums keep their channel program)
    is_drum: bool  # MIDI channel 10
    instrument: int  # pretty_midi/note-seq instrument number (per track, channel, program)


@dataclass(frozen=True, slots=True)
class InstrumentInfo:
    """One pretty_midi instrument: the notes of one program on one channel of one track."""

    index: int  # = Note.instrument
    track: int
    channel: int  # 0..15; 9 is the drum channel
    program: int
    is_drum: bool
    name: str  # the track's name as of the instrument's first note-off ("" if none)
    n_notes: int  # after sustain


@dataclass(frozen=True, slots=True)
class ControlChange:
    time: float  # seconds
    number: int  # controller (7 volume, 11 expression, 64 sustain, ...)
    value: int  # 0..127
    channel: int
    instrument: int  # as note-seq has it (may be listed under two; see the module docstring)


@dataclass(frozen=True, slots=True)
class PitchBend:
    time: float  # seconds
    bend: int  # -8192..8191
    channel: int
    instrument: int


@dataclass(frozen=True)
class Score:
    """A parsed MIDI file. Lists are in note-seq's order (instrument by instrument)."""

    notes: list[Note]  # after the sustain pedal when read with sustain=True
    total_time: float  # seconds; equals note-seq's total_time (the tokenizer's length)
    instruments: list[InstrumentInfo]
    control_changes: list[ControlChange]  # all controllers, kept for inspection, not used
    pitch_bends: list[PitchBend]
    tempos: list[tuple[float, float]]  # (time in seconds, quarter notes per minute)
    format: int  # 0 or 1
    resolution: int  # ticks per quarter note
    warnings: list[str]  # things a user may want to know (ignored tempo events, dropped notes)


# Internal event kinds of the track parser: (tick, kind, channel, a, b).
_ON, _OFF, _PROGRAM, _CC, _BEND, _TEMPO, _NAME = range(7)
_MAX_TICK = 10_000_000  # pretty_midi refuses files beyond this as corrupt; so do we
_MAX_MESSAGE = 1_000_000  # mido's limit on meta/sysex length
_MAX_NUMBER_BYTES = 4  # variable-length numbers: at most 4 bytes (values < 2**28), as the spec says
_SUSTAIN = 64


class _Fallback(Exception):
    """The fast parser met something it leaves to mido."""


class _LongNumber(Exception):
    """A variable-length number longer than ``_MAX_NUMBER_BYTES``; args: its byte offset."""


def read_midi(
    source: str | Path | bytes, *, sustain: bool = True, all_track_tempos: bool = False
) -> Score:
    """Read a Standard MIDI File (a path or its bytes) into a ``Score``.

    ``sustain``: apply the sustain pedal (CC64) to note ends, as the reference does.
    ``all_track_tempos``: also obey tempo events outside track 0. The reference ignores them,
    which plays e.g. files whose only tempo event sits on track 1 at 120 qpm; off by default
    for parity with it (``Score.warnings`` says when it matters).
    Raises ``MidiError`` (one line, naming the file) unless it is a readable format 0/1/2 file
    with at least one note.
    """
    name, data = _read_source(source)
    fmt, ntracks, resolution, first_track = _check_header(name, data)
    try:
        tracks = _parse_tracks(data, first_track, ntracks)
    except _Fallback:
        tracks = _parse_tracks_mido(name, data)
    last_tick = max((last for _, last in tracks if last is not None), default=0)
    if last_tick + 1 > _MAX_TICK:  # pretty_midi's limit; such a file is corrupt
        raise MidiError(f"{name}: corrupt MIDI file (an event at tick {last_tick})")
    ignored = [t for t, (evs, _) in enumerate(tracks) if t and any(e[1] == _TEMPO for e in evs)]
    tempo_events = [e for evs, _ in tracks[: None if all_track_tempos else 1] for e in evs]
    tempo_events = sorted((e for e in tempo_events if e[1] == _TEMPO), key=itemgetter(0))
    to_time, tempos = _tempo_map(name, tempo_events, resolution)
    insts, unreleased = _collect_instruments(tracks)
    # Mutable note records; lists compare by value, as note-seq's protobuf notes do.
    notes = [
        [to_time(s), to_time(e), pitch, vel, inst.program, inst.channel == 9, i]
        for i, inst in enumerate(insts)
        for s, e, pitch, vel in inst.notes
    ]
    if not notes:
        detail = f" ({unreleased} note-on(s) never released)" if unreleased else ""
        raise MidiError(f"{name}: the file contains no notes{detail}")
    ccs = [
        ControlChange(to_time(tick), num, val, x.channel, i)
        for i, x in enumerate(insts)
        for tick, num, val in x.ccs
    ]
    bends = [
        PitchBend(to_time(t), b, x.channel, i) for i, x in enumerate(insts) for t, b in x.bends
    ]
    total_time = max(n[1] for n in notes)
    if sustain:
        pedal = [(c.time, c.value, c.instrument) for c in ccs if c.number == _SUSTAIN]
        total_time = _apply_sustain(notes, pedal, total_time)
    warnings = [f"{unreleased} note(s) never released were dropped"] if unreleased else []
    if fmt == 2:
        warnings.append(
            "format 2 (independent sequences): its tracks are played together, as format 1, "
            "as the reference and common players do"
        )
    if ignored and not all_track_tempos:
        tracks_ = ", ".join(map(str, ignored))
        warnings.append(f"tempo events on track(s) {tracks_} are ignored, as the reference does")
    counts = Counter(n[6] for n in notes)
    infos = [
        InstrumentInfo(i, x.track, x.channel, x.program, x.channel == 9, x.name, counts[i])
        for i, x in enumerate(insts)
    ]
    notes_ = [Note(*n) for n in notes]
    return Score(notes_, total_time, infos, ccs, bends, tempos, fmt, resolution, warnings)


def _read_source(source: str | Path | bytes) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    try:
        return str(source), Path(source).read_bytes()
    except FileNotFoundError:
        raise MidiError(f"{source}: file not found") from None
    except OSError as exc:  # a directory, no permission, ...
        raise MidiError(f"{source}: cannot read file ({exc.strerror or exc})") from None


def _check_header(name: str, data: bytes) -> tuple[int, int, int, int]:
    """Validate the MThd chunk; return (format, ntracks, resolution, offset of the first track)."""
    if not data:
        raise MidiError(f"{name}: empty file (0 bytes)")
    if data[:4] != b"MThd":
        kind = "a RIFF/RMID container" if data[:4] == b"RIFF" else "no MThd header"
        raise MidiError(f"{name}: not a MIDI file ({kind})")
    size = int.from_bytes(data[4:8], "big")
    if len(data) < 14 or size < 6:
        raise MidiError(f"{name}: truncated MIDI file (incomplete header)")
    # Format and track count unsigned (mido reads them signed: 32,768 tracks became "no tracks");
    # the division signed, as mido reads it: a set high bit means SMPTE timing.
    fmt, ntracks, division = struct.unpack(">HHh", data[8:14])
    if fmt not in (0, 1, 2):  # format 2 is read as format 1, as the reference and players do
        raise MidiError(f"{name}: unknown MIDI format {fmt} is not supported")
    if division <= 0:
        kind = "SMPTE time division is" if division else "a time division of 0 ticks is"
        raise MidiError(f"{name}: {kind} not supported")
    if ntracks == 0:
        raise MidiError(f"{name}: the file has no tracks")
    return fmt, ntracks, division, 8 + size


Track = tuple[list[tuple], int | None]  # (events, tick of the last message; None if empty)


def _parse_tracks(data: bytes, pos: int, ntracks: int) -> list[Track]:
    """Decode the MTrk chunks exactly as mido does, for the messages real files use.

    Raises ``_Fallback`` wherever mido might read differently or fail, so that mido decides.
    """
    tracks: list[Track] = []
    try:
        for _ in range(ntracks):
            if data[pos : pos + 4] != b"MTrk" or len(data) < pos + 8:
                raise _Fallback
            end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
            pos = start = pos + 8
            events: list[tuple] = []
            tick, last = 0, None
            while pos < end:
                delta, pos = _varint(data, pos)
                tick += delta
                status, pos = data[pos], pos + 1
                if status < 0x80:  # running status: this byte is the first data byte
                    if last is None or last >= 0xF0:  # mido's odd sysex running status
                        raise _Fallback
                    status, pos = last, pos - 1
                event = None
                if status < 0xF0:
                    last = status
                    short = 0xC0 <= status < 0xE0  # program change, channel pressure
                    d1, d2 = data[pos], 0 if short else data[pos + 1]
                    pos += 1 if short else 2
                    if d1 > 127 or d2 > 127:  # mido raises: the stream is misaligned or corrupt
                        raise _Fallback
                    event = _channel_event(tick, status, d1, d2)
                elif status in (0xFF, 0xF0, 0xF7):
                    if status == 0xFF:
                        mtype, pos = data[pos], pos + 1
                    else:
                        last = status  # mido lets sysex set the running status
                    length, pos = _varint(data, pos)
                    payload, pos = data[pos : pos + length], pos + length
                    if length > _MAX_MESSAGE or len(payload) < length:
                        raise _Fallback
                    if status == 0xFF:  # mido's own decoder: malformed metas fail as in mido
                        msg = build_meta_message(mtype, list(payload), delta)
                        tick += msg.time - delta  # mido drops the delta of unknown metas
                        event = _meta_event(tick, msg)
                    else:  # mido rejects sysex data bytes > 127 (bar a leading F0, trailing F7)
                        body = payload[payload[:1] == b"\xf0" : length - payload.endswith(b"\xf7")]
                        if any(b > 127 for b in body):
                            raise _Fallback
                else:  # system common / real-time bytes: rare, leave them to mido
                    raise _Fallback
                if event:
                    events.append(event)
            if pos != end:  # a message ran past the chunk: mido reads on and fails
                raise _Fallback
            tracks.append((events, tick if end > start else None))
    except Exception:  # out of data, or a meta message that mido's decoder rejects
        raise _Fallback from None
    return tracks


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next offset) of the variable-length number at ``pos``; a longer one than the spec
    allows is left to the mido path, which refuses it."""
    byte = data[pos]
    if byte < 0x80:  # one byte: nearly every delta time and length
        return byte, pos + 1
    value = byte & 0x7F
    for end in range(pos + 1, pos + _MAX_NUMBER_BYTES):
        byte = data[end]
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, end + 1
    raise _Fallback


def _channel_event(tick: int, status: int, d1: int, d2: int) -> tuple | None:
    kind, channel = status & 0xF0, status & 0x0F
    if kind == 0x90 and d2:
        return (tick, _ON, channel, d1, d2)
    if kind <= 0x90:  # note-off, or note-on with velocity 0
        return (tick, _OFF, channel, d1, d2)
    if kind in (0xB0, 0xC0):
        return (tick, _CC if kind == 0xB0 else _PROGRAM, channel, d1, d2)
    if kind == 0xE0:
        return (tick, _BEND, channel, (d1 | d2 << 7) - 8192, 0)
    return None  # aftertouch, channel pressure


def _meta_event(tick: int, msg: mido.MetaMessage) -> tuple | None:
    if msg.type == "set_tempo":
        return (tick, _TEMPO, 0, msg.tempo, 0)
    return (tick, _NAME, 0, msg.name, 0) if msg.type == "track_name" else None


def _parse_tracks_mido(name: str, data: bytes) -> list[Track]:
    """The slow, complete path: mido decodes (or rejects) the file, as it does for pretty_midi,
    track by track (``_mido_track``), with the header's unsigned track count."""
    _, ntracks, _, first = _check_header(name, data)
    infile = io.BytesIO(data)
    infile.seek(first)
    try:
        with meta_charset("latin1"):
            midi_tracks = [_mido_track(infile) for _ in range(ntracks)]
    except EOFError:
        raise MidiError(f"{name}: truncated MIDI file (unexpected end of data)") from None
    except _LongNumber as exc:
        raise MidiError(
            f"{name}: corrupt MIDI file (a variable-length number longer than "
            f"{_MAX_NUMBER_BYTES} bytes at byte {exc.args[0]})"
        ) from None
    except Exception as exc:  # mido raises OSError, ValueError, KeyError, ... on corrupt data
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise MidiError(f"{name}: corrupt MIDI file ({reason})") from None
    tracks: list[Track] = []
    for track in midi_tracks:
        events, tick = [], 0
        for msg in track:
            tick += msg.time
            if msg.is_meta:
                events.append(_meta_event(tick, msg))
            elif hasattr(msg, "channel"):  # decode its bytes as the fast path does
                events.append(_channel_event(tick, *(msg.bytes() + [0])[:3]))
        tracks.append(([e for e in events if e], tick if len(track) else None))
    return tracks


def _mido_track(infile: io.BytesIO) -> list:
    """mido 1.3's ``read_track`` (clip=False, as pretty_midi reads), message for message, except
    that its variable-length numbers go through ``_read_number``: mido's own reader has no length
    cap and a cost quadratic in the length."""
    kind, size = mido_io.read_chunk_header(infile)
    if kind != b"MTrk":
        raise OSError("no MTrk header at start of track")
    start, last_status, track = infile.tell(), None, []
    while infile.tell() - start != size:  # mido reads past a chunk's end when a message overruns
        delta = _read_number(infile)
        status = mido_io.read_byte(infile)
        peek = []
        if status < 0x80:  # running status: this byte is the first data byte
            if last_status is None:
                raise OSError("running status without last_status")
            peek, status = [status], last_status
        elif status != 0xFF:  # meta messages do not set the running status
            last_status = status
        if status == 0xFF:
            mtype = mido_io.read_byte(infile)
            payload = mido_io.read_bytes(infile, _read_number(infile))
            track.append(build_meta_message(mtype, payload, delta))
        elif status in (0xF0, 0xF7):
            body = mido_io.read_bytes(infile, _read_number(infile))
            if body[:1] == [0xF0]:  # mido strips a leading F0 and a trailing F7
                body = body[1:]
            if body[-1:] == [0xF7]:
                body = body[:-1]
            track.append(mido.Message("sysex", data=body, time=delta))
        else:
            track.append(mido_io.read_message(infile, status, peek, delta, clip=False))
    return track


def _read_number(infile: io.BytesIO) -> int:
    """A variable-length number of at most ``_MAX_NUMBER_BYTES`` bytes (``_LongNumber`` if not)."""
    at = infile.tell()
    value = 0
    for _ in range(_MAX_NUMBER_BYTES):
        byte = mido_io.read_byte(infile)
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value
    raise _LongNumber(at)


def _tempo_map(name: str, tempo_events: list[tuple], resolution: int):
    """pretty_midi's tick → seconds map, with its exact float operations (so times agree).

    Returns (to_time, tempos). A tempo event at tick 0 replaces the default 120 qpm; a repeat of
    the current tempo is dropped.
    """
    scales = [(0, 60.0 / (120.0 * resolution))]
    for tick, _, _, tempo, _ in tempo_events:
        if tempo == 0:
            raise MidiError(f"{name}: corrupt MIDI file (a tempo of 0 µs per quarter note)")
        scale = 60.0 / ((6e7 / tempo) * resolution)
        if tick == 0:
            scales = [(0, scale)]
        elif scale != scales[-1][1]:
            scales.append((tick, scale))
    starts = [tick for tick, _ in scales]
    # Seconds at each tempo change, accumulated as pretty_midi's _update_tick_to_time does.
    offsets = [0.0]
    for (t0, s0), (t1, _) in zip(scales[:-1], scales[1:], strict=True):
        offsets.append(offsets[-1] + s0 * (t1 - t0))

    def to_time(tick: int) -> float:
        i = bisect.bisect_right(starts, tick) - 1
        return offsets[i] + scales[i][1] * (tick - starts[i])

    tempos = [(offsets[i], 60.0 / (s * resolution)) for i, (_, s) in enumerate(scales)]
    return to_time, tempos


class _Inst:
    """pretty_midi's Instrument while it is being filled (ticks, not seconds)."""

    __slots__ = ("program", "channel", "track", "name", "notes", "ccs", "bends")

    def __init__(self, program: int, channel: int, track: int, name: str) -> None:
        self.program, self.channel, self.track, self.name = program, channel, track, name
        self.notes: list[tuple[int, int, int, int]] = []  # (start, end, pitch, velocity)
        self.ccs: list[tuple[int, int, int]] = []  # (tick, number, value)
        self.bends: list[tuple[int, int]] = []  # (tick, bend)


def _collect_instruments(tracks: list[Track]) -> tuple[list[_Inst], int]:
    """Mirror of pretty_midi's PrettyMIDI._load_instruments; returns (instruments, #unreleased)."""
    insts: dict[tuple[int, int, int], _Inst] = {}  # (program, channel, track), creation order
    stragglers: dict[tuple[int, int], _Inst] = {}  # (channel, track): events before any note
    unreleased = 0

    def get(program: int, channel: int, track: int, create: bool, name: str) -> _Inst:
        inst = insts.get((program, channel, track))
        if inst is not None:
            return inst
        early = stragglers.get((channel, track))
        if early is not None and not create:
            return early
        inst = _Inst(program, channel, track, name)
        if create:
            if early is not None:  # the same lists, not copies: later events land in both
                inst.ccs, inst.bends = early.ccs, early.bends
            insts[(program, channel, track)] = inst
        else:
            stragglers[(channel, track)] = inst
        return inst

    for t, (events, _) in enumerate(tracks):
        name = ""
        programs = [0] * 16
        open_notes: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (ch, key) → (tick, vel)
        for tick, kind, ch, a, b in events:
            if kind == _ON:
                open_notes.setdefault((ch, a), []).append((tick, b))
            elif kind == _OFF:
                opened = open_notes.get((ch, a))
                if opened is None:  # a stray note-off
                    continue
                # Closes every open note of this key, except one that began on this very tick
                # (it stays open only if an older note was closed; otherwise it is dropped).
                close = [(s, v) for s, v in opened if s != tick]
                keep = [(s, v) for s, v in opened if s == tick]
                if close:
                    inst = get(programs[ch], ch, t, True, name)
                    inst.notes.extend((s, tick, a, v) for s, v in close)
                if close and keep:
                    open_notes[(ch, a)] = keep
                else:
                    del open_notes[(ch, a)]
            elif kind == _CC:
                get(programs[ch], ch, t, False, name).ccs.append((tick, a, b))
            elif kind == _PROGRAM:
                programs[ch] = a
            elif kind == _BEND:
                get(programs[ch], ch, t, False, name).bends.append((tick, a))
            elif kind == _NAME:
                name = a
        unreleased += sum(map(len, open_notes.values()))
    return list(insts.values()), unreleased


def _apply_sustain(notes: list[list], pedal: list[tuple[float, int, int]], total: float) -> float:
    """note_seq 0.0.5 ``apply_sustain_control_changes``, step for step, on ``notes`` in place.

    ``notes``: [start, end, pitch, velocity, program, is_drum, instrument] records in note-seq
    order; ``pedal``: (time, value, instrument) of CC64. Returns the new total time.
    """
    down_, up_, on_, off_ = range(4)  # note-seq's order of events at equal times
    events = [(n[0], on_, n) for n in notes if not n[5]]
    events += [(n[1], off_, n) for n in notes if not n[5]]
    events += [(time, down_ if value >= 64 else up_, inst) for time, value, inst in pedal]
    events.sort(key=itemgetter(0, 1))  # stable: ties keep the order above
    active: dict[int, list[list]] = defaultdict(list)
    held: dict[int, bool] = defaultdict(bool)
    time = 0.0
    for time, kind, ev in events:
        if kind == down_:
            held[ev] = True
        elif kind == up_:
            held[ev] = False
            still = []
            for n in active[ev]:
                if n[1] < time:  # released under the pedal: ends now
                    n[1] = time
                    total = max(total, time)
                else:
                    still.append(n)
            active[ev] = still
        elif kind == on_:
            inst = ev[6]
            if held[inst]:  # a new onset under the pedal ends the same pitch's earlier notes
                still = []
                for n in active[inst]:
                    if n[2] == ev[2]:
                        n[1] = time
                        if n[0] == n[1]:  # two onsets at once: note-seq keeps one
                            notes.remove(n)
                    else:
                        still.append(n)
                active[inst] = still
            active[inst].append(ev)
        elif not held[ev[6]] and ev in active[ev[6]]:  # note-off without pedal
            active[ev[6]].remove(ev)
    for still in active.values():  # pedal never released: last event's time
        for n in still:
            n[1] = time
            total = time
    return total


def truncate_score(score: Score, seconds: float) -> Score:
    """The first ``seconds`` of a score: notes starting before it, their ends cut there.
    MidiError when no note starts in that span."""
    import dataclasses

    notes = [
        dataclasses.replace(n, end=min(n.end, seconds)) for n in score.notes if n.start < seconds
    ]
    if not notes:
        raise MidiError(f"no notes start in the first {seconds:g} s")
    return dataclasses.replace(score, notes=notes, total_time=seconds)
