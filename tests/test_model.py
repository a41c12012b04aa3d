"""midisynth.model against the diffusers modules, plus shapes, key names, bf16 and masking cases."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from helpers import diffusers_modules

from midisynth.model import (
    TRIM_MULTIPLE,
    Encoded,
    ModelConfig,
    SpectrogramDiffusion,
)

PARITY_TOL = 1e-4  # fp32 max abs difference allowed against diffusers
SCALED_SILENCE = 2 * 11.512925 / (11.512925 + 4.0) - 1  # log-mel 0 scaled to [-1, 1] (§5.4)

# First 15 ids of elise_format0.mid segment 0 (spec §3.9).
ELISE_PREFIX = [
    1134,
    90,
    1135,
    1133,
    1080,
    112,
    1132,
    1080,
    1133,
    1079,
    133,
    1132,
    1079,
    1133,
    1080,
]


def segment_tokens(n_real: int = 200, length: int = 2048, seed: int = 0) -> torch.Tensor:
    """(1, length) int64: elise prefix, then shift / velocity / pitch / program runs, EOS, PAD."""
    rng = random.Random(seed)
    ids, shift = list(ELISE_PREFIX), 133 - 3
    while len(ids) < n_real - 1:
        shift = min(shift + rng.randint(1, 4), 1000)
        ids.append(3 + shift)  # absolute 10-ms shift since the segment start
        if rng.random() < 0.2:
            ids.append(1135 + rng.choice([0, 0, 41, 88]))  # program change
        ids += [1133 if rng.random() < 0.6 else 1132, 1004 + rng.randint(40, 90)]
    ids = ids[: n_real - 1] + [1]  # EOS
    return torch.tensor([ids + [0] * (length - len(ids))], dtype=torch.long)


def _randomize(module: torch.nn.Module, seed: int, d_kv: int) -> None:
    """T5 init magnitudes, norm weights away from 1 so that they are tested.

    Queries carry T5's folded 1/sqrt(d_kv): without it the logits have std ~sqrt(d_kv) and the
    near-one-hot softmax turns fp32 rounding into 1e-2 output differences.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 2:
                fan_in = p.shape[1] * (d_kv if name.endswith("q.weight") else 1)
                p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)
            else:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))


def build_pair(cfg: ModelConfig, seed: int = 0):
    """Seeded diffusers modules and a midisynth model loaded from their state dicts (strict)."""
    ref = diffusers_modules(cfg)
    with torch.device("meta"):
        ours = SpectrogramDiffusion(cfg)
    ours.to_empty(device="cpu")
    for i, (name, m) in enumerate(ref.items()):
        _randomize(m.eval(), seed + i, cfg.d_kv)
        getattr(ours, name).load_state_dict(m.state_dict(), strict=True)
    return ref, ours.eval()


def parity(ref, ours, tokens, context, context_mask, times) -> dict[str, float]:
    """Max abs differences: each encoder, the decoder alone, and encoders + cached decoder."""
    with torch.no_grad():
        n_ref, nm_ref = ref["notes_encoder"](tokens, tokens > 0)
        c_ref, cm_ref = ref["continuous_encoder"](context, context_mask)
        enc = ours.encode(tokens, context, context_mask)
        L = enc.encodings.shape[1] - context.shape[1]  # trimmed token count
        assert L % TRIM_MULTIPLE == 0 and L < tokens.shape[1]
        diffs = {
            "notes_encoder": (enc.encodings[:, :L] - n_ref[:, :L]).abs().max().item(),
            "continuous_encoder": (enc.encodings[:, L:] - c_ref).abs().max().item(),
        }
        kv_ref_enc = ours.precompute(
            Encoded(torch.cat([n_ref, c_ref], 1), torch.cat([nm_ref, cm_ref], 1))
        )
        kv = ours.precompute(enc)  # trimmed + cached, reused for every t below
        x = torch.randn(tokens.shape[0], 256, 128, generator=torch.Generator().manual_seed(1))
        dec = full = 0.0
        for t in times:
            tt = torch.full((tokens.shape[0],), t)
            y_ref = ref["decoder"]([(n_ref, nm_ref), (c_ref, cm_ref)], x, tt)
            assert y_ref.abs().max() > 0.1  # a degenerate reference would prove nothing
            dec = max(dec, (ours(x, tt, kv_ref_enc) - y_ref).abs().max().item())
            full = max(full, (ours(x, tt, kv) - y_ref).abs().max().item())
        diffs.update(decoder=dec, end_to_end=full)
    return diffs


