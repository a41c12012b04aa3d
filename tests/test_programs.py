"""General MIDI names, aliases, swaps and the model's program mapping."""

from __future__ import annotations

import re

import pytest

from midisynth.programs import (
    ALIASES,
    DEFAULT_PROGRAM_MAP,
    GM_DRUM_NAMES,
    GM_PROGRAM_NAMES,
    PROGRAM_MAPS,
    SLAKH_CLASS_PROGRAMS,
    ProgramMap,
    drum_name,
    get_program_map,
    mapping_table,
    parse_program,
    parse_swap,
    program_name,
)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def test_gm_names_are_complete_and_distinct():
    assert len(GM_PROGRAM_NAMES) == 128
    assert len({_norm(n) for n in GM_PROGRAM_NAMES}) == 128
    assert program_name(0) == "Acoustic Grand Piano"
    assert program_name(42) == "Cello"
    assert program_name(127) == "Gunshot"
    with pytest.raises(ValueError):
        program_name(128)


@pytest.mark.parametrize(
    ("text", "program"),
    [
        ("Acoustic Grand Piano", 0),
        ("acoustic_grand_piano", 0),
        ("  ACOUSTIC GRAND PIANO ", 0),
        ("Electric Guitar (jazz)", 26),
        ("electric-guitar-jazz", 26),
        ("ElectricGuitarJazz", 26),
        ("Honky-tonk Piano", 3),
        ("lead 8 (bass + lead)", 87),
        ("piano", 0),
        ("Piano", 0),
        ("cello", 42),
        ("violin", 40),
        ("guitar", 24),
        ("bass", 33),
        ("flute", 73),
        ("trumpet", 56),
        ("sax", 65),
        ("organ", 16),
        ("strings", 48),
        ("choir", 52),
        ("synth_pad", 88),
        ("0", 0),
        ("42", 42),
        (" 127 ", 127),
    ],
)
def test_parse_program(text, program):
    assert parse_program(text) == program


def test_every_alias_resolves_to_itself():
    for alias, program in ALIASES.items():
        assert parse_program(alias) == program
        assert parse_program(alias.upper().replace(" ", "_")) == program


def test_parse_program_rejects_out_of_range_numbers():
    for text in ("128", "-1", "1000"):
        with pytest.raises(ValueError, match=r"0\.\.127"):
            parse_program(text)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean: Cello") as e:
        parse_program("celo")
    assert "'celo'" in str(e.value)
    with pytest.raises(ValueError, match="Violin"):
        parse_program("violn")
    with pytest.raises(ValueError, match="unknown program 'qqqq'"):
        parse_program("qqqq")


def test_drums_are_not_a_program():
    with pytest.raises(ValueError, match="channel 10"):
        parse_program("drums")


def test_parse_swap():
    assert parse_swap("piano=cello") == (0, 42)
    assert parse_swap(" 73 = Electric Piano 1 ") == (73, 4)
    for bad in ("piano", "=cello", "piano=", "piano=nothing"):
        with pytest.raises(ValueError):
            parse_swap(bad)


def test_names_match_pretty_midi():
    constants = pytest.importorskip("pretty_midi.constants")
    for program, name in enumerate(constants.INSTRUMENT_MAP):
        assert parse_program(name) == program, name  # alternative spellings included
    for pitch, name in enumerate(constants.DRUM_MAP, start=35):
        assert _norm(GM_DRUM_NAMES[pitch]) == _norm(name)


def test_drum_names():
    assert drum_name(36) == "Bass Drum 1"
    assert drum_name(42) == "Closed Hi-Hat"
    assert drum_name(20) == "Drum 20"


# ---- program maps --------------------------------------------------------------------------------


def test_slakh_map_follows_the_largest_class_program_rule():
    slakh = PROGRAM_MAPS["slakh"]
    assert DEFAULT_PROGRAM_MAP is slakh
    for program in SLAKH_CLASS_PROGRAMS.values():
        assert slakh(program) == program
    # Consequences listed in spec §3.2.
    expected = {
        **dict.fromkeys(range(1, 4), 0),
        **dict.fromkeys(range(5, 8), 4),
        **dict.fromkeys(range(9, 16), 8),
        **dict.fromkeys(range(17, 24), 16),
        25: 24,
        27: 26,
        28: 26,
        30: 29,
        31: 29,
        **dict.fromkeys(range(34, 40), 33),
        44: 43,
        45: 43,
        49: 48,
        51: 50,
        53: 52,
        54: 52,
        59: 58,
        62: 61,
        63: 61,
        65: 64,
        72: 71,
        **dict.fromkeys(range(74, 80), 73),
        **dict.fromkeys(range(81, 88), 80),
        **dict.fromkeys(range(88, 128), 88),
    }
    for program, mapped in expected.items():
        assert slakh(program) == mapped, program


def test_slakh_map_matches_diffusers():
    pytest.importorskip("note_seq")
    mu = pytest.importorskip("diffusers.pipelines.deprecated.spectrogram_diffusion.midi_utils")
    assert PROGRAM_MAPS["slakh"].table == tuple(mu.program_to_slakh_program(p) for p in range(128))
    assert SLAKH_CLASS_PROGRAMS == mu.SLAKH_CLASS_PROGRAMS


def test_other_maps_and_registry():
    assert PROGRAM_MAPS["identity"].table == tuple(range(128))
    assert PROGRAM_MAPS["midi_class"](13) == 8
    assert get_program_map("identity") is PROGRAM_MAPS["identity"]
    custom = ProgramMap.from_classes("mine", {"Keys": 0, "Strings": 40})
    assert get_program_map(custom) is custom
    assert custom(39) == 0 and custom(127) == 40 and custom.target_name(40) == "Strings"
    with pytest.raises(ValueError, match="slakh"):
        get_program_map("nope")
    with pytest.raises(ValueError):
        ProgramMap("short", (0,) * 127)
    with pytest.raises(ValueError):
        ProgramMap.from_classes("no zero", {"Strings": 40})


def test_mapping_table_rows():
    rows = mapping_table("slakh")
    assert len(rows) == 128
    number, name, mapped, mapped_name = rows[95]  # rows unpack like tuples (cli does this)
    assert (number, name, mapped, mapped_name) == (95, "Pad 8 (sweep)", 88, "Synth Pad")
    assert rows[59].mapped_name == "Tuba"
    assert mapping_table("identity")[95].mapped_name == "Pad 8 (sweep)"
