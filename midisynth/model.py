"""The spectrogram-diffusion network (Hawthorne et al. 2022): two T5.1.1 encoders and a FiLM decoder.

Module and parameter names reproduce the diffusers layout exactly (`SpectrogramNotesEncoder`,
`SpectrogramContEncoder`, `T5FilmDecoder`), so the released weights load with
`load_state_dict(strict=True)` into `notes_encoder`, `continuous_encoder` and `decoder` unchanged.

Differences from diffusers that do not change the maths (fp32 outputs agree to rounding):
- the encoders run once per segment (`encode`), and the decoder's cross-attention keys/values are
  projected once per segment (`FilmDecoder.precompute`) instead of at every denoising step;
- the notes encoder only runs over the tokens up to the longest real sequence in the batch (rounded up
  to `TRIM_MULTIPLE`): padded keys are masked, so real positions cannot see them;
- key columns masked in every batch row are dropped from the cross-attention (their softmax weight
  is exactly 0 under diffusers' -1e10 bias), which removes the mask entirely for batch size 1.

One segment (B = batch, L ≤ 2048 tokens):

    kv = model.precompute(model.encode(tokens, context, context_mask))  # once per segment
    for t in times:                                                     # every denoising step
        eps = model(x, t, kv)                                           # (B, 256, 128) fp32
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RMS_EPS = 1e-6  # T5 layer-norm epsilon (all three modules)
TRIM_MULTIPLE = 64  # the notes encoder runs on a multiple of this many tokens (stable shapes)


@dataclass
class ModelConfig:
    """Architecture hyper-parameters (defaults = the released "base_with_context" model)."""

    d_model: int = 768
    num_heads: int = 12
    d_kv: int = 64  # per-head width; num_heads * d_kv need not equal d_model
    d_ff: int = 2048  # width of each gated-GELU branch
    num_encoder_layers: int = 12  # each encoder
    num_decoder_layers: int = 12
    vocab_size: int = 1536
    max_tokens: int = 2048  # rows of the notes encoder's position table
    input_dims: int = 128  # mel bins
    targets_length: int = 256  # frames per segment (decoder positions)
    context_length: int = 256  # frames of context (context-encoder positions)
    # t in [0, 1) is scaled by this before the time embedding; diffusers' class default 2000.0 is
    # wrong for the released weights (their config says 20000.0).
    max_decoder_noise_time: float = 20000.0
    dropout: float = 0.1  # training only
    # What the decoder outputs: "epsilon" (the released model) or "v_prediction" (v = α·ε − σ·x0,
    # models trained here; see diffusion.py). Not part of the weights, but part of their meaning.
    prediction_type: str = "epsilon"
    # Our own frame-conditioned model (framenet.py) instead of the T5 layout above, whose fields
    # are then unused. None = the released architecture.
    frame: FrameConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.frame, dict):  # from config.json
            self.frame = FrameConfig(**self.frame)

    @classmethod
    def base(cls) -> ModelConfig:
        """The released model (spec §4.5, 409.7 M parameters)."""
        return cls()

    @classmethod
    def small(cls) -> ModelConfig:
        """The paper's small model (102.7 M parameters)."""
        return cls(
            d_model=512, num_heads=6, d_kv=64, d_ff=1024, num_encoder_layers=8, num_decoder_layers=8
        )

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A 0.8 M-parameter model for tests and smoke runs (tiny-random)."""
        return cls(
            d_model=64, num_heads=2, d_kv=32, d_ff=128, num_encoder_layers=2, num_decoder_layers=2
        )

    @classmethod
    def named(cls, name: str) -> ModelConfig:
        """`base`, `small` or `tiny`."""
        if name not in ("base", "small", "tiny"):
            raise ValueError(f"unknown model config {name!r}; choose base, small or tiny")
        return getattr(cls, name)()


@dataclass
class FrameConfig:
    """Architecture of the frame-conditioned model (``framenet.FrameNet``): the notes sounding in
    each frame (``notegrid``) → a regression prior of the mel → a diffusion refiner from it."""

    d_model: int = 192  # channels of every block
    prior_layers: int = 6  # blocks of the prior (notes + context → mel)
    denoise_layers: int = 4  # blocks of the denoiser (noisy mel + prior → v)
    kernel: int = 5  # depthwise time-convolution width (frames)
    dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 1])  # cycled over blocks
    ff_mult: int = 2  # channel-MLP expansion
    context_layers: int = 2  # blocks over the previous segment's mel before pooling
    slots: int = 32  # notes per frame (notegrid.SLOTS)
    note_dim: int = 64  # width of each (note, frame) code before the per-frame sum
    # How velocity enters: "gain" — only as a per-instrument monotone log gain s·ln(v/127), s ≥ 0,
    # on each note's harmonic spectrum (louder never sounds quieter); "embedding" — coarse bins +
    # a linear term in each note's code (frame-s, whose loudness was not monotonic in velocity).
    velocity: str = "gain"
    # Channels of a 2-D convolutional head over (time, mel bin) at the denoiser's output (0 = none):
    # the 1-D blocks mix every bin through d_model channels, too coarse to tell per-bin noise from
    # per-bin texture; a few local 3×3 convolutions over the noisy mel do that cheaply.
    denoise_2d: int = 0
    denoise_2d_layers: int = 3
    # Timbre styles the model is told, e.g. the SoundFonts of its training audio (a learned code
    # each, added to the context code and to every note's code; the first is the default).
    # Trained on two GM SoundFonts without it, the model renders their average; [] = none.
    styles: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Encoded:
    """Both encoders' outputs, concatenated along length (notes first, then context)."""

    encodings: Tensor  # (B, Lk, D), Lk = trimmed token count + context frames
    mask: Tensor  # (B, Lk) bool, True = a real key


