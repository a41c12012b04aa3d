"""A new model of the released (token) design, ready to train from scratch: the size presets and
the two initialisations that a small, briefly trained model needs (spec §5.1).

``build_model`` makes a ``SpectrogramDiffusion`` of a named size (``MODEL_PRESETS``) for a run's
codec; ``init_time_codes`` gives shift tokens the decoder's position code of their time;
``skip_init`` starts an ε-predicting decoder as ε̂(z) ≈ z. Both change initial values only: names,
shapes and the objective are those of any other model.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from . import audio, diffusion, tokens
from .model import ModelConfig, SinusoidCode, SpectrogramDiffusion


class NewModelSettings(Protocol):
    """What ``build_model`` reads of a run's settings (``train.TrainConfig`` has these fields;
    named here so that this module, below the training loop, does not import it)."""

    model: str  # a MODEL_PRESETS name
    model_overrides: dict[str, Any]
    dropout: float
    prediction_type: str
    time_codes: bool
    skip_init: bool
    seed: int


# Model sizes by name; "cpu-wide" is the size tried on CPUs (d_model > 128 mel bins: see skip_init).
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(
        d_model=64, num_heads=2, d_kv=32, d_ff=128, num_encoder_layers=2, num_decoder_layers=2
    ),
    "cpu-small": dict(
        d_model=128, num_heads=4, d_kv=32, d_ff=256, num_encoder_layers=3, num_decoder_layers=3
    ),
    "cpu-wide": dict(
        d_model=192, num_heads=4, d_kv=48, d_ff=384, num_encoder_layers=3, num_decoder_layers=3
    ),
    "cpu-medium": dict(
        d_model=256, num_heads=4, d_kv=64, d_ff=512, num_encoder_layers=4, num_decoder_layers=4
    ),
    "small": dict(
        d_model=512, num_heads=6, d_kv=64, d_ff=1024, num_encoder_layers=8, num_decoder_layers=8
    ),
    "base": {},
}


def build_model(config: NewModelSettings, codec: tokens.Codec) -> SpectrogramDiffusion:
    """A new model for a training run: ``config.model``'s preset size with ``model_overrides``,
    ``dropout`` and ``prediction_type``, its vocabulary from ``codec``, then the initialisations
    ``config`` asks for (``time_codes``, ``skip_init``; seeded by ``seed``)."""
    if config.model not in MODEL_PRESETS:
        raise ValueError(
            f"unknown model preset {config.model!r}; choose one of: {', '.join(MODEL_PRESETS)}"
        )
    dims = {**MODEL_PRESETS[config.model], **config.model_overrides}
    if config.prediction_type not in diffusion.PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction type {config.prediction_type!r}; "
            f"choose one of: {', '.join(diffusion.PREDICTION_TYPES)}"
        )
    mc = ModelConfig(
        **dims,
        vocab_size=codec.vocab_size,
        dropout=config.dropout,
        prediction_type=config.prediction_type,
    )
    model = SpectrogramDiffusion(mc)
    if config.time_codes:
        init_time_codes(model, codec, seed=config.seed)
    if config.skip_init and mc.prediction_type == "epsilon":
        skip_init(model)
    return model


@torch.no_grad()
def init_time_codes(
    model: SpectrogramDiffusion, codec: tokens.Codec, seed: int = 0, time_head_scale: float = 1.0
) -> None:
    """Tell a from-scratch model's notes encoder what a shift token means (an initialisation only;
    names and shapes unchanged).

    The decoder's position table is redrawn (``model.SinusoidCode``, as at construction) from a
    seeded generator, and the embedding of ``shift v`` (time v / steps_per_second in the segment)
    is set to that same position code
    evaluated at that time in decoder frames (v/2 at 100 steps/s and 20 ms frames), so the key of a
    token and the query of the decoder frame it falls in start out in one coordinate system and
    cross-attention has one linear map to learn instead of 512 separate embeddings. With
    ``time_head_scale`` > 0, head 0 of each decoder cross-attention also starts by comparing those
    codes. Measured (benchmarks/README.md, model_check): neither makes an hour of 2-core CPU
    training learn *when* notes sound (frame-energy correlation stays ≈ 0); at initialisation the
    head attends only slightly closer to the right frames (mean distance 68 vs 72 frames, uniform
    86). Kept as a cheap, harmless start for longer runs.
    """
    gen = torch.Generator().manual_seed(seed + 7919)
    cfg = model.config
    dec_code = SinusoidCode.draw(cfg.d_model, gen)
    model.decoder.position_encoding.weight.copy_(dec_code(torch.arange(cfg.targets_length)))
    frames_per_step = (1.0 / codec.steps_per_second) / (audio.HOP / audio.SAMPLE_RATE)
    values = torch.arange(codec.max_shift_steps + 1)
    first = codec.token_id("shift", 0)
    emb = model.notes_encoder.token_embedder.weight
    emb[first : first + len(values)] = dec_code(values * frames_per_step)
    if time_head_scale > 0:
        # Head 0 of every decoder cross-attention compares the sin/cos channels of the code's
        # periods from ~6 to ~60 frames in query and key: q·k ≈ s²·Σ cos(ω_k·Δframes), peaked at
        # the frame the token's time falls in, where random q/k attend by content alone.
        half, dk = cfg.d_model // 2, cfg.d_kv
        inv = torch.argsort(dec_code.perm)
        ks = torch.arange(min(dk // 2, half))
        cols = torch.stack([inv[ks], inv[half + ks]], 1).reshape(-1)  # sin_k, cos_k pairs
        for lyr in model.decoder.decoders:
            att = lyr.layer[1].attention
            for w in (att.to_q.weight, att.to_k.weight):
                w[:dk].zero_()
                w[torch.arange(len(cols)), cols] = time_head_scale


@torch.no_grad()
def skip_init(model: SpectrogramDiffusion, gain: float = 2.0, position_scale: float = 0.25) -> None:
    """Start the decoder as eps(z) ≈ z, the exact answer at high noise (an initialisation only).

    With ε-prediction the sampler's first steps compute x0 = (z − σ·ε̂)/α with α ≈ 0, so any error
    in passing the noisy input through is amplified ~1/α; a small network trained briefly from
    the standard init learns this identity slowly (ε̂ at τ = 0.99 still ~20 % off after 1 200
    steps), and samples collapse to clipped noise. Here every residual branch of the decoder starts
    at zero, the input projection writes z into the first input_dims residual channels and the
    output projection reads them back, so training starts at ε̂ ≈ z and learns the corrections.
    With d_model > input_dims the decoder's (fixed, from-scratch) position table moves to the other
    channels as constant-norm sin/cos pairs ~3× the norm of z, which keeps the final RMS norm
    nearly linear in z and the positions out of the output; with d_model == input_dims both share
    the channels (z gets ``gain``, the table ``position_scale``). Architecture, parameter names and
    the objective are unchanged.
    """
    dec, n, d = model.decoder, model.config.input_dims, model.config.d_model
    if d < n:
        return
    for lyr in dec.decoders:
        lyr.layer[0].attention.to_out[0].weight.zero_()
        lyr.layer[1].attention.to_out[0].weight.zero_()
        lyr.layer[2].DenseReluDense.wo.weight.zero_()
    eye = torch.eye(n)
    w_in, w_out = dec.continuous_inputs_projection.weight, dec.spec_out.weight  # (D, n), (n, D)
    w_in.zero_()
    w_out.zero_()
    pos = dec.position_encoding.weight  # (T, D)
    if d == n:
        w_in[:n] = gain * eye
        pos.mul_(position_scale)
        w_out[:, :n] = eye  # RMSNorm(h) ≈ h / gain for h ≈ gain·z, |z|² ≈ n
        return
    half = (d - n) // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
    angle = torch.arange(pos.shape[0])[:, None] * freqs + 2 * math.pi * torch.rand(half)
    amp = math.sqrt(16 * n / (2 * half))  # |table row|² = 8 n = 8 × E|z|²
    pos.zero_()
    pos[:, n : n + half] = amp * angle.sin()
    pos[:, n + half : n + 2 * half] = amp * angle.cos()
    w_in[:n] = eye
    w_out[:, :n] = eye * math.sqrt(9 * n / d)  # rms(h) = sqrt((n + 8 n) / D)
