"""Training FrameNet (``framenet.py``) on a cache built by ``python -m midisynth.cache``.

    python -m midisynth.train_frame CACHE --out runs/f [--resume FOLDER] [--max-minutes 60]

One example = one 256-frame target segment of a cached piece (the whole piece shifted later by a
random 0..255 frames, so targets see every phase of the music against the segment grid), its note
grid (``notegrid.note_grid`` of the same notes, programs through the model's program map), and the
real audio before it as context (none for segment 0; dropped with probability ``context_drop``, so
the no-context code stays trained). The loss is L1(μ, x0) for the prior plus L1 on v for the
denoiser at τ ~ U[0, 1) (continuous cosine schedule, ``diffusion.q_sample``); optionally the
denoiser also refines the prior's own noised mel, as rendering uses it, scored by L1 + a texture
term (``--refine-weight``, ``--texture-weight``; ``texture_l1``), and a velocity hinge holds louder
notes to louder output (``--monotone-weight``). AdamW, warmup + cosine
decay, EMA weights saved, checkpoints every few minutes (EMA model + raw weights and optimizer
moments, so a run resumes where it stopped).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import audio, cache, data, diffusion, notegrid, weights
from .framenet import build_model
from .metrics import energy_correlation
from .model import FrameConfig, ModelConfig
from .programs import get_program_map
from .synth import pick_soundfont
from .train import _load_state, _save_state, hardware

SEG = audio.SEGMENT_FRAMES
LOG_FIELDS = ("step", "elapsed_s", "lr", "loss", "prior_l1", "v_l1", "examples_per_s")


@dataclass
class FrameTrainConfig:
    """One training run of FrameNet."""

    data: str = "cache"  # cache folder (train-*.npz / val-*.npz)
    out: str = "runs/frame"  # model folder written (checkpoints overwrite it)
    name: str = "midisynth-frame"
    description: str = "frame-conditioned midisynth model"
    resume: str | None = None  # model folder to continue (weights, + optimizer state if present)
    frame: dict[str, Any] = field(
        default_factory=dict
    )  # FrameConfig overrides (new models; on resume, changes kept weights fit)
    program_map: str = "identity"  # new models
    batch_size: int = 16
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    steps: int = 100_000  # upper bound; runs are usually bounded by max_minutes
    max_minutes: float | None = 60.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    context_drop: float = 0.1
    prior_weight: float = 1.0  # weight of the prior's L1 beside the denoiser's
    # Denoiser noise levels: a fraction ``tau_focus`` of each batch draws τ ~ U[0, tau_focus_max)
    # — the levels rendering starts from (shallow diffusion from the prior) — the rest U[0, 1).
    tau_focus: float = 0.0
    tau_focus_max: float = 0.5
    # Weight of ``sharpness_l1`` (time and mel-bin differences of the prior and of the denoiser's
    # x0 against the target's); 0 = off. Counters the blur of the L1 regression.
    sharp_weight: float = 0.0
    # Louder must never sound quieter: weight of a hinge on the prior's frame energy when every
    # note's velocity is raised (``velocity_hinge``); 0 = off. Costs a second prior pass per step.
    monotone_weight: float = 0.0
    # Refinement as rendering uses the denoiser: the prior's own mel noised to τ ~ U[refine_tau)
    # and denoised once, scored against the target by L1 + ``texture_weight`` × ``texture_l1``;
    # 0 = off. The L1 regression alone trains a denoiser that keeps the prior's blur; the texture
    # term asks for the target's local variation (noise in, texture out) without asking where.
    refine_weight: float = 0.0
    texture_weight: float = 0.0
    refine_tau_min: float = 0.05
    refine_tau_max: float = 0.2
    # Weight of ``patch_swd`` on that refined x0: a distribution term (sliced Wasserstein distance
    # between the batch's 8 × 8 mel patches and the target's, per quarter of the mel bins, at two
    # scales), unpaired like a discriminator's but with nothing to train; 0 = off.
    swd_weight: float = 0.0
    # Weight of an adversarial term on that refined x0: a small convolutional critic
    # (``MelCritic``, training only, never saved) judges 2-D patches of (mel, prior) pairs, real
    # target against the denoiser's x0, with a hinge loss; the denoiser gets its hinge and the L1
    # between the critic's features of x0 and of the target (feature matching, × ``fm_weight``).
    # 0 = off. The critic starts fresh on every run (``critic_lr``).
    adv_weight: float = 0.0
    fm_weight: float = 2.0
    critic_lr: float = 2e-4
    # How often each source's segments are drawn, relative to their share of the cache, e.g.
    # "freedoom=4,oga=4" (unnamed sources 1; "" = every segment equally likely): a cache that is
    # mostly piano songs otherwise teaches multi-instrument timbres little.
    source_weights: str = ""
    val_every: int = 250
    val_examples: int = 64
    log_every: int = 25
    checkpoint_minutes: float = 5.0
    seed: int = 0
    threads: int | None = None
    device: str = "auto"  # auto | cpu | cuda (weights.resolve_device)
    data_workers: int = 1  # processes making batches (1 = one thread; a GPU needs ~12)
    bf16: str = "auto"  # autocast: auto (CUDA only) | on | off


# ---- Examples -----------------------------------------------------------------------------------


@dataclass
class FrameBatch:
    grid: torch.Tensor  # (B, 256, S, 5) int16
    context: torch.Tensor  # (B, 256, 128) float32 in [-1, 1]
    context_mask: torch.Tensor  # (B, 256) bool
    target: torch.Tensor  # (B, 256, 128) float32 in [-1, 1]
    style: torch.Tensor  # (B,) int64 index into FrameConfig.styles (0 when the model has none)

    def to(self, device: torch.device) -> FrameBatch:
        return FrameBatch(*(t.to(device, non_blocking=True) for t in dataclasses.astuple(self)))


class FrameSampler:
    """Random examples from cached pieces, every segment of the corpus equally likely (times its
    source's weight in ``source_weights``, {source: weight}, when given)."""

    def __init__(
        self,
        pieces: Sequence[cache.Piece],
        program_map: str,
        slots: int = notegrid.SLOTS,
        context_drop: float = 0.1,
        styles: Sequence[int] | None = None,
        source_weights: dict[str, float] | None = None,
    ) -> None:
        if not pieces:
            raise ValueError("no pieces to sample from")
        table = get_program_map(program_map).table
        self.pieces = list(pieces)
        self.styles = list(styles) if styles is not None else [0] * len(self.pieces)
        self.notes = [notegrid.map_programs(p.notes, table) for p in self.pieces]
        self.slots, self.context_drop = slots, context_drop
        w = np.array([data.num_segments_shifted(p, SEG // 2) for p in self.pieces], np.float64)
        if source_weights:
            w *= np.array([source_weights.get(p.source, 1.0) for p in self.pieces])
        self.weights = w / w.sum()

    def example(self, rng: np.random.Generator, drop: bool | None = None) -> tuple:
        i = int(rng.choice(len(self.pieces), p=self.weights))
        piece, k = self.pieces[i], int(rng.integers(0, SEG))
        seg = int(rng.integers(0, data.num_segments_shifted(piece, k)))
        if drop is None:
            drop = bool(rng.random() < self.context_drop)
        lo = seg * SEG
        target = data.scaled_mel(data.mel_frames(piece.mel, lo - k, lo + SEG - k))
        context = np.full((SEG, piece.mel.shape[1]), -1.0, np.float32)
        mask = np.zeros(SEG, bool)
        real_lo = max(lo - SEG, k)  # frames before the shifted piece are silence, not context
        n_valid = lo - real_lo if seg > 0 else 0
        if n_valid > 0 and not drop:
            context[:n_valid] = data.scaled_mel(data.mel_frames(piece.mel, real_lo - k, lo - k))
            mask[:n_valid] = True
        notes = self.notes[i].copy()
        notes[:, :2] += k / audio.FRAME_RATE
        grid = notegrid.note_grid(notes, lo, SEG, self.slots)
        return grid, context, mask, target, np.int64(self.styles[i])

    def batch(self, rng: np.random.Generator, size: int, drop: bool | None = None) -> FrameBatch:
        cols = list(zip(*(self.example(rng, drop) for _ in range(size)), strict=True))
        return FrameBatch(*(torch.from_numpy(np.stack(c)) for c in cols))

    # What ``data.BatchStream`` (one thread, or forked processes for a GPU) asks of a sampler.
    rejected = 0  # frame examples are never redrawn (token examples may be too long)

    def batches(self, rng: np.random.Generator, size: int, pool: int = 1) -> list[FrameBatch]:
        return [self.batch(rng, size) for _ in range(pool)]


def parse_source_weights(spec: str, sources: set[str]) -> dict[str, float]:
    """ "freedoom=4,oga=4" → {"freedoom": 4.0, "oga": 4.0}; ValueError (one line) for a source
    the cache lacks or a weight that is not a positive number."""
    out: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, value = item.partition("=")
        if name not in sources:
            raise ValueError(
                f"--source-weights: no source {name!r} in the cache ({', '.join(sorted(sources))})"
            )
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = math.nan
        if not out[name] > 0 or not math.isfinite(out[name]):
            raise ValueError(f"--source-weights: {item!r} needs a positive weight (name=number)")
    return out


def cache_index(folder: str | Path) -> dict[str, Any]:
    """A cache's ``index.json`` ({} for a cache without one)."""
    path = Path(folder) / "index.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def piece_styles(
    pieces: Sequence[cache.Piece], index: dict[str, Any], styles: Sequence[str]
) -> list[int] | None:
    """Each piece's index into the model's ``styles`` (None when the model has none): the stem
    of the SoundFont the cache rendered it with (``synth.pick_soundfont`` over the ``soundfonts``
    of the cache's ``index`` settings, as ``cache`` chose it), or ``recorded`` for paired audio."""
    if not styles:
        return None
    fonts = (index.get("settings") or {}).get("soundfonts") or []
    out = []
    for p in pieces:
        font = pick_soundfont(p.name, fonts) if fonts else None
        name = "recorded" if p.source == "paired" else Path(font or "").stem
        if name not in styles:
            raise ValueError(
                f"piece {p.name} is in style {name or '(no SoundFont recorded in the cache)'!r}, "
                f"not among the model's styles {list(styles)}"
            )
        out.append(list(styles).index(name))
    return out


# ---- Loss and validation ------------------------------------------------------------------------


def sharpness_l1(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) L1 between the differences of two (B, T, 128) mels along time and along mel bins: a
    blurred mel (the L1 regression's median) has flatter differences than the real one, so this
    asks for the reference's onsets, decays and harmonic peaks-to-valleys, not only its level."""
    out = 0
    for dim in (1, 2):
        out = out + (x.diff(dim=dim) - target.diff(dim=dim)).abs().mean(dim=(1, 2))
    return out


def texture_l1(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B,) L1 between the local standard deviations of two (B, T, 128) mels: along time over
    windows of 4, 16 and 64 frames (per band) and along mel bins over 4 and 16 bins (per frame).
    It asks for as much movement as the target has (onsets, tremolo, harmonic peaks and valleys)
    and not for its exact place, so a denoiser may invent texture where it cannot know it."""
    out = 0
    for dim, sizes in ((1, (4, 16, 64)), (2, (4, 16))):
        for w in sizes:
            a, b = (t.unfold(dim, w, w).std(-1) for t in (x, target))
            out = out + (a - b).abs().mean(dim=(1, 2))
    return out / 5


def patch_swd(
    x: torch.Tensor,
    target: torch.Tensor,
    projections: int = 64,
    patch: int = 8,
    bands: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """() sliced Wasserstein-1 distance between the distributions of ``patch`` × ``patch`` patches
    (time × mel bins, side by side, each minus its own mean) of two (B, T, 128) mel batches,
    separately in each of ``bands`` groups of mel bins and again at half resolution, averaged.

    Unpaired: it compares what patches look like in the batch, not where they fall, so it asks
    for real texture (the shapes of onsets, partials and their flicker) that an L1 regression
    blurs, as a discriminator would, with random projections (fresh each call) instead of a
    trained network."""
    out, terms = x.new_zeros(()), 0
    for scale in (1, 2):
        a, b = (
            t if scale == 1 else torch.nn.functional.avg_pool2d(t[:, None], 2)[:, 0]
            for t in (x, target)
        )
        pa, pb = (
            t.unfold(1, patch, patch).unfold(2, patch, patch).flatten(-2) for t in (a, b)
        )  # (B, nt, nf, patch²)
        pa, pb = pa - pa.mean(-1, keepdim=True), pb - pb.mean(-1, keepdim=True)
        d = pa.shape[-1]
        proj = torch.randn(d, projections, generator=generator).to(x.device, x.dtype)
        proj = proj / proj.norm(dim=0, keepdim=True)
        for g in torch.arange(pa.shape[2]).tensor_split(bands):
            qa = pa[:, :, g].reshape(-1, d) @ proj
            qb = pb[:, :, g].reshape(-1, d) @ proj
            out = out + (qa.sort(0).values - qb.sort(0).values).abs().mean()
            terms += 1
    return out / terms


class MelCritic(torch.nn.Module):
    """A patch critic on (B, T, 128) mels with the prior beside them (2 channels): four strided
    2-D convolutions, a score per patch (about 30 frames × 30 bins). Training only."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [2, width, 2 * width, 4 * width, 4 * width]
        self.convs = torch.nn.ModuleList(
            torch.nn.utils.parametrizations.weight_norm(
                torch.nn.Conv2d(a, b, 3, stride=1 if i == 0 else 2, padding=1)
            )
            for i, (a, b) in enumerate(zip(chans[:-1], chans[1:], strict=True))
        )
        self.out = torch.nn.Conv2d(chans[-1], 1, 3, padding=1)

    def forward(self, mel: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(patch scores (B, 1, T/8, 16), the hidden feature maps)."""
        h = torch.stack([mel, prior], dim=1)
        feats = []
        for conv in self.convs:
            h = torch.nn.functional.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


def critic_step(critic, opt, x0: torch.Tensor, target: torch.Tensor, prior: torch.Tensor) -> float:
    """One hinge-loss update of ``critic`` (real: target, fake: x0, both beside the prior)."""
    real, _ = critic(target, prior)
    fake, _ = critic(x0.detach(), prior)
    loss = torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def adversarial_terms(
    critic, x0: torch.Tensor, target: torch.Tensor, prior: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generator hinge −mean score of x0, feature-matching L1 of x0's critic features against
    the target's), both scalars with gradients to x0 only: the critic's weights are frozen for
    the pass (no gradient accumulates in them) and trainable again after it."""
    critic.requires_grad_(False)
    try:
        fake, ff = critic(x0, prior)
        with torch.no_grad():
            _, rf = critic(target, prior)
    finally:
        critic.requires_grad_(True)
    fm = sum((a - b).abs().mean() for a, b in zip(ff, rf, strict=True)) / len(ff)
    return -fake.mean(), fm


def refine_x0(
    model, cond, tau: torch.Tensor, noise: torch.Tensor, detach: bool = True
) -> torch.Tensor:
    """(B, T, 128) the denoiser's x0 from the prior's mel noised to ``tau`` (B,), as rendering
    starts (``render._sample_frame_segment``); the prior is detached unless ``detach`` is False."""
    prior = cond.prior.clamp(-1, 1)
    z = diffusion.q_sample(prior.detach() if detach else prior, tau, noise)
    alpha, sigma = (s.view(-1, 1, 1) for s in diffusion.alpha_sigma(tau.float()))
    return alpha * z - sigma * model(z, tau, cond)


def sample_refine_tau(n: int, cfg: FrameTrainConfig, device: torch.device) -> torch.Tensor:
    """(n,) noise levels for the refinement loss: U[refine_tau_min, refine_tau_max)."""
    lo, hi = cfg.refine_tau_min, cfg.refine_tau_max
    return lo + (hi - lo) * torch.rand(n, device=device)


def frame_losses(
    model, b: FrameBatch, tau: torch.Tensor, noise: torch.Tensor, cond=None, sharp: bool = False
) -> tuple:
    """(prior L1, v L1), each (B,) float32; ``cond``: the batch's ``encode`` if already made.
    With ``sharp``, a third (B,): ``sharpness_l1`` of the prior and of the denoiser's x0."""
    cond = cond if cond is not None else model.encode(b.grid, b.context, b.context_mask, b.style)
    prior_l1 = (cond.prior - b.target).abs().mean(dim=(1, 2))
    z = diffusion.q_sample(b.target, tau, noise)
    alpha, sigma = (s.view(-1, 1, 1) for s in diffusion.alpha_sigma(tau.float()))
    v = alpha * noise - sigma * b.target
    v_pred = model(z, tau, cond)
    v_l1 = (v_pred - v).abs().mean(dim=(1, 2))
    if not sharp:
        return prior_l1, v_l1
    x0 = alpha * z - sigma * v_pred  # the denoiser's estimate of the clean mel
    return prior_l1, v_l1, sharpness_l1(cond.prior, b.target) + sharpness_l1(x0, b.target)


def sample_tau(n: int, cfg: FrameTrainConfig, device: torch.device) -> torch.Tensor:
    """(n,) noise levels: U[0, 1), with a fraction ``cfg.tau_focus`` squeezed into
    [0, ``cfg.tau_focus_max``) so the denoiser trains most where sampling uses it."""
    tau = torch.rand(n, device=device)
    focus = torch.rand(n, device=device) < cfg.tau_focus
    return torch.where(focus, tau * cfg.tau_focus_max, tau)


def velocity_hinge(
    model, b: FrameBatch, cond, rng: torch.Generator, refine: tuple | None = None
) -> torch.Tensor:
    """Mean hinge (scalar) on frames with notes: the log frame energy with every velocity raised
    by δ ~ U{4..24} (clipped at 127) must exceed the original's by ≥ 0.005·δ nats — of the prior,
    and with ``refine`` = (τ, noise) also of the denoiser's x0 from the noised prior (``refine_x0``,
    the same τ and noise on both sides), since rendering hears the denoiser's level, not the
    prior's. Half the time both sides are moved to the top of the range first (every note at one
    velocity in 90..127−δ, then +δ), where real data has few notes and a louder note could go
    unchecked."""
    grid = b.grid.clone()
    vel = grid[..., 2].long()
    delta = int(torch.randint(4, 25, (1,), generator=rng))
    if float(torch.rand(1, generator=rng)) < 0.5:
        base = int(torch.randint(90, 128 - delta, (1,), generator=rng))
        grid[..., 2] = torch.where(vel > 0, base, vel).to(grid.dtype)
        cond = model.encode(grid, b.context, b.context_mask, b.style)
        vel = grid[..., 2].long()
    grid[..., 2] = torch.where(vel > 0, (vel + delta).clamp(max=127), vel).to(grid.dtype)
    louder = model.encode(grid, b.context, b.context_mask, b.style)
    pairs = [(cond.prior, louder.prior)]
    if refine is not None:
        pairs.append(tuple(refine_x0(model, c, *refine, detach=False) for c in (cond, louder)))
    live = ((vel > 0) & (vel < 127)).any(-1).float()  # (B, T) frames whose notes got louder
    total = 0
    for quiet, loud in pairs:
        e0, e1 = (torch.logsumexp(audio.unscale(x.float().clamp(-1, 1)), -1) for x in (quiet, loud))
        total = total + (torch.relu(e0 - e1 + 0.005 * delta) * live).sum()
    return total / live.sum().clamp_min(1.0)


@torch.no_grad()
def validate(model, val: FrameBatch, chunk: int = 16) -> dict[str, float]:
    """Prior L1 and energy correlation, v L1 on a fixed τ grid with fixed noise, and the L1,
    ``texture_l1`` and ``patch_swd`` (fixed projections) of the denoiser's x0 from the prior
    noised to τ = 0.15 (rendering's start)."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    priors, v_l1, refined = [], [], []
    n = val.target.shape[0]
    for i in range(0, n, chunk):
        b = FrameBatch(*(t[i : i + chunk] for t in dataclasses.astuple(val)))
        tau = torch.linspace(0.05, 0.95, b.target.shape[0], device=b.target.device)
        noise = torch.randn(b.target.shape, generator=gen).to(b.target.device)
        cond = model.encode(b.grid, b.context, b.context_mask, b.style)  # once: losses, prior
        _, v = frame_losses(model, b, tau, noise, cond)
        priors.append(cond.prior)
        v_l1.append(v)
        noise = torch.randn(b.target.shape, generator=gen).to(b.target.device)
        refined.append(refine_x0(model, cond, torch.full_like(tau, 0.15), noise).clamp(-1, 1))
    prior, x0 = torch.cat(priors), torch.cat(refined)
    ref = audio.unscale(val.target)
    return {
        "prior_l1": float((audio.unscale(prior.clamp(-1, 1)) - ref).abs().mean()),
        "prior_corr": energy_correlation(audio.unscale(prior.clamp(-1, 1)), ref),
        "v_l1": float(torch.cat(v_l1).mean()),
        "refine_l1": float((audio.unscale(x0) - ref).abs().mean()),
        "refine_texture": float(texture_l1(x0, val.target).mean()),
        "refine_swd": float(patch_swd(x0, val.target, generator=torch.Generator().manual_seed(0))),
    }


def lr_at(step: int, cfg: FrameTrainConfig, minutes: float) -> float:
    """Warmup, then cosine decay to lr·min_lr_ratio at ``steps`` or ``max_minutes``, first reached."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.max_minutes:
        progress = max(progress, minutes / cfg.max_minutes)
    cos = 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)


# ---- The loop -----------------------------------------------------------------------------------


def _setup(cfg: FrameTrainConfig, log=print):
    """(model, EMA copy, program map, history, same_layout) — new, or continued from ``cfg.resume``.

    On resume, ``cfg.frame`` may change the architecture (e.g. ``{"velocity": "gain"}``): weights
    whose names and shapes still fit are kept, the rest start fresh, and ``same_layout`` is False
    (the saved optimizer moments no longer fit and are not loaded)."""
    history: dict[str, Any] = {"steps": 0, "runs": [], "val": []}
    same_layout = True
    if cfg.resume:
        loaded = weights.load_model(cfg.resume)
        if loaded.config.frame is None:
            raise ValueError(f"{cfg.resume} is not a frame-conditioned model")
        mc, program_map = loaded.config, loaded.program_map
        if cfg.frame:
            frame = FrameConfig(**{**mc.frame.as_dict(), **cfg.frame})
            mc = dataclasses.replace(mc, frame=frame)
        history = dict(loaded.meta.get("training") or history)
    else:
        mc = ModelConfig(prediction_type="v_prediction", frame=FrameConfig(**cfg.frame))
        program_map = cfg.program_map
    model, ema = build_model(mc), build_model(mc)
    if cfg.resume:
        own = model.state_dict()
        old = loaded.model.state_dict()
        keep = {k: v for k, v in old.items() if k in own and own[k].shape == v.shape}
        fresh = sorted(set(own) - set(keep))
        dropped = sorted(set(old) - set(keep))
        model.load_state_dict(keep, strict=False)
        if fresh or dropped:
            same_layout = False
            log(f"[train] architecture changed on resume: new {fresh}, dropped {dropped}")
    ema.load_state_dict(model.state_dict())
    ema.eval().requires_grad_(False)
    return model, ema, program_map, history, same_layout


@dataclass
class _Run:
    """What one training run holds (made by ``_start``, used by the loop's helpers)."""

    cfg: FrameTrainConfig
    model: Any
    ema: Any
    opt: torch.optim.Optimizer
    device: torch.device
    program_map: str
    history: dict
    resumed_opt: bool
    train_set: FrameSampler
    val: FrameBatch
    data_info: dict
    n_params: int
    log_file: Any
    writer: csv.DictWriter
    t0: float = field(default_factory=time.time)
    val_rows: list = field(default_factory=list)

    @property
    def step0(self) -> int:
        return int(self.history.get("steps", 0))

    @property
    def out(self) -> Path:
        return Path(self.cfg.out)


def _start(cfg: FrameTrainConfig, log) -> _Run:
    """Model (new or resumed), optimizer (moments restored when the layout is unchanged), the
    train sampler, the fixed validation batch and the CSV log."""
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    model, ema, program_map, history, same_layout = _setup(cfg, log)
    device = weights.resolve_device(cfg.device)
    model.to(device).train()
    ema.to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr,
        betas=(0.9, 0.99),
    )
    resumed_opt = bool(cfg.resume) and same_layout and _load_state(Path(cfg.resume), model, opt)
    if resumed_opt:
        ema.load_state_dict(weights.load_model(cfg.resume).model.state_dict())
        ema.to(device)
    slots, styles = model.frame.slots, model.frame.styles
    index = cache_index(cfg.data)
    train_pieces, val_pieces = (cache.load_cache(cfg.data, split) for split in ("train", "val"))
    train_set = FrameSampler(
        train_pieces,
        program_map,
        slots,
        cfg.context_drop,
        piece_styles(train_pieces, index, styles),
        parse_source_weights(cfg.source_weights, {p.source for p in train_pieces}),
    )
    val_set = FrameSampler(
        val_pieces, program_map, slots, styles=piece_styles(val_pieces, index, styles)
    )
    val = val_set.batch(np.random.default_rng(1234), cfg.val_examples, drop=False).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    hours = sum(p.seconds for p in train_set.pieces) / 3600
    log(
        f"[train] FrameNet {n_params / 1e6:.2f} M params, {len(train_set.pieces)} train pieces "
        f"({hours:.2f} h), {len(val_set.pieces)} val pieces, resumed optimizer: {resumed_opt}"
    )
    log_path = Path(cfg.out) / "train_log.csv"
    fresh = not (cfg.resume and log_path.exists())
    log_file = open(log_path, "w" if fresh else "a", newline="")  # noqa: SIM115
    writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
    if fresh:
        writer.writeheader()
    return _Run(
        cfg, model, ema, opt, device, program_map, history, resumed_opt, train_set, val,
        index, n_params, log_file, writer, t0,
        list(history.get("val", [])),
    )  # fmt: skip


def _save(run: _Run, step: int, final: bool, log) -> None:
    """EMA model + provenance + raw weights and optimizer moments (``training_state-*``)."""
    cfg = run.cfg
    info = {
        "steps": step,
        "wall_minutes": round((time.time() - run.t0) / 60, 2),
        "hardware": hardware(),
        "device": str(run.device),
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "examples_seen": step * cfg.batch_size,
        "loss": "L1(prior, x0) + L1 on v, continuous cosine tau ~ U[0,1)"
        + (f", {cfg.tau_focus:.0%} of it tau ~ U[0,{cfg.tau_focus_max})" if cfg.tau_focus else "")
        + (f" + {cfg.monotone_weight} x velocity hinge" if cfg.monotone_weight else "")
        + (
            f" + {cfg.sharp_weight} x sharpness L1 (time/bin differences)"
            if cfg.sharp_weight
            else ""
        )
        + (
            f" + {cfg.refine_weight} x (L1 + {cfg.texture_weight} x texture L1) of the denoiser's"
            f" x0 from the prior noised to tau ~ U[{cfg.refine_tau_min}, {cfg.refine_tau_max})"
            if cfg.refine_weight
            else ""
        )
        + (
            f" + {cfg.swd_weight} x sliced Wasserstein distance of its 8x8 mel patches"
            if cfg.swd_weight and cfg.refine_weight
            else ""
        )
        + (
            f" + {cfg.adv_weight} x (critic hinge + {cfg.fm_weight} x feature matching)"
            if cfg.adv_weight and cfg.refine_weight
            else ""
        )
        + (f"; sources weighted {cfg.source_weights}" if cfg.source_weights else ""),
        "data": {
            "cache": str(cfg.data),
            **{k: run.data_info.get(k) for k in ("pieces", "hours", "hours_by_source", "settings")},
        },
        "resumed_from": cfg.resume,
        "finished": final,
    }
    training = {
        "steps": run.step0 + step,
        "runs": [*run.history.get("runs", []), info],
        "val": run.val_rows,
        "parameters": run.n_params,
    }
    extra = {"training": training, "training_state": _save_state(run.out, run.model, run.opt)}
    weights.save_model(
        run.ema,
        run.out,
        name=cfg.name,
        description=cfg.description,
        program_map=run.program_map,
        extra=extra,
    )
    minutes = (time.time() - run.t0) / 60
    log(f"[train] saved {run.out} at step {run.step0 + step} ({minutes:.1f} min)")


def _validate(run: _Run, step: int, log) -> None:
    row = {"step": run.step0 + step, "minutes": round((time.time() - run.t0) / 60, 1)}
    row.update({k: round(v, 4) for k, v in validate(run.ema, run.val).items()})
    run.val_rows.append(row)
    log(f"[val] {row}")


def _log_losses(run: _Run, step: int, lr: float, acc: list, rate: float, log) -> None:
    m = np.mean(acc, axis=0)
    run.writer.writerow(
        {
            "step": run.step0 + step,
            "elapsed_s": round(time.time() - run.t0, 1),
            "lr": f"{lr:.3e}",
            "loss": round(m[0], 4),
            "prior_l1": round(m[1], 4),
            "v_l1": round(m[2], 4),
            "examples_per_s": round(rate, 1),
        }
    )
    run.log_file.flush()
    total = run.step0 + step
    log(f"[train] step {total} loss {m[0]:.4f} prior {m[1]:.4f} v {m[2]:.4f} {rate:.1f} ex/s")


def train(cfg: FrameTrainConfig, log=print) -> Path:
    """One training run; returns the model folder ``cfg.out``."""
    cache.check_cache(cfg.data)  # before anything is written
    run = _start(cfg, log)
    model, opt, device = run.model, run.opt, run.device
    stream = data.BatchStream(
        run.train_set, cfg.seed + run.step0, cfg.batch_size, 1, cfg.data_workers
    )
    batches = iter(stream)
    bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=bf16)
    ema_p, model_p = list(run.ema.parameters()), list(model.parameters())
    last_save, t_log, seen, acc = time.time(), time.time(), 0, []
    hinge_rng = torch.Generator().manual_seed(cfg.seed + run.step0)
    critic = critic_opt = None
    if cfg.adv_weight and cfg.refine_weight:
        critic = MelCritic().to(device)
        critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.9))
    step = 0
    while step < cfg.steps:
        minutes = (time.time() - run.t0) / 60
        if cfg.max_minutes is not None and minutes > cfg.max_minutes:
            log(f"[train] time limit of {cfg.max_minutes} min reached")
            break
        b = next(batches).to(device)
        lr = lr_at(run.step0 + step if run.resumed_opt else step, cfg, minutes)
        for g in opt.param_groups:
            g["lr"] = lr
        tau = sample_tau(b.target.shape[0], cfg, device)
        with autocast:  # bf16 on CUDA; the losses are taken in float32 (outputs are .float())
            cond = model.encode(b.grid, b.context, b.context_mask, b.style)
            losses = frame_losses(
                model, b, tau, torch.randn_like(b.target), cond, sharp=bool(cfg.sharp_weight)
            )
            prior_l1, v_l1 = losses[:2]
            loss = cfg.prior_weight * prior_l1.mean() + v_l1.mean()
            if cfg.sharp_weight:
                loss = loss + cfg.sharp_weight * losses[2].mean()
            refine = None
            if cfg.refine_weight:
                refine = (sample_refine_tau(len(tau), cfg, device), torch.randn_like(b.target))
                x0 = refine_x0(model, cond, *refine).float()
                r = (x0 - b.target).abs().mean(dim=(1, 2))
                if cfg.texture_weight:
                    r = r + cfg.texture_weight * texture_l1(x0, b.target)
                loss = loss + cfg.refine_weight * r.mean()
                if cfg.swd_weight:
                    loss = loss + cfg.swd_weight * patch_swd(x0, b.target)
                if critic is not None:
                    prior = cond.prior.detach().clamp(-1, 1).float()
                    critic_step(critic, critic_opt, x0, b.target, prior)
                    adv, fm = adversarial_terms(critic, x0, b.target, prior)
                    loss = loss + cfg.adv_weight * (adv + cfg.fm_weight * fm)
            if cfg.monotone_weight:
                loss = loss + cfg.monotone_weight * velocity_hinge(
                    model, b, cond, hinge_rng, refine
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, model_p, 1 - min(cfg.ema_decay, (1 + step) / (10 + step)))
        seen += b.target.shape[0]
        acc.append((loss.item(), prior_l1.mean().item(), v_l1.mean().item()))
        if step % cfg.log_every == 0:
            _log_losses(run, step, lr, acc, seen / (time.time() - t_log), log)
            t_log, seen, acc = time.time(), 0, []
        if step % cfg.val_every == 0:
            _validate(run, step, log)
        if time.time() - last_save > cfg.checkpoint_minutes * 60:
            _save(run, step, False, log)
            last_save = time.time()
    if not run.val_rows or run.val_rows[-1]["step"] != run.step0 + step:
        _validate(run, step, log)
    _save(run, step, True, log)
    run.log_file.close()
    stream.close()
    return run.out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m midisynth.train_frame", description=__doc__.splitlines()[0]
    )
    ap.add_argument("data")
    for f in dataclasses.fields(FrameTrainConfig):
        if f.name == "data":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "frame":
            ap.add_argument(flag, default="{}", help="JSON FrameConfig overrides")
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
        ap.add_argument(flag, default=default, type=kind, help=f"default: {default}")
    args = vars(ap.parse_args(argv))
    args["frame"] = json.loads(args["frame"])
    print(train(FrameTrainConfig(**args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