@dataclass
class CrossKV:
    """Per-layer cross-attention keys/values, computed once per segment by `FilmDecoder.precompute`.

    A batch row with no valid key at all (the CFG-unconditional pass: all tokens PAD and the context
    masked) gets a zero cross-attention output, as in the original; SDPA with an all-False mask would
    give NaN and diffusers' -1e10 bias a uniform average. diffusers never meets this case: every
    token row holds at least EOS and its pipeline runs no classifier-free guidance.
    """

    keys: list[Tensor]  # per decoder layer (B, H, Lk', d_kv); Lk' = keys valid in some batch row
    values: list[Tensor]  # per decoder layer (B, H, Lk', d_kv)
    attn_mask: Tensor | None  # (B, 1, 1, Lk') bool for SDPA; None when every kept key is valid
    keep: Tensor | None  # (B, 1, 1, 1) 0/1: 0 zeroes rows with no valid key; None if none empty


def timestep_embedding(t: Tensor, dim: int, max_period: float) -> Tensor:
    """Sinusoidal embedding of `t * max_period`, as diffusers' `get_timestep_embedding`.

    Args:
        t: (B,) noise times in [0, 1).
    Returns:
        (B, dim) float32: [sin | cos], frequencies exp(-k ln(max_period) / (dim/2 - 1)).
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=t.device)
        / (half - 1)
    )
    args = (t * max_period).float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([args.sin(), args.cos()], dim=-1)


@dataclass(frozen=True)
class SinusoidCode:
    """The 'fixed_permuted_offset' position code as a function of (possibly fractional) positions,
    [N] → [N, dim] float32: first half sin(p·div_k + φ_k), second half cos(p·div_k + ψ_k),
    div_k = exp(−k·ln(10000)/(dim/2 − 1)), then the columns permuted by ``perm``. Only for models
    trained from scratch (see sinusoid_table)."""

    div: Tensor  # (dim/2,) float64 angular frequency per position step
    phase: Tensor  # (2, dim/2) float64 phases of the sin and cos halves
    perm: Tensor  # (dim,) column permutation

    @classmethod
    def draw(cls, dim: int, generator: torch.Generator | None = None) -> SinusoidCode:
        """Random phases and permutation (from ``generator``, else torch's global RNG)."""
        half = dim // 2
        k = torch.arange(half, dtype=torch.float64)
        div = torch.exp(-math.log(10000.0) * k / max(half - 1, 1))
        phase = torch.rand(2, half, generator=generator).double() * 2 * math.pi
        return cls(div, phase, torch.randperm(dim, generator=generator))

    def __call__(self, positions: Tensor) -> Tensor:
        arg = positions.double()[:, None] * self.div[None]  # (N, dim/2)
        table = torch.cat([torch.sin(arg + self.phase[0]), torch.cos(arg + self.phase[1])], -1)
        if len(self.perm) > table.shape[1]:  # odd width: one zero column
            table = torch.cat([table, table.new_zeros(len(positions), 1)], dim=-1)
        return table[:, self.perm].float()


def sinusoid_table(length: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """A fresh 'fixed_permuted_offset' position table (random phases, permuted columns), (length, dim).

    Only for models trained from scratch: the released model's tables are random draws stored in the
    checkpoint and must be loaded, never regenerated.
    """
    return SinusoidCode.draw(dim, generator)(torch.arange(length))


class RMSNorm(nn.Module):
    """T5 layer norm: x / rms(x) * weight, no mean, no bias; statistics always in fp32."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 even under bf16 (as HF's T5LayerNorm); cast back before the scale.
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=RMS_EPS)
        return y.to(self.weight.dtype) * self.weight


class GatedGelu(nn.Module):
    """T5.1.1 MLP: wo(gelu_tanh(wi_0 x) * wi_1 x), no biases (diffusers/HF `DenseReluDense`)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(d_model, d_ff, bias=False)
        self.wi_1 = nn.Linear(d_model, d_ff, bias=False)
        self.wo = nn.Linear(d_ff, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)  # (B, T, F)
        return self.wo(self.dropout(h))


def _heads(x: Tensor, n: int) -> Tensor:
    """(B, T, n*d) -> (B, n, T, d), heads split row-major (feature = head * d + k)."""
    return x.unflatten(-1, (n, -1)).transpose(1, 2)


def _merge(x: Tensor) -> Tensor:
    """(B, n, T, d) -> (B, T, n*d)."""
    return x.transpose(1, 2).flatten(2)


# ---------------------------------------------------------------------------------- encoders
class T5Attention(nn.Module):
    """Encoder self-attention with HF-T5 parameter names (q, k, v, o); no 1/sqrt(d) scaling."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.n_heads, self.p = cfg.num_heads, cfg.dropout
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        """x (B, T, D), bias (B, 1, 1, T) additive or None -> (B, T, D)."""
        q, k, v = (_heads(f(x), self.n_heads) for f in (self.q, self.k, self.v))  # (B, H, T, dk)
        p = self.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=1.0)
        return self.o(_merge(y))


class _EncSelfAttn(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(cfg)
        self.layer_norm = RMSNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        return x + self.dropout(self.SelfAttention(self.layer_norm(x), bias))


class _EncFF(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.DenseReluDense = GatedGelu(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.layer_norm = RMSNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.DenseReluDense(self.layer_norm(x)))


class EncoderLayer(nn.Module):
    """HF `T5Block` (encoder): layer.0 self-attention, layer.1 MLP, both pre-norm residual."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_EncSelfAttn(cfg), _EncFF(cfg)])

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        return self.layer[1](self.layer[0](x, bias))


class _Encoder(nn.Module):
    """The layer stack shared by both encoders (embedding is the subclass's business)."""

    def __init__(self, cfg: ModelConfig, positions: int, embed_name: str, embed: nn.Module) -> None:
        super().__init__()
        self.add_module(embed_name, embed)  # first, so state_dict order matches diffusers
        self.position_encoding = nn.Embedding(positions, cfg.d_model)
        self.position_encoding.weight.requires_grad = False  # fixed table, loaded from checkpoint
        self.dropout_pre = nn.Dropout(cfg.dropout)
        self.encoders = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.num_encoder_layers))
        self.layer_norm = RMSNorm(cfg.d_model)
        self.dropout_post = nn.Dropout(cfg.dropout)

    def _stack(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D) embedded inputs, mask (B, T) bool -> (B, T, D)."""
        x = self.dropout_pre(x)
        bias = None
        if not bool(mask.all()):
            # Additive finfo.min bias as HF's get_extended_attention_mask: a row whose keys are all
            # masked (first-segment context, CFG-unconditional tokens) then averages uniformly instead
            # of giving the NaN a boolean SDPA mask would; such rows are masked downstream anyway.
            bias = torch.zeros(mask.shape, dtype=x.dtype, device=x.device)
            bias = bias.masked_fill(~mask, torch.finfo(x.dtype).min)[:, None, None, :]
        for lyr in self.encoders:
            x = lyr(x, bias)  # (B, T, D)
        return self.dropout_post(self.layer_norm(x))


class NotesEncoder(_Encoder):
    """Note-token encoder (diffusers `SpectrogramNotesEncoder`)."""

    token_embedder: nn.Embedding

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(
            cfg, cfg.max_tokens, "token_embedder", nn.Embedding(cfg.vocab_size, cfg.d_model)
        )

    def forward(self, tokens: Tensor, mask: Tensor, trim: bool = True) -> tuple[Tensor, Tensor]:
        """tokens (B, L) int64 (PAD = 0 at the end), mask (B, L) bool -> ((B, L', D), (B, L') bool).

        With `trim`, L' = the longest real length in the batch rounded up to TRIM_MULTIPLE (≤ L);
        outputs at positions < L' equal the untrimmed ones, since padded keys are masked.
        """
        if trim:
            idx = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)
            last = int((mask * idx).amax())  # one past the last real token, over the batch
            n = min(tokens.shape[1], max(1, math.ceil(last / TRIM_MULTIPLE)) * TRIM_MULTIPLE)
            tokens, mask = tokens[:, :n], mask[:, :n]
        # Absolute positions 0..L'-1: trimming drops the tail, so the table is indexed as before.
        x = self.token_embedder(tokens) + self.position_encoding.weight[: tokens.shape[1]]
        return self._stack(x, mask), mask


class ContextEncoder(_Encoder):
    """Encoder of the previous segment's scaled log-mel (diffusers `SpectrogramContEncoder`)."""

    input_proj: nn.Linear

    def __init__(self, cfg: ModelConfig) -> None:
        proj = nn.Linear(cfg.input_dims, cfg.d_model, bias=False)
        super().__init__(cfg, cfg.context_length, "input_proj", proj)

    def forward(self, context: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """context (B, T, 128) scaled to [-1, 1], mask (B, T) bool -> ((B, T, D), mask).

        Positions are 'terminal_relative' as in the original: (i - n_valid) mod table length, so the
        last valid frame of a left-aligned partial context gets the last position. For a full or an
        empty context this is 0..T-1, which is what diffusers (whose roll is a no-op) always uses.
        """
        w = self.position_encoding.weight  # (P, D)
        n_valid = mask.sum(-1, keepdim=True)  # (B, 1)
        pos = (torch.arange(context.shape[1], device=context.device) - n_valid) % w.shape[0]
        x = self.input_proj(context.to(w.dtype)) + w[pos]  # (B, T, D)
        return self._stack(x, mask), mask


# ---------------------------------------------------------------------------------- decoder
class FiLM(nn.Module):
    """x * (1 + scale) + shift, [scale | shift] = Linear(4d -> 2d)(cond)."""

    def __init__(self, d_cond: int, d_model: int) -> None:
        super().__init__()
        self.scale_bias = nn.Linear(d_cond, 2 * d_model, bias=False)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        scale, shift = self.scale_bias(cond).chunk(2, dim=-1)  # (B, 1, D) each
        return x * (1 + scale) + shift


class Attention(nn.Module):
    """diffusers `Attention(out_bias=False, scale_qk=False)` names: to_q, to_k, to_v, to_out.0."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.n_heads = cfg.num_heads
        self.to_q = nn.Linear(cfg.d_model, inner, bias=False)
        self.to_k = nn.Linear(cfg.d_model, inner, bias=False)
        self.to_v = nn.Linear(cfg.d_model, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, cfg.d_model, bias=False), nn.Dropout(0.0)])

    def kv(self, enc: Tensor) -> tuple[Tensor, Tensor]:
        """enc (B, S, D) -> keys, values (B, H, S, dk)."""
        return _heads(self.to_k(enc), self.n_heads), _heads(self.to_v(enc), self.n_heads)

    def forward(
        self,
        x: Tensor,
        k: Tensor | None = None,
        v: Tensor | None = None,
        mask: Tensor | None = None,
        keep: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, D); k, v (B, H, S, dk) or None for self-attention -> (B, T, D)."""
        q = _heads(self.to_q(x), self.n_heads)  # (B, H, T, dk)
        if k is None:
            k, v = self.kv(x)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)  # (B, H, T, dk)
        if keep is not None:
            y = y * keep  # rows with no valid key: zero output (original), not NaN
        return self.to_out[1](self.to_out[0](_merge(y)))


