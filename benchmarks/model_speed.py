"""Speed of midisynth's network against the diffusers modules it reproduces (same random weights).

    python benchmarks/model_speed.py --config base --tokens 400 --repeats 3

Measures, per dtype: both encoders (once per segment), one decoder step, and a 5.12 s segment with
N denoising steps. midisynth's segment = encoders + K/V precompute + N cached steps; diffusers' =
encoders + N full decoder calls (it re-projects the 2304 cross-attention keys at every step and runs
the notes encoder over all 2048 padded tokens). Segment times are composed from the measured parts
(median of --repeats after one warm-up), not run end to end, to keep the benchmark short on a CPU.
The token segment has --tokens real tokens then PAD to 2048; the context is a full previous segment.
Needs the `test` extra (diffusers, transformers). Thread count: torch's default unless --threads.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from midisynth.model import Encoded, ModelConfig, SpectrogramDiffusion

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import helpers  # noqa: E402  (tests/helpers.py: the diffusers modules for a ModelConfig)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    """transformers 4's get_extended_attention_mask (removed in 5, still called by diffusers)."""
    dtype = self.dtype if dtype is None else dtype
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def diffusers_modules(model: SpectrogramDiffusion) -> dict[str, torch.nn.Module]:
    """The three diffusers modules, loaded (strict) with `model`'s weights."""
    from diffusers.utils import logging

    logging.set_verbosity_error()  # its "modules that should be kept in float32: []" on .to(bf16)
    from diffusers.pipelines.deprecated.spectrogram_diffusion import (
        SpectrogramContEncoder,
        SpectrogramNotesEncoder,
    )

    for cls in (SpectrogramNotesEncoder, SpectrogramContEncoder):
        if not hasattr(cls, "get_extended_attention_mask"):
            cls.get_extended_attention_mask = _extended_attention_mask
    mods = helpers.diffusers_modules(model.config, dropout_rate=0)
    for name, m in mods.items():
        m.load_state_dict(getattr(model, name).state_dict(), strict=True)
        m.eval()
    return mods


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def timed(theirs: Callable[[], object] | None, ours: Callable[[], object], repeats: int):
    """Median wall times in ms (diffusers or None, midisynth) after one warm-up call each.

    The two are timed alternately so that load from other processes on a shared machine hits both.
    """
    fns = [f for f in (theirs, ours) if f is not None]
    for f in fns:
        f()
    times = [[_ms(f) for f in fns] for _ in range(repeats)]
    med = [statistics.median(col) for col in zip(*times, strict=True)]
    return (med[0], med[1]) if theirs is not None else (None, med[0])


def bench(model, ref, dtype: torch.dtype, n_tokens: int, repeats: int) -> dict[str, tuple]:
    """{'encoders' | 'precompute' | 'step': (diffusers ms, midisynth ms)} at one dtype."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.zeros(1, model.config.max_tokens, dtype=torch.long)
    tokens[0, : n_tokens - 1] = torch.randint(4, 1263, (n_tokens - 1,), generator=g)
    tokens[0, n_tokens - 1] = 1  # EOS
    context = (torch.rand(1, 256, 128, generator=g) * 2 - 1).to(dtype)
    ctx_mask = torch.ones(1, 256, dtype=torch.bool)
    x = torch.randn(1, 256, 128, generator=g).to(dtype)
    t = torch.tensor([0.5])

    def ref_encode():
        return [
            ref["notes_encoder"](tokens, tokens > 0),
            ref["continuous_encoder"](context, ctx_mask),
        ]

    enc_ref = ref_encode()
    enc = model.encode(tokens, context, ctx_mask)
    kv = model.precompute(enc)
    return {
        "encoders": timed(ref_encode, lambda: model.encode(tokens, context, ctx_mask), repeats),
        "precompute": timed(
            None, lambda: model.precompute(Encoded(enc.encodings, enc.mask)), repeats
        ),
        "step": timed(lambda: ref["decoder"](enc_ref, x, t), lambda: model(x, t, kv), repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="base", choices=["base", "small", "tiny"])
    ap.add_argument("--tokens", type=int, default=400, help="real tokens in the segment (≤ 2048)")
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 20], help="denoising steps")
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = SpectrogramDiffusion(ModelConfig.named(args.config)).eval()
    ref = diffusers_modules(model)
    print(
        f"# {args.config} model, {args.tokens} real tokens + PAD to 2048, full context, batch 1; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print(f"{'dtype':5} {'measure':22} {'diffusers ms':>13} {'midisynth ms':>13} {'speed-up':>9}")
    for name in args.dtypes:
        dtype = DTYPES[name]
        model.to(dtype)
        for m in ref.values():
            m.to(dtype)
        with torch.inference_mode():
            r = bench(model, ref, dtype, args.tokens, args.repeats)
        rows = [
            ("encoders (1 / segment)", r["encoders"][0], r["encoders"][1]),
            ("K/V precompute", *r["precompute"]),
            ("decoder step", r["step"][0], r["step"][1]),
        ]
        for n in args.steps:
            ours = r["encoders"][1] + r["precompute"][1] + n * r["step"][1]
            rows.append((f"segment, {n} steps", r["encoders"][0] + n * r["step"][0], ours))
        for label, theirs, ours in rows:
            if theirs is None:
                print(f"{name:5} {label:22} {'—':>13} {ours:13.1f} {'':>9}")
            else:
                print(f"{name:5} {label:22} {theirs:13.1f} {ours:13.1f} {theirs / ours:8.2f}x")


if __name__ == "__main__":
    main()
