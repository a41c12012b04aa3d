"""General MIDI program names and the model's program mapping.

Three things live here, all pure Python:

* the 128 General MIDI (GM 1) program names and the short aliases people type
  (``piano``, ``cello``, ``sax`` ...), with :func:`parse_program` / :func:`parse_swap` for the
  ``--program piano=cello`` option. Names match case-, space-, underscore-, hyphen- and
  bracket-insensitively: ``"Electric Guitar (jazz)"``, ``"electric_guitar_jazz"`` and
  ``"ElectricGuitarJazz"`` are the same program;
* the GM percussion key names (channel 10 note numbers 35..81), for display;
* :class:`ProgramMap`: how a model folds the 128 GM programs onto the instruments it was trained on.
  The released spectrogram-diffusion model uses the Slakh-class table (spec §3.2): a program maps to
  the largest class program ≤ it, so e.g. all pads, FX and ethnic instruments (88..127) become
  "Synth Pad" (88). Other models register their own table in :data:`PROGRAM_MAPS`.

Program numbers are 0-based everywhere (0 = Acoustic Grand Piano), as in MIDI files.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "GM_PROGRAM_NAMES",
    "GM_DRUM_NAMES",
    "ALIASES",
    "SLAKH_CLASS_PROGRAMS",
    "ProgramMap",
    "PROGRAM_MAPS",
    "DEFAULT_PROGRAM_MAP",
    "ProgramRow",
    "program_name",
    "drum_name",
    "parse_program",
    "parse_swap",
    "get_program_map",
    "mapping_table",
]

NUM_PROGRAMS = 128

# fmt: off
GM_PROGRAM_NAMES: tuple[str, ...] = (
    # 0-7 piano
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet",
    # 8-15 chromatic percussion
    "Celesta", "Glockenspiel", "Music Box", "Vibraphone",
    "Marimba", "Xylophone", "Tubular Bells", "Dulcimer",
    # 16-23 organ
    "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ",
    "Reed Organ", "Accordion", "Harmonica", "Tango Accordion",
    # 24-31 guitar
    "Acoustic Guitar (nylon)", "Acoustic Guitar (steel)", "Electric Guitar (jazz)",
    "Electric Guitar (clean)", "Electric Guitar (muted)", "Overdriven Guitar",
    "Distortion Guitar", "Guitar Harmonics",
    # 32-39 bass
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass",
    "Slap Bass 1", "Slap Bass 2", "Synth Bass 1", "Synth Bass 2",
    # 40-47 strings
    "Violin", "Viola", "Cello", "Contrabass",
    "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
    # 48-55 ensemble
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2",
    "Choir Aahs", "Voice Oohs", "Synth Voice", "Orchestra Hit",
    # 56-63 brass
    "Trumpet", "Trombone", "Tuba", "Muted Trumpet",
    "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2",
    # 64-71 reed
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax",
    "Oboe", "English Horn", "Bassoon", "Clarinet",
    # 72-79 pipe
    "Piccolo", "Flute", "Recorder", "Pan Flute",
    "Blown Bottle", "Shakuhachi", "Whistle", "Ocarina",
    # 80-87 synth lead
    "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)", "Lead 4 (chiff)",
    "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)", "Lead 8 (bass + lead)",
    # 88-95 synth pad
    "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)", "Pad 4 (choir)",
    "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    # 96-103 synth effects
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
    "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)",
    # 104-111 ethnic
    "Sitar", "Banjo", "Shamisen", "Koto",
    "Kalimba", "Bagpipe", "Fiddle", "Shanai",
    # 112-119 percussive
    "Tinkle Bell", "Agogo", "Steel Drums", "Woodblock",
    "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal",
    # 120-127 sound effects
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet",
    "Telephone Ring", "Helicopter", "Applause", "Gunshot",
)

# GM percussion key map (MIDI channel 10): note number -> name.
GM_DRUM_NAMES: dict[int, str] = dict(enumerate((
    "Acoustic Bass Drum", "Bass Drum 1", "Side Stick", "Acoustic Snare", "Hand Clap",
    "Electric Snare", "Low Floor Tom", "Closed Hi-Hat", "High Floor Tom", "Pedal Hi-Hat",
    "Low Tom", "Open Hi-Hat", "Low-Mid Tom", "Hi-Mid Tom", "Crash Cymbal 1",
    "High Tom", "Ride Cymbal 1", "Chinese Cymbal", "Ride Bell", "Tambourine",
    "Splash Cymbal", "Cowbell", "Crash Cymbal 2", "Vibraslap", "Ride Cymbal 2",
    "Hi Bongo", "Low Bongo", "Mute Hi Conga", "Open Hi Conga", "Low Conga",
    "High Timbale", "Low Timbale", "High Agogo", "Low Agogo", "Cabasa",
    "Maracas", "Short Whistle", "Long Whistle", "Short Guiro", "Long Guiro",
    "Claves", "Hi Wood Block", "Low Wood Block", "Mute Cuica", "Open Cuica",
    "Mute Triangle", "Open Triangle",
), start=35))

# Short names people type, and common alternative spellings of GM names -> program.
# Where a family has several programs the alias picks the plain, most common one.
ALIASES: dict[str, int] = {
    "piano": 0, "grand piano": 0, "acoustic piano": 0, "bright piano": 1, "honky tonk": 3,
    "electric piano": 4, "epiano": 4, "rhodes": 4, "clavi": 7, "clav": 7,
    "celeste": 8, "glock": 9, "vibes": 11, "bells": 14, "chimes": 14,
    "organ": 16, "hammond": 16, "pipe organ": 19,
    "guitar": 24, "acoustic guitar": 24, "nylon guitar": 24, "classical guitar": 24,
    "steel guitar": 25, "jazz guitar": 26, "electric guitar": 27, "clean guitar": 27,
    "muted guitar": 28, "overdrive": 29, "distortion": 30, "distorted guitar": 30,
    "bass": 33, "upright bass": 32, "electric bass": 33, "bass guitar": 33, "pick bass": 34,
    "slap bass": 36, "synth bass": 38,
    "double bass": 43, "tremolo": 44, "pizzicato": 45, "harp": 46,
    "strings": 48, "string ensemble": 48, "synth strings": 50,
    "choir": 52, "voice": 53, "synth choir": 54, "orchestra hit": 55, "orchestral hit": 55,
    "horn": 60, "brass": 61, "synth brass": 62,
    "sax": 65, "saxophone": 65, "bari sax": 67, "cor anglais": 69,
    "pan pipes": 75, "panpipes": 75, "bottle": 76,
    "lead": 80, "synth lead": 80, "square": 80, "square lead": 80, "saw": 81, "sawtooth": 81,
    "saw lead": 81, "calliope": 82,
    "pad": 88, "synth pad": 88, "new age": 88, "warm pad": 89, "polysynth": 90,
    "bag pipe": 109, "bagpipes": 109, "shehnai": 111, "steel drum": 114, "steelpan": 114,
    "wood block": 115, "taiko": 116,
}
# fmt: on

# Words that name the drum kit, which is MIDI channel 10, not a program.
_DRUM_WORDS = frozenset({"drum", "drums", "drumkit", "kit", "percussion"})


def _key(name: str) -> str:
    """Normalise a name for matching: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _build_lookup() -> dict[str, int]:
    lookup = {_key(name): p for p, name in enumerate(GM_PROGRAM_NAMES)}
    for alias, p in ALIASES.items():
        key = _key(alias)
        if lookup.get(key, p) != p:
            raise AssertionError(f"alias {alias!r} clashes with a GM name")
        lookup[key] = p
    # GM names without their bracketed variant ("lead 1", "pad 8") and numbered families without
    # the number ("string ensemble" is an alias already) are left out on purpose: ambiguous.
    return lookup


