"""Choose a frame model's render sampler by distribution *and* score-following metrics together.

    python benchmarks/sampler_sweep.py HELDOUT_MIDI --model weights/frame-s \
        --settings ddim-cosine:1@0.05,ddpm-cosine:8@0.4 [--max-seconds 20] [--json out.json]

Each SAMPLER:STEPS@START setting renders the same files with the same seed through
``midisynth.evaluate.evaluate`` (FluidSynth + FluidR3_GM references, loudness matched), and one row
is printed per setting: Fréchet distances (aisfx, mel-stats; lower = the sound's distribution is
closer to the reference's), note F1 at 50 ms onsets (does it follow the score) and log-mel L1
(a regression metric that rewards the blurred mean: shown, never used alone). The first row also
gives the ground-truth-encoded ceiling (reference → log-mel → the same inverter).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from midisynth import weights
from midisynth.eval_tools import FluidSynthReference
from midisynth.evaluate import evaluate
from midisynth.render import RenderOptions

COLUMNS = ("fd_aisfx", "fd_mel_stats", "f1_onset_50", "mel_l1", "lsd")


def parse_setting(spec: str) -> RenderOptions:
    """``SAMPLER:STEPS@START`` → RenderOptions (e.g. ``ddpm-cosine:8@0.4``)."""
    name, _, rest = spec.partition(":")
    steps, _, start = rest.partition("@")
    return RenderOptions(sampler=name, steps=int(steps), start=float(start) if start else None)


def row(report: dict, system: str) -> dict[str, float]:
    """The sweep's columns for one system of an evaluate() report."""
    s, fd = report["summary"].get(system, {}), report["frechet"]
    return {
        "fd_aisfx": (fd.get("aisfx") or {}).get(system),
        "fd_mel_stats": (fd.get("mel-stats") or {}).get(system),
        "f1_onset_50": s.get("f1_onset_50"),
        "mel_l1": s.get("mel_l1"),
        "lsd": s.get("lsd"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("midi", type=Path, help="folder of held-out MIDI files")
    ap.add_argument("--model", default="frame-s")
    ap.add_argument("--settings", required=True, help="comma-separated SAMPLER:STEPS@START")
    ap.add_argument("--max-seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--inverter",
        default="auto",
        help="auto (the shipped trained inverter, as released models use), griffin-lim, … "
        "(a training run's folder names none, which would mean Griffin-Lim)",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted(p for p in args.midi.iterdir() if p.suffix.lower() in (".mid", ".midi"))
    model = weights.load_model(args.model)
    synth = FluidSynthReference()
    results: dict[str, dict] = {}
    reports: dict[str, dict] = {}  # each setting's evaluate() summary and Fréchet table
    for i, spec in enumerate(args.settings.split(",")):
        t0 = time.perf_counter()
        options = RenderOptions(
            **{**parse_setting(spec).__dict__, "seed": args.seed, "inverter": args.inverter}
        )
        report = evaluate(
            model, files, synth_reference=synth, options=options, plots=False,
            max_seconds=args.max_seconds,
        )  # fmt: skip
        if i == 0:
            results["gt-encoded"] = row(report, "gt-encoded")
        results[spec] = {**row(report, "model"), "seconds": round(time.perf_counter() - t0, 1)}
        reports[spec] = {k: report[k] for k in ("summary", "frechet", "n_ok", "n_failed")}
        print(f"{spec}: {results[spec]}", file=sys.stderr, flush=True)
    print(f"{'setting':<26}|" + "|".join(f"{c:>13}" for c in COLUMNS))
    for name, r in results.items():
        cells = "|".join(
            f"{r[c]:>13.3f}" if r.get(c) is not None else f"{'—':>13}" for c in COLUMNS
        )
        print(f"{name:<26}|{cells}")
    if args.json:
        out = {"model": args.model, "results": results, "reports": reports}
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
