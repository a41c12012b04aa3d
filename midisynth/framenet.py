"""FrameNet: our own frame-conditioned spectrogram model, sized to train on two CPU cores.

The released model reads the notes as MT3 tokens and must learn, through cross-attention, which
tokens sound in which frame. FrameNet is *given* that alignment (``notegrid``): every frame lists
the notes that reach it (pitch, instrument, velocity, frames since onset, frames until offset).

    grid (B, 256, S, 5) ──note embeddings + MLP, summed per frame──▶ n (B, 256, D)
    context mel (B, 256, 128) ──blocks, masked mean──▶ c (B, D)      (previous segment)
    prior:    n, FiLM(c)            ──blocks──▶ h ──▶ μ (B, 256, 128)   regression of the mel
    denoiser: x_t, μ, h, FiLM(c, t) ──blocks──▶ v (B, 256, 128)         v-prediction

Blocks are ConvNeXt-style 1-D blocks over time (depthwise dilated convolution, normalisation with
FiLM, channel MLP); the frequency axis lives in the channels. Rendering starts the sampler from the
prior (shallow diffusion, as DiffSinger): x = α(τ₀)·μ + σ(τ₀)·ε, then a few DDIM steps to τ = 0.
The same interface as ``SpectrogramDiffusion`` for the render loop: ``encode`` once per segment,
``forward(x, t, cond)`` per step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import notegrid
from .model import FrameConfig, ModelConfig, SpectrogramDiffusion, timestep_embedding


@dataclass
class FrameCond:
    """Per-segment conditioning, computed once by ``FrameNet.encode``."""

    hidden: Tensor  # (B, T, D) the prior's last hidden state
    prior: Tensor  # (B, T, 128) the prior's mel, scaled to [-1, 1]
    context: Tensor  # (B, D) pooled previous-segment code


class Block(nn.Module):
    """Residual: h + MLP(FiLM(norm(depthwise_conv(h))))."""

    def __init__(self, d: int, kernel: int, dilation: int, ff_mult: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            d, d, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=d
        )
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.film = nn.Linear(d, 2 * d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        nn.init.zeros_(self.ff[2].weight)  # each block starts as the identity
        nn.init.zeros_(self.ff[2].bias)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        y = self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        scale, shift = self.film(cond)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
        return h + self.ff(self.norm(y) * (1 + scale) + shift)


def _stack(cfg: FrameConfig, n: int) -> nn.ModuleList:
    dil = cfg.dilations
    return nn.ModuleList(
        Block(cfg.d_model, cfg.kernel, dil[i % len(dil)], cfg.ff_mult) for i in range(n)
    )


HARMONIC_BANDS = ((1, 1), (2, 3), (4, 7), (8, 16))  # harmonic numbers grouped into timbre bands


@functools.lru_cache(maxsize=1)
def harmonic_templates() -> Tensor:
    """(128 pitches, bands, 128 mel bins) float32: where each key's harmonics fall on the mel scale.

    Harmonic k of MIDI pitch p (f = 440·2^((p−69)/12)·k, 1/k amplitude) enters the mel filterbank
    row of its frequency (linear interpolation between FFT bins); harmonics are summed per band of
    ``HARMONIC_BANDS``. A fixed prior: the network learns only how loud each band is per note.
    Computed once per process, not stored in checkpoints (models load on the meta device).
    """
    from . import audio

    w = audio.mel_filterbank(dtype=torch.float64)  # (513, 128)
    bin_hz = audio.SAMPLE_RATE / audio.N_FFT
    out = torch.zeros(128, len(HARMONIC_BANDS), w.shape[1], dtype=torch.float64)
    for p in range(128):
        f0 = 440.0 * 2 ** ((p - 69) / 12)
        for b, (lo, hi) in enumerate(HARMONIC_BANDS):
            for k in range(lo, hi + 1):
                x = f0 * k / bin_hz
                if x >= w.shape[0] - 1:
                    break
                i, frac = int(x), x - int(x)
                out[p, b] += ((1 - frac) * w[i] + frac * w[i + 1]) / k
    return (out / out.amax(dim=-1, keepdim=True).clamp_min(1e-9)).float()


class NoteEmbedding(nn.Module):
    """Note slots (B, T, S, 5) int → per-frame sum of per-note codes (B, T, out).

    Every (note, frame) pair goes through the MLP — tens of thousands per batch — so the per-note
    width ``d`` is kept small (``FrameConfig.note_dim``)."""

    def __init__(self, d: int, out: int, velocity: str = "gain", styles: int = 0) -> None:
        super().__init__()
        if velocity not in ("gain", "embedding"):
            raise ValueError(
                f"FrameConfig.velocity must be 'gain' or 'embedding', not {velocity!r}"
            )
        self.velocity_mode = velocity
        self.pitch = nn.Embedding(128, d)
        self.inst = nn.Embedding(notegrid.N_INST, d)
        if velocity == "embedding":
            self.velocity = nn.Embedding(16, d)  # coarse bins of 8, + a linear trend
            self.velocity_lin = nn.Linear(1, d)
        else:
            # Velocity only scales each note's harmonic spectrum by (v/127)^s, s = softplus(·) ≥ 0
            # per instrument (init s ≈ 2: SoundFont players attenuate ∝ velocity²), so a louder
            # note is never given a quieter spectrum; nothing else in the code sees velocity.
            self.velocity_slope = nn.Parameter(torch.full((notegrid.N_INST,), 1.8))
        # Timbre style per note (FrameConfig.styles): instruments differ between SoundFonts, so the
        # style enters each note's code, not only the segment-wide FiLM. Zero-init: no change.
        self.style = nn.Embedding(styles, d) if styles else None
        if self.style is not None:
            nn.init.zeros_(self.style.weight)
        self.age = nn.Embedding(notegrid.N_AGE, d)
        self.remaining = nn.Embedding(notegrid.N_REMAINING, d)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.proj = nn.Linear(d, out)  # after the per-frame sum: cheap at note width d
        # Harmonic shortcut: per (note, frame) a gain per band of its harmonic templates, summed
        # into a 128-bin spectrum per frame (log) — pitch → spectrum need not be learned.
        self.band_gain = nn.Linear(d, len(HARMONIC_BANDS))
        self.spectrum_proj = nn.Linear(128, out)
        for emb in (self.pitch, self.inst, self.age, self.remaining):
            nn.init.normal_(emb.weight, std=0.5)
        if velocity == "embedding":
            nn.init.normal_(self.velocity.weight, std=0.5)

    def forward(self, grid: Tensor, style: Tensor | None = None) -> Tensor:
        """grid (B, T, S, 5), style (B,) int64 (models with styles) → (B, T, out)."""
        B, T, S, _ = grid.shape
        flat = grid.reshape(B * T * S, 5).long()
        live = (flat[:, 2] > 0).nonzero().squeeze(1)  # only real notes are embedded
        g = flat[live]
        vel = g[:, 2]
        code = (
            self.pitch(g[:, 0]) + self.inst(g[:, 1]) + self.age(g[:, 3]) + self.remaining(g[:, 4])
        )
        if self.style is not None and style is not None:
            code = (
                code
                + self.style(style.to(code.device))[torch.div(live, T * S, rounding_mode="floor")]
            )
        if self.velocity_mode == "embedding":
            v = (vel.float() / 127.0)[:, None].to(code.dtype)
            code = code + self.velocity(vel // 8) + self.velocity_lin(v)
        code = self.mlp(code)  # (N_live, D)
        frame = torch.div(live, S, rounding_mode="floor")
        out = torch.zeros(B * T, code.shape[1], dtype=code.dtype, device=code.device)
        out.index_add_(0, frame, code)
        gain = nn.functional.softplus(self.band_gain(code))  # (N_live, bands)
        if self.velocity_mode == "gain":
            slope = nn.functional.softplus(self.velocity_slope)[g[:, 1]]  # (N_live,)
            gain = gain * torch.exp(slope * torch.log(vel.float() / 127.0)).to(gain.dtype)[:, None]
        spec = torch.einsum("nb,nbm->nm", gain, harmonic_templates().to(gain)[g[:, 0]])
        spectrum = torch.zeros(B * T, spec.shape[1], dtype=spec.dtype, device=spec.device)
        spectrum.index_add_(0, frame, spec)
        log_spec = torch.log(spectrum + 1e-3).view(B, T, -1)  # (B, T, 128)
        return self.proj(out.view(B, T, -1)) + self.spectrum_proj(log_spec)  # (B, T, out)


class Head2d(nn.Module):
    """Per-bin refinement of the denoiser's v: the trunk's features unfolded to ``c`` channels per
    (frame, bin), beside the noisy mel, the prior and the trunk's own v, through residual 3×3
    convolutions over (time, bin); the last one starts at zero, so the head starts as the identity.
    """

    def __init__(self, d: int, mels: int, c: int, layers: int) -> None:
        super().__init__()
        self.c, self.mels = c, mels
        self.unfold = nn.Linear(d, c * mels // 8)  # (D → c/8 per bin, × 8 bins) kept cheap
        self.inp = nn.Conv2d(c // 8 + 3, c, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(layers))
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: Tensor, x: Tensor, prior: Tensor, v: Tensor) -> Tensor:
        B, T, _ = h.shape
        f = self.unfold(h).view(B, T, self.c // 8, self.mels).permute(0, 2, 1, 3)  # (B, c/8, T, M)
        maps = torch.stack([x, prior, v], dim=1).to(f.dtype)  # (B, 3, T, M)
        y = nn.functional.gelu(self.inp(torch.cat([f, maps], dim=1)))  # (B, c, T, M)
        for conv in self.blocks:
            y = y + nn.functional.gelu(conv(y))
        return v + self.out(y)[:, 0]  # (B, T, M)


class FrameNet(nn.Module):
    """The frame-conditioned prior + denoiser (see the module docstring)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        assert config.frame is not None
        self.config = config
        cfg = self.frame = config.frame
        d, mels = cfg.d_model, config.input_dims
        self.notes = NoteEmbedding(cfg.note_dim, d, cfg.velocity, len(cfg.styles))
        self.context_in = nn.Linear(mels, d)
        self.context_blocks = _stack(cfg, cfg.context_layers)
        self.no_context = nn.Parameter(torch.zeros(d))  # the pooled code of "no previous segment"
        self.cond_prior = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.prior_blocks = _stack(cfg, cfg.prior_layers)
        self.prior_norm = nn.LayerNorm(d)
        self.prior_out = nn.Linear(d, mels)
        self.x_in = nn.Linear(mels, d)
        self.mu_in = nn.Linear(mels, d)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.cond_denoise = nn.Sequential(nn.SiLU(), nn.Linear(d, d))
        self.denoise_blocks = _stack(cfg, cfg.denoise_layers)
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, mels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.head = (
            Head2d(d, mels, cfg.denoise_2d, cfg.denoise_2d_layers) if cfg.denoise_2d else None
        )
        self.style = nn.Embedding(len(cfg.styles), d) if cfg.styles else None
        if self.style is not None:
            nn.init.zeros_(self.style.weight)  # a model resumed with styles starts unchanged

    def encode_context(self, context: Tensor, context_mask: Tensor) -> Tensor:
        """(B, 256, 128) scaled previous mel, (B, 256) bool valid frames → (B, D)."""
        h = self.context_in(context.to(self.context_in.weight.dtype))
        zero = torch.zeros(h.shape[0], h.shape[-1], dtype=h.dtype, device=h.device)
        for blk in self.context_blocks:
            h = blk(h, zero)
        m = context_mask[..., None].to(h.dtype)  # (B, T, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
        has = context_mask.any(1, keepdim=True)
        return torch.where(has, pooled, self.no_context.to(h.dtype).expand_as(pooled))

    def encode(
        self, grid: Tensor, context: Tensor, context_mask: Tensor, style: Tensor | None = None
    ) -> FrameCond:
        """Run once per segment: note grid (B, T, S, 5), context (B, 256, 128) in [-1, 1] and its
        mask (B, 256), style (B,) int64 indices into ``FrameConfig.styles`` (None = the first)
        → the prior mel and the codes the denoiser steps reuse."""
        c = self.encode_context(context, context_mask)  # (B, D)
        if self.style is not None:
            if style is None:
                style = torch.zeros(c.shape[0], dtype=torch.long, device=c.device)
            c = c + self.style(style.to(c.device)).to(c.dtype)
        h = self.notes(grid, style)  # (B, T, D)
        cp = self.cond_prior(c)
        for blk in self.prior_blocks:
            h = blk(h, cp)
        h = self.prior_norm(h)
        return FrameCond(hidden=h, prior=self.prior_out(h).float(), context=c)

    def forward(self, x: Tensor, t: Tensor | float, cond: FrameCond) -> Tensor:
        """One denoising step: x (B, T, 128) noisy scaled mel, t (B,) in [0, 1] → v (B, T, 128) fp32."""
        dtype, B = self.out.weight.dtype, x.shape[0]
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(B)
        temb = timestep_embedding(t, self.frame.d_model, 1000.0).to(dtype)
        c = self.cond_denoise(self.time_mlp(temb) + cond.context.to(dtype))  # (B, D)
        prior = cond.prior.to(dtype)
        h = self.x_in(x.to(dtype)) + self.mu_in(prior) + cond.hidden.to(dtype)  # (B, T, D)
        for blk in self.denoise_blocks:
            h = blk(h, c)
        v = self.out(self.out_norm(h))  # (B, T, 128)
        if self.head is not None:
            v = self.head(h, x.to(dtype), prior, v)
        return v.float()


def build_model(config: ModelConfig) -> nn.Module:
    """The network a config describes: ``FrameNet`` when ``config.frame`` is set, else the
    released architecture (``model.SpectrogramDiffusion``). Here, above both, so that model.py
    need not know FrameNet."""
    if config.frame is not None:
        return FrameNet(config)
    return SpectrogramDiffusion(config)
