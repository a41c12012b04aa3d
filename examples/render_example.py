"""Render an example with the Python API. Run: python examples/render_example.py"""

import sys
from pathlib import Path

import midisynth
from midisynth.audio import write_audio
from midisynth.midi import MidiError
from midisynth.weights import ModelError

try:
    model = midisynth.load_model()  # the bundled default model (or "official", or a folder)
    options = midisynth.RenderOptions(program_swaps=((0, 42),), seed=1)  # piano → cello
    song = midisynth.render(model, Path(__file__).parent / "melody_chords.mid", options)
    write_audio("melody_chords_cello.wav", song.audio, song.sample_rate)
except (ModelError, MidiError, ValueError, OSError) as e:  # no model, a bad file, a full disk
    sys.exit(f"error: {e}")
print("wrote melody_chords_cello.wav")