_LOOKUP: dict[str, int] = _build_lookup()


def program_name(program: int) -> str:
    """The GM name of a 0-based program number, e.g. ``program_name(42) == "Cello"``."""
    if not 0 <= program < NUM_PROGRAMS:
        raise ValueError(f"program must be in 0..127, got {program}")
    return GM_PROGRAM_NAMES[program]


def drum_name(pitch: int) -> str:
    """The GM percussion name of a channel-10 note, or ``"Drum <n>"`` outside the GM key map."""
    return GM_DRUM_NAMES.get(pitch, f"Drum {pitch}")


def _close_matches(key: str, limit: int = 5) -> list[str]:
    """Display names whose keys contain ``key`` or are spelled like it, best first."""
    names = {_key(n): n for n in GM_PROGRAM_NAMES}
    names.update({_key(a): a for a in ALIASES})
    hits = [names[k] for k in names if key and key in k]
    hits += [names[k] for k in difflib.get_close_matches(key, names, n=limit, cutoff=0.6)]
    return list(dict.fromkeys(hits))[:limit]


def parse_program(text: str) -> int:
    """A program number from a GM name, an alias or a number (0-based).

    >>> parse_program("cello"), parse_program("Acoustic_Guitar (steel)"), parse_program("73")
    (42, 25, 73)

    Raises:
        ValueError: unknown name (the message lists close matches) or a number outside 0..127.
    """
    s = text.strip()
    if re.fullmatch(r"[+-]?\d+", s):
        p = int(s)
        if not 0 <= p < NUM_PROGRAMS:
            raise ValueError(
                f"program number must be in 0..127 (0 = Acoustic Grand Piano), got {p}"
            )
        return p
    key = _key(s)
    if key in _LOOKUP:
        return _LOOKUP[key]
    if key in _DRUM_WORDS:
        raise ValueError(
            f"{text!r} is not a program: drums are the notes on MIDI channel 10, not a GM program"
        )
    close = _close_matches(key)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown program {text!r}{hint} (give a GM name, an alias such as 'piano', or 0..127; "
        "`midisynth programs` lists them)"
    )


