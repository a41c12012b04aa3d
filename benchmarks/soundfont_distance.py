"""How far apart are two real SoundFonts, on the metrics ``midisynth evaluate`` uses?

    python benchmarks/soundfont_distance.py HELDOUT_MIDI [--other PATH.sf2] [--max-seconds 20]

Renders every MIDI file with FluidSynth twice — the evaluation's reference SoundFont (FluidR3_GM,
or $MIDISYNTH_SOUNDFONT) and ``--other`` (default: MuseScore General) — and scores the second
against the first as ``evaluate`` scores a model: the first ``--max-seconds`` of each, loudness
matched, Fréchet distances over the pooled aisfx and mel-stats embeddings. It puts a model's
distance in scale: a model that rendered exactly like another good SoundFont would score this.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from midisynth import audio
from midisynth.eval_tools import AisfxEmbedder, FluidSynthReference
from midisynth.evaluate import _match_loudness
from midisynth.metrics import frechet_distance, mel_stats_embedding

MUSESCORE = "/usr/share/sounds/sf2/MuseScore_General_Full.sf2"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("midi", type=Path, help="folder of MIDI files")
    ap.add_argument("--other", default=MUSESCORE, help="the SoundFont compared with the reference")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    args = ap.parse_args(argv)
    files = sorted(p for p in args.midi.iterdir() if p.suffix.lower() in (".mid", ".midi"))
    ref_synth, other_synth = FluidSynthReference(), FluidSynthReference(args.other)
    aisfx = AisfxEmbedder()
    pools: dict[str, dict[str, list]] = {e: {"ref": [], "other": []} for e in ("aisfx", "mel")}
    n = round(args.max_seconds * audio.SAMPLE_RATE)
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            ref = audio.read_audio(ref_synth(f, Path(tmp) / f"{f.stem}.ref.wav"))[:n]
            other = audio.read_audio(other_synth(f, Path(tmp) / f"{f.stem}.other.wav"))
            k = min(len(ref), len(other))
            other, _ = _match_loudness(other[:k], audio.loudness_lufs(ref[:k]))
            for name, w in (("ref", ref[:k]), ("other", other)):
                pools["aisfx"][name].append(aisfx(w.numpy()))
                pools["mel"][name].append(mel_stats_embedding(audio.log_mel(w).numpy()))
    for e, label in (("aisfx", "aisfx"), ("mel", "mel-stats")):
        x, y = (np.concatenate(pools[e][s]) for s in ("ref", "other"))
        print(f"Fréchet distance, {label}: {frechet_distance(x, y):.1f} ({len(x)} embeddings)")
    print(
        f"{len(files)} files; reference {ref_synth.soundfont.name}, other {Path(args.other).name}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
