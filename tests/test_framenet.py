"""FrameNet: shapes, checkpoint round trip, rendering, shallow sampling, training smoke test."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from midisynth import diffusion, weights
from midisynth.framenet import FrameNet
from midisynth.render import RenderOptions, render

EXAMPLES = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples"


def test_encode_and_step_shapes(tiny_frame):
    net = tiny_frame.model
    grid = torch.zeros(2, 256, 32, 5, dtype=torch.int16)
    grid[0, 10:40, 0] = torch.tensor([60, 0, 100, 5, 80], dtype=torch.int16)
    ctx, mask = torch.zeros(2, 256, 128), torch.zeros(2, 256, dtype=torch.bool)
    cond = net.encode(grid, ctx, mask)
    assert cond.prior.shape == (2, 256, 128) and cond.prior.dtype == torch.float32
    v = net(torch.randn(2, 256, 128), torch.tensor([0.3, 0.7]), cond)
    assert v.shape == (2, 256, 128)
    # The notes reach the prior: row 0 (a note) differs from row 1 (silence).
    assert (cond.prior[0] - cond.prior[1]).abs().max() > 1e-4


def test_checkpoint_round_trip(tiny_frame_folder, tiny_frame):
    meta = json.loads((tiny_frame_folder / "config.json").read_text())
    assert meta["model"]["frame"]["d_model"] == 32
    assert isinstance(tiny_frame.model, FrameNet)
    again = weights.load_model(tiny_frame_folder)
    for (k, a), (_, b) in zip(
        tiny_frame.model.state_dict().items(), again.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), k


def test_render_length_seed_and_defaults(tiny_frame):
    a = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(seed=1))
    b = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(seed=1))
    c = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(seed=2))
    assert np.array_equal(a.audio, b.audio) and not np.array_equal(a.audio, c.audio)
    assert np.isfinite(a.audio).all() and a.mel.shape[1] == 128
    with pytest.raises(ValueError, match="unconditional"):
        render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(guidance=2.0))


def test_level_shift_moves_each_frame_to_the_priors_energy_and_keeps_texture():
    # Issue 19: with level "prior" the prior (monotone in velocity) sets each frame's loudness.
    from midisynth.render import level_shift

    gen = torch.Generator().manual_seed(0)
    mel = torch.randn(2, 1, 128, generator=gen).expand(2, 256, 128) + 0.5  # a steady note
    prior = 0.3 * torch.randn(2, 1, 128, generator=gen).expand(2, 256, 128).clone()
    prior[:, 100:] += 2.0  # louder from frame 100 on
    shifted = mel + level_shift(prior, mel)
    energy = lambda x: torch.logsumexp(x, -1)  # noqa: E731
    # A step is smoothed over 5 frames; away from it every frame lands on the prior's energy.
    keep = torch.ones(256, dtype=torch.bool)
    keep[97:103] = False
    torch.testing.assert_close(energy(shifted)[:, keep], energy(prior)[:, keep], atol=0.02, rtol=0)
    # Within a frame the shape (texture across bins) is the denoiser's, untouched.
    torch.testing.assert_close(
        shifted - shifted.mean(-1, keepdim=True), mel - mel.mean(-1, keepdim=True)
    )


def test_level_prior_is_a_sampling_setting(tiny_frame):
    from midisynth.render import check_options, with_model_defaults

    assert with_model_defaults(RenderOptions(), tiny_frame).level == "denoised"  # no "level" saved
    tiny = dataclasses.replace(
        tiny_frame,
        meta={**tiny_frame.meta, "sampling": {**tiny_frame.meta["sampling"], "level": "prior"}},
    )
    assert with_model_defaults(RenderOptions(), tiny).level == "prior"
    a = render(tiny, EXAMPLES / "band.mid", RenderOptions(tail=0.0))
    b = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(tail=0.0, level="prior"))
    c = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(tail=0.0))
    np.testing.assert_array_equal(a.mel, b.mel)
    assert np.isfinite(a.mel).all() and not np.allclose(a.mel, c.mel)
    with pytest.raises(ValueError, match="unknown level 'loud'; choose one of: denoised, prior"):
        check_options(RenderOptions(level="loud"), tiny_frame)


def test_texture_dither_is_seeded_and_sized(tiny_frame):
    from midisynth.render import check_options, with_model_defaults

    assert with_model_defaults(RenderOptions(), tiny_frame).texture == 0.0
    plain = render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(tail=0.0))
    a, b = (
        render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(tail=0.0, texture=0.3))
        for _ in range(2)
    )
    np.testing.assert_array_equal(a.mel, b.mel)  # same seed, same dither
    # The first segment has no context, so it differs from the plain render by the dither alone.
    d = a.mel[:256] - plain.mel[:256]
    assert abs(d.std() - 0.3) < 0.01 and abs(d.mean()) < 0.01
    for bad in (-0.1, 5.0, float("nan")):
        with pytest.raises(ValueError, match="texture .* is outside 0 … 2 nats"):
            check_options(RenderOptions(texture=bad), tiny_frame)


def test_start_one_from_pure_noise_equals_plain_sampling():
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    den = lambda x, t: 0.3 * x  # noqa: E731
    x = diffusion.initial_noise((1, 4, 3), gen())
    a = diffusion.sample(den, (1, 4, 3), sampler="ddim-cosine", steps=5, generator=gen())
    b = diffusion.sample(den, (1, 4, 3), sampler="ddim-cosine", steps=5, x_init=x, start=1.0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="cosine"):
        diffusion.sample(den, (1, 4, 3), sampler="ddim", steps=5, x_init=x, start=0.5)
    with pytest.raises(ValueError, match="start"):
        diffusion.sample(den, (1, 4, 3), sampler="ddim-cosine", x_init=x, start=0.0)


def test_shallow_sampling_visits_only_low_noise():
    seen = []

    def den(x, t):
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    x = torch.zeros(1, 2, 2)
    diffusion.sample(den, (1, 2, 2), sampler="ddim-cosine", steps=4, x_init=x, start=0.5)
    assert seen == pytest.approx([0.5, 0.375, 0.25, 0.125])


def test_velocity_gain_spectrum_is_monotone_and_code_is_velocity_free():
    from midisynth.framenet import NoteEmbedding

    torch.manual_seed(0)
    emb = NoteEmbedding(16, 24, velocity="gain")
    grid = torch.zeros(1, 8, 4, 5, dtype=torch.int16)
    for f, vel in enumerate((10, 20, 40, 60, 80, 100, 120, 127)):
        grid[0, f, 0] = torch.tensor([60, 0, vel, 3, 80])  # one piano C4, velocity rising by frame
    seen = {}
    emb.spectrum_proj.register_forward_pre_hook(lambda m, i: seen.update(log_spec=i[0]))
    emb.proj.register_forward_pre_hook(lambda m, i: seen.update(code=i[0]))
    emb(grid)
    loud = seen["log_spec"][0].logsumexp(-1)  # (8,) per-frame loudness of the harmonic spectrum
    assert (loud.diff() > 0).all()
    assert torch.allclose(seen["code"][0], seen["code"][0, :1].expand(8, -1))  # velocity-free
    with pytest.raises(ValueError, match="velocity must be"):
        NoteEmbedding(16, 24, velocity="loud")


def test_denoise_head_starts_as_the_identity_and_resumes_old_weights(tiny_frame_folder):
    """A 2-D head added to a trained model (resume) leaves its output unchanged until trained."""
    import dataclasses

    from midisynth import weights
    from midisynth.framenet import build_model
    from midisynth.model import FrameConfig

    # float32 as the new net ("auto" is bf16 on CPUs fast at it, e.g. AMD EPYC)
    old = weights.load_model(tiny_frame_folder, dtype="float32").model
    frame = FrameConfig(**{**old.config.frame.as_dict(), "denoise_2d": 16, "denoise_2d_layers": 1})
    net = build_model(dataclasses.replace(old.config, frame=frame)).eval()
    result = net.load_state_dict(old.state_dict(), strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("head.") for k in result.missing_keys)
    grid = torch.zeros(1, 256, 32, 5, dtype=torch.int16)
    grid[0, 5:50, 0] = torch.tensor([64, 0, 90, 3, 60], dtype=torch.int16)
    cond = old.encode(grid, torch.zeros(1, 256, 128), torch.zeros(1, 256, dtype=torch.bool))
    x = torch.randn(1, 256, 128)
    with torch.no_grad():
        same = net(x, torch.tensor([0.3]), cond), old(x, torch.tensor([0.3]), cond)
        assert torch.allclose(*same, atol=1e-6)  # kernels may differ by float rounding (2e-7)
        torch.nn.init.normal_(net.head.out.weight, std=0.1)  # once trained, it acts per bin
        assert not torch.allclose(
            net(x, torch.tensor([0.3]), cond), old(x, torch.tensor([0.3]), cond)
        )