def parse_swap(text: str) -> tuple[int, int]:
    """Parse a program swap ``"FROM=TO"``, e.g. ``parse_swap("piano=cello") == (0, 42)``."""
    src, sep, dst = text.partition("=")
    if not sep or not src.strip() or not dst.strip():
        raise ValueError(f"program swap must look like FROM=TO (e.g. piano=cello), got {text!r}")
    return parse_program(src), parse_program(dst)


# --------------------------------------------------------------------------------------------
# Program mappings (what a model does with the 128 programs)
# --------------------------------------------------------------------------------------------

# The released model's instrument classes (Slakh2100 classes, spec §3.2), class -> program.
SLAKH_CLASS_PROGRAMS: dict[str, int] = {
    "Acoustic Piano": 0,
    "Electric Piano": 4,
    "Chromatic Percussion": 8,
    "Organ": 16,
    "Acoustic Guitar": 24,
    "Clean Electric Guitar": 26,
    "Distorted Electric Guitar": 29,
    "Acoustic Bass": 32,
    "Electric Bass": 33,
    "Violin": 40,
    "Viola": 41,
    "Cello": 42,
    "Contrabass": 43,
    "Orchestral Harp": 46,
    "Timpani": 47,
    "String Ensemble": 48,
    "Synth Strings": 50,
    "Choir and Voice": 52,
    "Orchestral Hit": 55,
    "Trumpet": 56,
    "Trombone": 57,
    "Tuba": 58,
    "French Horn": 60,
    "Brass Section": 61,
    "Soprano/Alto Sax": 64,
    "Tenor Sax": 66,
    "Baritone Sax": 67,
    "Oboe": 68,
    "English Horn": 69,
    "Bassoon": 70,
    "Clarinet": 71,
    "Pipe": 73,
    "Synth Lead": 80,
    "Synth Pad": 88,
}


@dataclass(frozen=True)
class ProgramMap:
    """How a model folds GM programs onto the instruments it knows (non-drum notes only).

    Attributes:
        name: registry name, e.g. ``"slakh"``.
        table: 128 entries; ``table[p]`` is the program the model is given for GM program ``p``.
        class_names: optional display names of the target programs (e.g. 88 -> "Synth Pad").
        description: one line for ``midisynth programs``.
    """

    name: str
    table: tuple[int, ...]
    class_names: Mapping[int, str] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.table) != NUM_PROGRAMS or not all(0 <= p < NUM_PROGRAMS for p in self.table):
            raise ValueError(f"program map {self.name!r} needs 128 entries in 0..127")

    def __call__(self, program: int) -> int:
        return self.table[program]

    def target_name(self, program: int) -> str:
        """Display name of a mapped program: its class name if the map has one, else GM name."""
        if self.class_names and program in self.class_names:
            return self.class_names[program]
        return program_name(program)

    @classmethod
    def from_classes(
        cls, name: str, classes: Mapping[str, int], description: str = ""
    ) -> ProgramMap:
        """Build the "largest class program ≤ p" table from class name -> first program."""
        starts = sorted(classes.values())
        if not starts or starts[0] != 0:
            raise ValueError("class programs must include 0 so that every program has a class")
        table = tuple(max(s for s in starts if s <= p) for p in range(NUM_PROGRAMS))
        return cls(name, table, {p: c for c, p in classes.items()}, description)


PROGRAM_MAPS: dict[str, ProgramMap] = {
    "slakh": ProgramMap.from_classes(
        "slakh",
        SLAKH_CLASS_PROGRAMS,
        "released spectrogram-diffusion model: each program -> largest Slakh class program <= it",
    ),
    "identity": ProgramMap(
        "identity", tuple(range(NUM_PROGRAMS)), description="every program as written in the file"
    ),
    "midi_class": ProgramMap(
        "midi_class",
        tuple(8 * (p // 8) for p in range(NUM_PROGRAMS)),
        description="first program of each 8-program GM family",
    ),
}
DEFAULT_PROGRAM_MAP = PROGRAM_MAPS["slakh"]


def get_program_map(program_map: str | ProgramMap) -> ProgramMap:
    """Look up a registered program map by name (a :class:`ProgramMap` passes through)."""
    if isinstance(program_map, ProgramMap):
        return program_map
    try:
        return PROGRAM_MAPS[program_map]
    except KeyError:
        known = ", ".join(PROGRAM_MAPS)
        raise ValueError(f"unknown program map {program_map!r}; known: {known}") from None


class ProgramRow(NamedTuple):
    """One row of ``midisynth programs``: a GM program and what the model renders it as."""

    program: int
    name: str
    mapped_program: int
    mapped_name: str


def mapping_table(program_map: str | ProgramMap = DEFAULT_PROGRAM_MAP) -> list[ProgramRow]:
    """The 128 GM programs with the program each is mapped to by ``program_map``."""
    pm = get_program_map(program_map)
    return [
        ProgramRow(p, GM_PROGRAM_NAMES[p], pm(p), pm.target_name(pm(p)))
        for p in range(NUM_PROGRAMS)
    ]