def _inputs(first_segment: bool, n_real: int = 200):
    tokens = segment_tokens(n_real)
    if first_segment:  # §5.4: silence context, mask all False
        return (
            tokens,
            torch.full((1, 256, 128), SCALED_SILENCE),
            torch.zeros(1, 256, dtype=torch.bool),
        )
    ctx = torch.rand(1, 256, 128, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return tokens, ctx, torch.ones(1, 256, dtype=torch.bool)


TINY = ModelConfig.tiny()
# inner width (heads x d_kv) != d_model, as in `small`: catches a head split that assumes equality.
TINY_ODD = replace(TINY, num_heads=3, d_kv=16, d_ff=96, num_decoder_layers=3)
PARITY_CONFIGS = [
    pytest.param(TINY, id="tiny"),
    pytest.param(TINY_ODD, id="tiny-odd"),
    pytest.param(ModelConfig.small(), id="small", marks=pytest.mark.slow),
    pytest.param(ModelConfig.base(), id="base", marks=pytest.mark.slow),  # released shape
]


@pytest.mark.parametrize("first_segment", [False, True], ids=["with-context", "first-segment"])
@pytest.mark.parametrize("cfg", PARITY_CONFIGS)
def test_parity_with_diffusers(diffusers_sd, cfg: ModelConfig, first_segment: bool) -> None:
    """fp32, trimming and the K/V cache on; the cache is reused over several noise times.
    (``diffusers_sd``: skips without diffusers; its transformers-5 shim is on.)"""
    torch.manual_seed(0)
    ref, ours = build_pair(cfg)
    diffs = parity(ref, ours, *_inputs(first_segment), times=[0.05, 0.97])
    print(cfg.d_model, "first-segment" if first_segment else "with-context", diffs)
    assert max(diffs.values()) <= PARITY_TOL, diffs


def test_state_dict_keys_match_spec() -> None:
    """Spec §4.7: names and shapes of the base model's 111 / 111 / 198 tensors."""
    d, f, h = 768, 2048, 768
    enc_layer = {
        "layer.0.SelfAttention.q.weight": (h, d),
        "layer.0.SelfAttention.k.weight": (h, d),
        "layer.0.SelfAttention.v.weight": (h, d),
        "layer.0.SelfAttention.o.weight": (d, h),
        "layer.0.layer_norm.weight": (d,),
        "layer.1.DenseReluDense.wi_0.weight": (f, d),
        "layer.1.DenseReluDense.wi_1.weight": (f, d),
        "layer.1.DenseReluDense.wo.weight": (d, f),
        "layer.1.layer_norm.weight": (d,),
    }
    dec_layer = {
        "layer.0.layer_norm.weight": (d,),
        "layer.0.FiLMLayer.scale_bias.weight": (2 * d, 4 * d),
    }
    for j in (0, 1):
        dec_layer.update({f"layer.{j}.attention.to_{x}.weight": (h, d) for x in "qkv"})
        dec_layer[f"layer.{j}.attention.to_out.0.weight"] = (d, h)
    dec_layer.update(
        {
            "layer.1.layer_norm.weight": (d,),
            "layer.2.DenseReluDense.wi_0.weight": (f, d),
            "layer.2.DenseReluDense.wi_1.weight": (f, d),
            "layer.2.DenseReluDense.wo.weight": (d, f),
            "layer.2.film.scale_bias.weight": (2 * d, 4 * d),
            "layer.2.layer_norm.weight": (d,),
        }
    )
    stack = {f"encoders.{i}.{k}": s for i in range(12) for k, s in enc_layer.items()}
    expected = {
        "notes_encoder": {
            "token_embedder.weight": (1536, d), "position_encoding.weight": (2048, d), **stack,
            "layer_norm.weight": (d,),
        },
        "continuous_encoder": {
            "input_proj.weight": (d, 128), "position_encoding.weight": (256, d), **stack,
            "layer_norm.weight": (d,),
        },
        "decoder": {
            "conditioning_emb.0.weight": (4 * d, d),
            "conditioning_emb.2.weight": (4 * d, 4 * d),
            "position_encoding.weight": (256, d),
            "continuous_inputs_projection.weight": (d, 128),
            **{f"decoders.{i}.{k}": s for i in range(12) for k, s in dec_layer.items()},
            "decoder_norm.weight": (d,),
            "spec_out.weight": (128, d),
        },
    }  # fmt: skip
    with torch.device("meta"):
        model = SpectrogramDiffusion(ModelConfig.base())
    for name, keys in expected.items():
        module = getattr(model, name)
        got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        assert got == keys, name
        assert len(got) == {"decoder": 198}.get(name, 111)
        assert not module.position_encoding.weight.requires_grad  # a loaded table, never trained
    # Spec §4.6 trainable parameter counts (position tables excluded).
    counts = {
        n: sum(p.numel() for p in getattr(model, n).parameters() if p.requires_grad)
        for n in expected
    }
    assert counts == {
        "notes_encoder": 86_133_504,
        "continuous_encoder": 85_052_160,
        "decoder": 238_513_920,
    }


@pytest.fixture()
def tiny() -> SpectrogramDiffusion:
    torch.manual_seed(0)
    return SpectrogramDiffusion(ModelConfig.tiny()).eval()


def test_tiny_shapes(tiny: SpectrogramDiffusion) -> None:
    tokens, ctx, mask = _inputs(first_segment=False, n_real=130)
    with torch.no_grad():
        enc = tiny.encode(tokens, ctx, mask)
        assert enc.encodings.shape == (1, 192 + 256, 64)  # 130 real tokens -> 3 * 64
        assert enc.mask.shape == (1, 192 + 256) and enc.mask.dtype == torch.bool
        kv = tiny.precompute(enc)
        assert len(kv.keys) == 2 and kv.keys[0].shape == (1, 2, 130 + 256, 32)  # PAD keys dropped
        assert kv.attn_mask is None and kv.keep is None  # batch of 1: nothing left to mask
        eps = tiny(torch.randn(1, 256, 128), torch.tensor([0.3]), kv)
    assert eps.shape == (1, 256, 128) and eps.dtype == torch.float32
    assert torch.isfinite(eps).all()


def test_untrimmed_equals_trimmed(tiny: SpectrogramDiffusion) -> None:
    tokens, _, _ = _inputs(first_segment=False)
    with torch.no_grad():
        full, _ = tiny.notes_encoder(tokens, tokens > 0, trim=False)
        cut, mask = tiny.notes_encoder(tokens, tokens > 0)
    assert cut.shape[1] == 256 and mask.shape == (1, 256)
    torch.testing.assert_close(cut, full[:, :256], atol=1e-5, rtol=0)


def test_context_positions_terminal_relative(tiny: SpectrogramDiffusion) -> None:
    """A partial context's last valid frame gets position 255 (ORIG 'terminal_relative')."""
    enc = tiny.continuous_encoder
    enc._stack = lambda x, mask: x  # look at the embedded input only
    mask = torch.zeros(1, 256, dtype=torch.bool)
    mask[0, :100] = True
    with torch.no_grad():
        x, _ = enc(torch.zeros(1, 256, 128), mask)
        w = enc.position_encoding.weight
        torch.testing.assert_close(x[0, 99], w[255])
        torch.testing.assert_close(x[0, 0], w[156])
        full, _ = enc(torch.zeros(1, 256, 128), torch.ones(1, 256, dtype=torch.bool))
        torch.testing.assert_close(full[0], w)  # full (and empty) context: plain 0..255


def test_all_masked_cross_attention(tiny: SpectrogramDiffusion) -> None:
    """CFG-unconditional rows (no valid key) give zero cross-attention, never NaN."""
    cond, ctx, ctx_mask = _inputs(first_segment=False, n_real=150)
    uncond = torch.zeros_like(cond)
    x = torch.randn(1, 256, 128)
    t = torch.tensor([0.4])
    with torch.no_grad():
        # Batch of 2: the unconditional row goes through the masked path (keep = 0).
        kv2 = tiny.precompute(
            tiny.encode(
                torch.cat([cond, uncond]), ctx.repeat(2, 1, 1), torch.cat([ctx_mask, ~ctx_mask])
            )
        )
        assert kv2.keep is not None and kv2.keep.flatten().tolist() == [1.0, 0.0]
        eps2 = tiny(x.repeat(2, 1, 1), t.repeat(2), kv2)
        # Batch of 1: every key is dropped and the cross-attention block is skipped.
        kv_u = tiny.precompute(tiny.encode(uncond, ctx, ~ctx_mask))
        assert kv_u.keys[0].shape[-2] == 0
        eps_u = tiny(x, t, kv_u)
        eps_c = tiny(x, t, tiny.precompute(tiny.encode(cond, ctx, ctx_mask)))
        # Reference for "zero cross-attention": the decoder with its cross-attention blocks removed.
        blocks = [lyr.layer[1] for lyr in tiny.decoder.decoders]
        for b in blocks:
            b.forward = lambda h, *args: h
        eps_ref = tiny(x, t, kv_u)
    assert torch.isfinite(eps2).all()
    torch.testing.assert_close(eps_u, eps_ref)
    torch.testing.assert_close(eps2[1:], eps_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps2[:1], eps_c, atol=1e-5, rtol=0)  # rows stay independent


def test_batch_rows_independent_of_padding(tiny: SpectrogramDiffusion) -> None:
    """Rows of different lengths batched (shared trim, masked keys) equal their batch-of-1 runs."""
    a, b = segment_tokens(100, seed=1), segment_tokens(300, seed=2)
    ctx = torch.rand(2, 256, 128) * 2 - 1
    mask = torch.ones(2, 256, dtype=torch.bool)
    x, t = torch.randn(2, 256, 128), torch.tensor([0.2, 0.8])
    with torch.no_grad():
        both = tiny(x, t, tiny.precompute(tiny.encode(torch.cat([a, b]), ctx, mask)))
        for i, tok in enumerate((a, b)):
            one = tiny(
                x[i : i + 1],
                t[i : i + 1],
                tiny.precompute(tiny.encode(tok, ctx[i : i + 1], mask[:1])),
            )
            torch.testing.assert_close(both[i : i + 1], one, atol=1e-5, rtol=0)


def test_bf16_close_to_fp32(tiny: SpectrogramDiffusion) -> None:
    tokens, ctx, mask = _inputs(first_segment=False)
    x, t = torch.randn(1, 256, 128), torch.tensor([0.6])
    with torch.no_grad():
        ref = tiny(x, t, tiny.precompute(tiny.encode(tokens, ctx, mask)))
        half = tiny.to(torch.bfloat16)
        enc = half.encode(tokens, ctx, mask)
        assert enc.encodings.dtype == torch.bfloat16
        eps = half(x, t, half.precompute(enc))
        # RMSNorm statistics stay fp32: compare one norm on bf16 input against fp32 maths.
        norm = half.decoder.decoder_norm
        h = torch.randn(4, 64).to(torch.bfloat16) * 50
        want = h.float() * torch.rsqrt(h.float().pow(2).mean(-1, keepdim=True) + 1e-6)
        want = want.to(torch.bfloat16) * norm.weight
        assert torch.equal(norm(h), want)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
    rel = (eps - ref).norm() / ref.norm()
    assert rel < 0.05, rel


def test_named_configs() -> None:
    assert ModelConfig.named("base") == ModelConfig()
    small = ModelConfig.named("small")
    assert (small.d_model, small.num_heads, small.d_kv, small.d_ff) == (512, 6, 64, 1024)
    assert (small.num_encoder_layers, small.num_decoder_layers) == (8, 8)
    assert ModelConfig().max_decoder_noise_time == 20000.0
    with pytest.raises(ValueError, match="unknown model config"):
        ModelConfig.named("huge")
    assert math.isclose(SCALED_SILENCE, 0.4843, abs_tol=1e-4)
