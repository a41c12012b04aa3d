"""Does a trained model follow the score? A one-segment check on held-out examples of a cache.

    python benchmarks/model_check.py --model runs/m --cache CACHE [--examples 32] [--json F]

For fixed validation examples (real audio context, the target segment's note tokens), each
sampler setting generates the 256-frame target, and is scored against the reference
synthesizer's log-mel by:
- L1 in log-mel feature units, beside two baselines: the training set's mean spectrum at every
  frame, and the example's own mean spectrum over time (what a model that knows *which* notes
  sound but not *when* would at best reach);
- frame-energy correlation: Pearson correlation over the 256 frames of log total energy, model vs
  reference, averaged over examples (≈ 0 when the output does not move with the notes).
A model that follows the score beats the per-example mean spectrum in L1 and has a clearly
positive energy correlation. Runs on the GPU too (``--device cuda``); seconds on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from midisynth import audio, cache, data, diffusion, tokens, weights
from midisynth.metrics import energy_correlation


def score(pred: torch.Tensor, ref: torch.Tensor, t0: float) -> dict:
    """L1 and energy correlation of a generated log-mel batch, and the seconds since ``t0``."""
    return {
        "l1": float((pred - ref).abs().mean()),
        "energy_corr": energy_correlation(pred, ref),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def baselines(args, ref: torch.Tensor, dev: torch.device) -> dict:
    train = cache.load_cache(args.cache, "train")
    mean_spec = torch.tensor(
        np.concatenate([p.mel[::10].astype(np.float32) for p in train]).mean(0), device=dev
    )
    own_mean = ref.median(1, keepdim=True).values  # best constant-in-time spectrum per example
    return {
        "mean_spectrum_l1": float((mean_spec - ref).abs().mean()),
        "own_time_median_l1": float((own_mean - ref).abs().mean()),
        "reference_energy_corr": energy_correlation(ref, ref),
    }


def check_frame_model(m, val, args, dev: torch.device) -> int:
    """FrameNet: the same fixed examples as training validates on (seed 1234), the prior's mel
    alone and each SAMPLER:STEPS@START setting (shallow diffusion from the prior), each finished
    as rendering does (the model's ``level`` and ``texture``, ``render.finish_frame_mel``)."""
    from midisynth.render import RenderOptions, finish_frame_mel, with_model_defaults
    from midisynth.train_frame import FrameSampler, cache_index, piece_styles

    # each piece in its own SoundFont's style
    styles = piece_styles(val, cache_index(args.cache), m.config.frame.styles)
    sampler = FrameSampler(val, m.program_map, m.config.frame.slots, styles=styles)
    b = sampler.batch(np.random.default_rng(1234), args.examples, drop=False)
    ref = audio.unscale(b.target.float()).to(dev)
    out: dict = {"model": str(args.model), "examples": args.examples}
    opts = with_model_defaults(RenderOptions(), m)
    out["level"], out["texture"] = opts.level, opts.texture
    out["baselines"] = baselines(args, ref, dev)
    out["settings"] = {}
    net = m.model.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        cond = net.encode(
            b.grid.to(dev), b.context.to(dev), b.context_mask.to(dev), b.style.to(dev)
        )
        out["settings"]["prior"] = score(audio.unscale(cond.prior.clamp(-1, 1)), ref, t0)
        for spec in args.frame_settings.split(","):
            sampler_name, rest = spec.split(":")
            steps, _, start = rest.partition("@")
            start_f = float(start or 1.0)
            t0 = time.perf_counter()
            gen = torch.Generator().manual_seed(0)
            noise = diffusion.initial_noise(tuple(cond.prior.shape), gen, dev)
            tau = torch.full((noise.shape[0],), start_f, device=dev)
            x0 = diffusion.sample(
                lambda x, t: net(x, t, cond),
                tuple(noise.shape),
                sampler=sampler_name,
                steps=int(steps),
                x_init=diffusion.q_sample(cond.prior.clamp(-1, 1), tau, noise),
                start=start_f,
                device=dev,
                prediction_type=m.config.prediction_type,
            )
            mel = finish_frame_mel(x0, cond.prior, opts, gen)  # the model's level and texture
            out["settings"][spec] = score(mel, ref, t0)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--cache", required=True, help="cache folder (its val split is used)")
    ap.add_argument("--examples", type=int, default=32)
    ap.add_argument(
        "--settings",
        default="ddim-cosine:1,ddim-cosine:4,dpmpp-2m-cosine:20",
        help="comma-separated SAMPLER:STEPS",
    )
    ap.add_argument(
        "--frame-settings",
        default="ddim-cosine:4@0.5,ddim-cosine:8@0.5,ddim-cosine:8@0.8,ddim-cosine:8@1.0",
        help="frame models: comma-separated SAMPLER:STEPS@START",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    m = weights.load_model(args.model, device=dev, dtype=torch.float32)
    val = cache.load_cache(args.cache, "val")
    if m.config.frame is not None:
        return check_frame_model(m, val, args, dev)
    codec = tokens.Codec.from_dict(m.meta.get("codec") or {})
    exs = data.fixed_examples(
        val, args.examples, codec=codec, program_map=m.program_map, max_tokens=1024
    )
    b = data.collate(exs).to(dev)
    ref = audio.unscale(b.target.float())  # (B, 256, 128) log-mel
    train = cache.load_cache(args.cache, "train")
    mean_spec = torch.tensor(
        np.concatenate([p.mel[::10].astype(np.float32) for p in train]).mean(0), device=dev
    )
    own_mean = ref.median(1, keepdim=True).values  # best constant-in-time spectrum per example
    out: dict = {
        "model": str(args.model),
        "examples": args.examples,
        "baselines": {
            "mean_spectrum_l1": float((mean_spec - ref).abs().mean()),
            "own_time_median_l1": float((own_mean - ref).abs().mean()),
        },
        "settings": {},
    }
    net = m.model.eval()
    with torch.inference_mode():
        kv = net.precompute(net.encode(b.tokens, b.context, b.context_mask))
        for spec in args.settings.split(","):
            sampler, steps = spec.split(":")
            t0 = time.perf_counter()
            x0 = diffusion.sample(
                lambda x, t: net(x, t, kv),
                tuple(b.target.shape),
                sampler=sampler,
                steps=int(steps),
                generator=torch.Generator().manual_seed(0),
                device=dev,
                prediction_type=m.config.prediction_type,
            )
            out["settings"][spec] = score(audio.unscale(x0.float()), ref, t0)
    out["baselines"]["reference_energy_corr"] = energy_correlation(ref, ref)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
