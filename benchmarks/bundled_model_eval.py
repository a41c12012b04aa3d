"""Quality and speed of a trained model against two baselines, on held-out pieces of a data cache.

    python benchmarks/bundled_model_eval.py --model weights/midisynth-small --cache CACHE \
        --cache HELDOUT --per-source 6 --seconds 30.7 --threads 1

For each held-out (``val``) piece of the caches (up to --per-source per source), the notes actually synthesized (with their possibly
randomized programs) are rendered by the model with ``render(...)`` (sampler dpmpp-2m, 20 steps by
default, Griffin-Lim inversion as shipped), and its ``.mel`` is compared with the reference
synthesizer's log-mel of the same notes (the cache) by the mean absolute difference in log-mel
units over the first ``--seconds``. Baselines: the same architecture untrained (random init,
seed 0), the training set's mean spectrum at every frame, and silence. Also prints the model size
and the CPU real-time factor (render seconds / audio seconds, inversion included), and a
score-following check on one MIDI file (``--midi``, default examples/melody_chords.mid): for every
frame with notes sounding, is the strongest pitch class of the rendered audio's chromagram one of
the pitch classes the score plays (chance ≈ active classes / 12)? Chroma comes from a 4096-point
STFT of the audio (55–2000 Hz), so it is independent of the model's mel resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from midisynth import audio, cache, synth, weights
from midisynth.metrics import chroma_accuracy, onset_f1
from midisynth.midi import Score, read_midi
from midisynth.model import SpectrogramDiffusion
from midisynth.render import RenderOptions, render


def score_of(notes: np.ndarray, seconds: float) -> Score:
    """A Score holding the notes that start before ``seconds`` (ends cut there)."""
    arr = notes[notes[:, 0] < seconds].copy()
    arr[:, 1] = np.minimum(arr[:, 1], seconds)
    ns = cache.array_to_notes(arr)
    total = max(n.end for n in ns)
    return Score(ns, total, [], [], [], [], 0, 480, [])


def untrained(model: weights.LoadedModel) -> weights.LoadedModel:
    torch.manual_seed(0)
    net = SpectrogramDiffusion(model.config).eval().requires_grad_(False)
    return dataclasses.replace(model, model=net, name="untrained")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--cache", action="append", required=True, help="repeatable; mean spectrum from the first"
    )
    ap.add_argument("--per-source", type=int, default=6, help="held-out pieces per source")
    ap.add_argument("--seconds", type=float, default=30.7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="dpmpp-2m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--midi", default="examples/melody_chords.mid")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = weights.load_model(args.model)
    base = untrained(model)
    opts = RenderOptions(sampler=args.sampler, steps=args.steps, tail=0.0)
    n_params = sum(p.numel() for p in model.model.parameters())
    size_mb = sum((Path(model.path) / f).stat().st_size for f in model.meta["files"]) / 2**20
    print(f"model {args.model}: {n_params / 1e6:.2f} M parameters, {size_mb:.1f} MiB of weights")

    train = cache.load_cache(args.cache[0], "train")
    # (128,) mean log-mel of every 10th training frame
    mean_spec = np.concatenate([p.mel[::10].astype(np.float32) for p in train]).mean(0)
    held = sorted((p for c in args.cache for p in cache.load_cache(c, "val")), key=lambda p: p.name)
    val = []
    for src in sorted({p.source for p in held}):
        val += [p for p in held if p.source == src][: args.per_source]

    rows, render_s, audio_s = [], 0.0, 0.0
    for p in val:
        score = score_of(p.notes, args.seconds)
        ref = p.mel.astype(np.float32)
        row = {"piece": p.name}
        for name, m in (("model", model), ("untrained", base)):
            t0 = time.perf_counter()
            res = render(m, score, opts)
            dt = time.perf_counter() - t0
            n = min(len(res.mel), len(ref), int(args.seconds * audio.FRAME_RATE))
            row[name] = float(np.abs(res.mel[:n] - ref[:n]).mean())
            if name == "model":
                render_s += dt
                audio_s += len(res.audio) / audio.SAMPLE_RATE
        row["mean_spectrum"] = float(np.abs(mean_spec[None] - ref[:n]).mean())
        row["silence"] = float(np.abs(audio.LOG_FLOOR - ref[:n]).mean())
        rows.append(row)
        print(
            f"{p.name:48} model {row['model']:.3f}  untrained {row['untrained']:.3f}  "
            f"mean-spectrum {row['mean_spectrum']:.3f}  silence {row['silence']:.3f}",
            flush=True,
        )
    summary = {
        k: float(np.mean([r[k] for r in rows]))
        for k in ("model", "untrained", "mean_spectrum", "silence")
    }
    print(
        "mean log-mel L1 over",
        len(rows),
        "held-out pieces:",
        json.dumps({k: round(v, 3) for k, v in summary.items()}),
    )
    rtf = render_s / audio_s
    print(
        f"CPU real-time factor ({args.threads} thread(s), {args.sampler} {args.steps} steps, Griffin-Lim): {rtf:.3f}"
    )

    score = read_midi(args.midi)
    follow, onsets = {}, {}
    for name, m in (("model", model), ("untrained", base)):
        res = render(m, args.midi, dataclasses.replace(opts, tail=1.0))
        follow[name], chance = chroma_accuracy(res.audio, score.notes)
        onsets[name] = onset_f1(res.mel, score.notes)
    with __import__("contextlib").suppress(FileNotFoundError):
        wave, _ = synth.synthesize(score.notes, score.total_time + 1.0)
        follow["fluidsynth_reference"], _ = chroma_accuracy(wave, score.notes)
        onsets["fluidsynth_reference"] = onset_f1(
            cache.mel_of(wave).astype(np.float32), score.notes
        )
    follow["chance"] = chance
    print(
        f"onset F1 (spectral-flux peaks within 50 ms of score onsets): {json.dumps({k: round(v, 3) for k, v in onsets.items()})}"
    )
    print(
        f"score following on {args.midi} (strongest pitch class is played):",
        json.dumps({k: round(v, 3) for k, v in follow.items()}),
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "pieces": rows,
                    "l1": summary,
                    "rtf": rtf,
                    "threads": args.threads,
                    "score_following": follow,
                    "onset_f1": onsets,
                    "parameters": n_params,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
