"""Where a model's Fréchet distances come from: means or spread, and which files.

    python benchmarks/fd_breakdown.py HELDOUT_MIDI --model weights/frame-s \
        [--inverter vocoder-p] [--max-seconds 20] [--seed 0] [--texture 0.3]

Renders each file's first ``--max-seconds`` (cut there, no tail) as ``midisynth evaluate`` does,
against FluidSynth + FluidR3_GM references (or ``<name>.wav`` beside the MIDI file), loudness
matched, in float audio. For the aisfx and mel-stats embeddings it prints the pooled Fréchet
distance split into its mean term ‖μ_ref − μ_model‖² and the rest (the covariances), then per file
the squared distance between the file's mean embedding and its reference's, and the spread
(summed variance) of each within the file. Needs the eval extra (aisfx), as ``evaluate``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from midisynth import audio, weights
from midisynth.eval_tools import AisfxEmbedder, FluidSynthReference
from midisynth.evaluate import _match_loudness
from midisynth.metrics import frechet_distance, mel_stats_embedding
from midisynth.midi import read_midi, truncate_score
from midisynth.render import RenderOptions, render


def breakdown(ref: list[np.ndarray], gen: list[np.ndarray]) -> dict:
    """{"fd", "mean_term", "cov_term", "files": [(mean distance², var ref, var model)]} of
    per-file embedding arrays [n_i, d] (reference and generated, same files in order)."""
    r, g = np.concatenate(ref), np.concatenate(gen)
    fd = frechet_distance(r, g)
    mean_term = float(((r.mean(0) - g.mean(0)) ** 2).sum())
    files = [
        (float(((a.mean(0) - b.mean(0)) ** 2).sum()), float(a.var(0).sum()), float(b.var(0).sum()))
        for a, b in zip(ref, gen, strict=True)
    ]
    return {"fd": fd, "mean_term": mean_term, "cov_term": fd - mean_term, "files": files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("midi", type=Path, help="a folder of MIDI files (or one file)")
    ap.add_argument("--model", default="frame-s")
    ap.add_argument("--inverter", default=None, help="default: the model's")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--texture", type=float, default=None, help="frame models: dither (nats)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted(args.midi.glob("*.mid")) if args.midi.is_dir() else [args.midi]
    if not files:
        print(f"no .mid files in {args.midi}", file=sys.stderr)
        return 2
    model = weights.load_model(args.model, device="cpu", dtype="float32")
    options = RenderOptions(inverter=args.inverter, tail=0.0, seed=args.seed, texture=args.texture)
    aisfx, synth = AisfxEmbedder(), None
    emb: dict[str, dict[str, list]] = {"aisfx": {"ref": [], "gen": []}}
    emb["mel-stats"] = {"ref": [], "gen": []}
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            beside = f.with_suffix(".wav")
            if not beside.is_file():
                synth = synth or FluidSynthReference()
                beside = synth(f, Path(tmp) / f"{f.stem}.wav")
            ref = audio.read_audio(beside)
            out = render(model, truncate_score(read_midi(f), args.max_seconds), options)
            n = min(len(ref), len(out.audio))
            ref = ref[:n]
            gen, _ = _match_loudness(torch.from_numpy(out.audio[:n]), audio.loudness_lufs(ref))
            for key, wav in (("ref", ref), ("gen", gen)):
                emb["aisfx"][key].append(aisfx(wav.numpy()))
                emb["mel-stats"][key].append(mel_stats_embedding(audio.log_mel(wav).numpy()))
    for name, pools in emb.items():
        b = breakdown(pools["ref"], pools["gen"])
        print(
            f"{name}: FD {b['fd']:.2f} = mean term {b['mean_term']:.2f}"
            f" + covariance term {b['cov_term']:.2f}"
        )
        for f, (dist, var_r, var_g) in zip(files, b["files"], strict=True):
            print(
                f"  {f.stem:24s} |mean diff|² {dist:8.2f}  spread ref {var_r:8.2f} model {var_g:8.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
