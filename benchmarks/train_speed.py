"""Training throughput of candidate model sizes on this machine (random data, one optimizer step).

    python benchmarks/train_speed.py --threads 1 --batch 16 --tokens 256 --steps 4

For each size and compute dtype (fp32, and bf16 autocast where the CPU has native bf16), prints the
parameter count (dropout off, as the CPU run trains) and the median seconds per training step (forward + L1 eps loss + backward + AdamW)
over --steps steps after one warm-up. The notes encoder sees --tokens real tokens (the training loop
trims padding), the context encoder a full 256-frame context. Used to pick the bundled model's size.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from midisynth import diffusion
from midisynth.model import ModelConfig, SpectrogramDiffusion
from midisynth.model_init import MODEL_PRESETS

SIZES = {name: ModelConfig(**dims, dropout=0.0) for name, dims in MODEL_PRESETS.items()}


def step_time(cfg: ModelConfig, batch: int, tokens: int, steps: int, bf16: bool) -> float:
    torch.manual_seed(0)
    model = SpectrogramDiffusion(cfg).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(3, 1300, (batch, tokens))
    ctx = torch.rand(batch, 256, 128) * 2 - 1
    mask = torch.ones(batch, 256, dtype=torch.bool)
    x0 = torch.rand(batch, 256, 128) * 2 - 1
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        tau = torch.rand(batch)
        noise = torch.randn_like(x0)
        z = diffusion.q_sample(x0, tau, noise)
        ac = torch.autocast("cpu", torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ac:
            kv = model.precompute(model.encode(ids, ctx, mask))
            eps = model(z, tau, kv)
        loss = (eps.float() - noise).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--sizes", default="tiny,cpu-small,cpu-medium")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dtypes = ["fp32"]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        dtypes.append("bf16")
    print(f"threads={args.threads} batch={args.batch} tokens={args.tokens}")
    print(f"{'size':10} {'params':>8} {'dtype':6} {'s/step':>7} {'examples/s':>10}")
    for name in args.sizes.split(","):
        cfg = SIZES[name]
        n = sum(p.numel() for p in SpectrogramDiffusion(cfg).parameters() if p.requires_grad)
        for dt in dtypes:
            s = step_time(cfg, args.batch, args.tokens, args.steps, dt == "bf16")
            print(f"{name:10} {n / 1e6:7.2f}M {dt:6} {s:7.2f} {args.batch / s:10.1f}", flush=True)


if __name__ == "__main__":
    main()
