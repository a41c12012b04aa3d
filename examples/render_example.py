"""Render an example with the Python API (10 lines). Run: python examples/render_example.py"""

from pathlib import Path

import midisynth
from midisynth.audio import write_audio

model = midisynth.load_model()  # the bundled default model (or "official", or a folder)
options = midisynth.RenderOptions(program_swaps=((0, 42),), seed=1)  # piano → cello
song = midisynth.render(model, Path(__file__).parent / "melody_chords.mid", options)
write_audio("melody_chords_cello.wav", song.audio, song.sample_rate)