class _DecSelfAttn(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer_norm = RMSNorm(cfg.d_model)
        self.FiLMLayer = FiLM(4 * cfg.d_model, cfg.d_model)  # capital FiLMLayer: diffusers' name
        self.attention = Attention(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return x + self.dropout(self.attention(self.FiLMLayer(self.layer_norm(x), cond)))


class _DecCrossAttn(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.layer_norm = RMSNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, keep: Tensor | None
    ) -> Tensor:
        if k.shape[-2] == 0:  # no valid key in any row (all-unconditional batch): output is zero
            return x
        return x + self.dropout(self.attention(self.layer_norm(x), k, v, mask, keep))


class _DecFF(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.DenseReluDense = GatedGelu(cfg.d_model, cfg.d_ff, cfg.dropout)
        self.film = FiLM(4 * cfg.d_model, cfg.d_model)  # lower-case `film`: diffusers' name
        self.layer_norm = RMSNorm(cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return x + self.dropout(self.DenseReluDense(self.film(self.layer_norm(x), cond)))


class DecoderLayer(nn.Module):
    """layer.0 FiLM self-attention, layer.1 cross-attention (no FiLM), layer.2 FiLM MLP."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList([_DecSelfAttn(cfg), _DecCrossAttn(cfg), _DecFF(cfg)])

    def forward(self, x: Tensor, cond: Tensor, kv: CrossKV, i: int) -> Tensor:
        x = self.layer[0](x, cond)
        x = self.layer[1](x, kv.keys[i], kv.values[i], kv.attn_mask, kv.keep)
        return self.layer[2](x, cond)


class FilmDecoder(nn.Module):
    """Non-causal T5 decoder with FiLM time conditioning (diffusers `T5FilmDecoder`); predicts eps."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.max_noise_time = cfg.max_decoder_noise_time
        self.conditioning_emb = nn.Sequential(
            nn.Linear(d, 4 * d, bias=False),
            nn.SiLU(),
            nn.Linear(4 * d, 4 * d, bias=False),
            nn.SiLU(),
        )
        self.position_encoding = nn.Embedding(cfg.targets_length, d)
        self.position_encoding.weight.requires_grad = False
        self.continuous_inputs_projection = nn.Linear(cfg.input_dims, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.decoders = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        self.decoder_norm = RMSNorm(d)
        self.post_dropout = nn.Dropout(cfg.dropout)
        self.spec_out = nn.Linear(d, cfg.input_dims, bias=False)

    def precompute(self, encoded: Encoded) -> CrossKV:
        """Project the encodings to every layer's cross-attention keys/values (once per segment)."""
        enc, mask = encoded.encodings, encoded.mask  # (B, Lk, D), (B, Lk)
        enc = enc.to(self.spec_out.weight.dtype)
        cols = mask.any(0)  # (Lk,) keys that some row may attend to
        if not bool(cols.all()):
            # Masked keys get softmax weight exactly 0 under diffusers' -1e10 bias: drop them.
            idx = cols.nonzero().squeeze(1)
            enc, mask = enc[:, idx], mask[:, idx]
        attn_mask = keep = None
        if not bool(mask.all()):
            empty = ~mask.any(-1)  # (B,) rows with no valid key: CFG-unconditional only
            attn_mask = (mask | empty[:, None])[:, None, None, :]  # any pattern avoids SDPA's NaN
            keep = (~empty).to(enc.dtype)[:, None, None, None] if bool(empty.any()) else None
        keys, values = zip(*(lyr.layer[1].attention.kv(enc) for lyr in self.decoders), strict=True)
        return CrossKV(list(keys), list(values), attn_mask, keep)

    def forward(self, x: Tensor, t: Tensor | float, kv: CrossKV) -> Tensor:
        """Predict the noise.

        Args:
            x: (B, T, 128) noisy scaled log-mel (any float dtype; cast to the weights' dtype).
            t: (B,) or scalar noise time in [0, 1), multiplied by max_decoder_noise_time inside.
            kv: from `precompute` for this segment (batch B).
        Returns:
            (B, T, 128) float32 eps prediction (fp32 whatever the compute dtype, for the sampler).
        """
        dtype, (B, T, _) = self.spec_out.weight.dtype, x.shape
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(B)
        emb = timestep_embedding(t, self.position_encoding.embedding_dim, self.max_noise_time)
        cond = self.conditioning_emb(emb.to(dtype))[:, None]  # (B, 1, 4D)
        h = self.continuous_inputs_projection(x.to(dtype)) + self.position_encoding.weight[:T]
        h = self.dropout(h)  # (B, T, D)
        for i, lyr in enumerate(self.decoders):
            h = lyr(h, cond, kv, i)
        h = self.post_dropout(self.decoder_norm(h))
        return self.spec_out(h).float()  # (B, T, 128)


class SpectrogramDiffusion(nn.Module):
    """The full network; `notes_encoder`, `continuous_encoder`, `decoder` = the diffusers modules."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.notes_encoder = NotesEncoder(config)
        self.continuous_encoder = ContextEncoder(config)
        self.decoder = FilmDecoder(config)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T5-style init (for training from scratch / tiny-random); no-op on the meta device."""
        if self.decoder.spec_out.weight.is_meta:
            return
        for name, p in self.named_parameters():
            if p.dim() == 2:
                # q (and to_q) carry T5's folded 1/sqrt(d_kv) logit scale.
                fan_in = p.shape[1] * (self.config.d_kv if name.endswith("q.weight") else 1)
                p.normal_(0.0, 1.0 if "embedder" in name else fan_in**-0.5)
        for m in (self.notes_encoder, self.continuous_encoder, self.decoder):
            w = m.position_encoding.weight
            w.copy_(sinusoid_table(w.shape[0], w.shape[1]))

    def encode(self, tokens: Tensor, context: Tensor, context_mask: Tensor) -> Encoded:
        """Run both encoders once for a segment.

        Args:
            tokens: (B, L) int64 note tokens, PAD (0) at the end; mask = tokens > 0.
            context: (B, 256, 128) previous segment's log-mel scaled to [-1, 1].
            context_mask: (B, 256) bool; all False for the first segment.
        """
        notes, notes_mask = self.notes_encoder(tokens, tokens > 0)  # (B, L', D)
        ctx, ctx_mask = self.continuous_encoder(context, context_mask)  # (B, 256, D)
        return Encoded(torch.cat([notes, ctx], 1), torch.cat([notes_mask, ctx_mask], 1))

    def precompute(self, encoded: Encoded) -> CrossKV:
        """Cross-attention keys/values for all decoder layers (see `FilmDecoder.precompute`)."""
        return self.decoder.precompute(encoded)

    def forward(self, x: Tensor, t: Tensor | float, kv: CrossKV) -> Tensor:
        """One denoising step: (B, 256, 128) noisy mel, t in [0, 1) -> (B, 256, 128) fp32 eps."""
        return self.decoder(x, t, kv)
