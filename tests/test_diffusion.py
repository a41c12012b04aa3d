"""Samplers against diffusers' schedulers (the reference the Hub checkpoint runs with) and against
analytic results (an oracle denoiser, Gaussian data with a known probability-flow solution)."""

from __future__ import annotations

import math

import pytest
import torch

from midisynth import diffusion as D

SEGMENT = (1, 256, 128)  # one pipeline segment
SMALL = (2, 16, 8)
# The Hub checkpoint's scheduler/scheduler_config.json (spec §4.7).
CHECKPOINT_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "prediction_type": "epsilon",
    "variance_type": "fixed_large",
    "trained_betas": None,
}


def tanh_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(0.5 * x + 0.1 * t.view(-1, 1, 1))


_W = torch.randn(128, 128, generator=torch.Generator().manual_seed(7)) / math.sqrt(128)


def linear_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x @ _W + t.view(-1, 1, 1)


def affine_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * x - t.view(-1, 1, 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run_diffusers(scheduler, denoise, x, steps, generator=None, **step_kwargs):
    """Drive a diffusers scheduler the way SpectrogramDiffusionPipeline.__call__ does."""
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        eps = denoise(x, (t / 1000) * torch.ones(x.shape[0]))
        x = scheduler.step(eps, t, x, generator=generator, **step_kwargs).prev_sample
    return x


# ---------------------------------------------------------------- parity with diffusers
@pytest.mark.parametrize("steps", [2, 10, 100])
@pytest.mark.parametrize("denoise", [tanh_denoiser, linear_denoiser])
def test_ddpm_matches_diffusers_pipeline(steps, denoise):
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    g = gen()
    # Pipeline order: one initial draw per segment, then one variance draw per step with t > 0.
    x = randn_tensor(SEGMENT, generator=g, device=torch.device("cpu"), dtype=torch.float32)
    ref = run_diffusers(DDPMScheduler.from_config(CHECKPOINT_SCHEDULER), denoise, x, steps, g)
    ours = D.sample(denoise, SEGMENT, sampler="ddpm", steps=steps, generator=gen())
    assert (ours - ref).abs().max().item() <= 1e-5  # in fact bit-identical


@pytest.mark.parametrize("steps", [2, 10, 25])
def test_ddim_matches_diffusers(steps):
    from diffusers import DDIMScheduler

    # Equivalent configuration: trailing spacing, clean final target, ε recomputed from clipped x0.
    sched = DDIMScheduler.from_config(
        CHECKPOINT_SCHEDULER, timestep_spacing="trailing", set_alpha_to_one=True
    )
    x = torch.randn(SEGMENT, generator=gen())
    ref = run_diffusers(sched, tanh_denoiser, x, steps, eta=0.0, use_clipped_model_output=True)
    ours = D.sample(tanh_denoiser, SEGMENT, sampler="ddim", steps=steps, x_init=x)
    assert (ours - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("steps", [2, 10, 25])
def test_dpmpp_2m_matches_diffusers(steps):
    from diffusers import DPMSolverMultistepScheduler

    # thresholding with sample_max_value=1 is a plain clip of x0 to [-1, 1].
    sched = DPMSolverMultistepScheduler.from_config(
        CHECKPOINT_SCHEDULER, timestep_spacing="trailing", thresholding=True, sample_max_value=1.0
    )
    x = torch.randn(SEGMENT, generator=gen())
    # The first step (k = 999, √ᾱ = 5e-5) divides by √ᾱ; where x ≈ σ·ε (near this denoiser's fixed
    # point x* ≈ 0.195) the x0 prediction escapes the clip and float32 rounding of σ (diffusers
    # derives it differently) is amplified 2e4-fold. Keep x_T away from x* to compare the algebra.
    x = torch.where((x - 0.195).abs() < 0.01, x + 0.02, x)
    ref = run_diffusers(sched, tanh_denoiser, x, steps)
    ours = D.sample(tanh_denoiser, SEGMENT, sampler="dpmpp-2m", steps=steps, x_init=x)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_discrete_schedule_matches_diffusers():
    from diffusers import DDPMScheduler

    ref = DDPMScheduler.from_config(CHECKPOINT_SCHEDULER).alphas_cumprod
    assert torch.equal(D.discrete_alphas_cumprod(), ref)


@pytest.mark.parametrize("steps", [1, 2, 10, 100])
def test_ddpm_rng_order_and_model_times(steps):
    seen = []

    def record(x, t):
        seen.append(t.clone())
        return tanh_denoiser(x, t)

    g = gen(3)
    D.sample(record, SMALL, sampler="ddpm", steps=steps, generator=g)
    ref = gen(3)
    for _ in range(steps):  # x_T, then one variance draw per step but the last (t = 0)
        torch.randn(SMALL, generator=ref)
    assert torch.equal(g.get_state(), ref.get_state())
    ks = [i * (1000 // steps) for i in reversed(range(steps))]  # "leading": 990, 980, …, 0
    assert torch.equal(torch.stack(seen), (torch.tensor(ks) / 1000)[:, None].expand(-1, 2))


# ---------------------------------------------------------------- analytic checks
def oracle(sampler: str, x0: torch.Tensor):
    """ε that a perfect model would predict for data x0, from the schedule the sampler runs on."""

    def denoise(x, t):
        if D.SAMPLERS[sampler].schedule == "cosine":
            alpha, sigma = (v.view(-1, 1, 1) for v in D.alpha_sigma(t.double()))
        else:
            abar = D.discrete_alphas_cumprod().double()[(t.double() * 1000).round().long()]
            alpha, sigma = abar.sqrt().view(-1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1)
        return ((x.double() - alpha * x0.double()) / sigma).float()

    return denoise


@pytest.mark.parametrize("sampler", list(D.SAMPLERS))
# From 2 steps: a 1-step trailing/cosine grid predicts x0 from pure noise (√ᾱ = 5e-5), where float32
# rounding of ε alone is amplified 2e4-fold.
@pytest.mark.parametrize("steps", [2, 3, 20])
def test_oracle_denoiser_returns_x0(sampler, steps):
    x0 = torch.rand(SMALL, generator=gen(1)) * 1.8 - 0.9
    out = D.sample(oracle(sampler, x0), SMALL, sampler=sampler, steps=steps, generator=gen())
    assert (out - x0).abs().max().item() < 1e-5


S = 0.3  # data std: x0 ~ N(0, S²) elementwise, small enough that clipping never triggers


def _abar(sampler: str, t):
    """(ᾱ, 1 − ᾱ) [B, 1, 1] float64 at model time t under the sampler's schedule."""
    if D.SAMPLERS[sampler].schedule == "cosine":
        a, s = D.alpha_sigma(t.double())
        a2, s2 = a**2, s**2
    else:
        a2 = D.discrete_alphas_cumprod().double()[(t.double() * 1000).round().long()]
        s2 = 1 - a2
    return a2.view(-1, 1, 1), s2.view(-1, 1, 1)


def gaussian_denoiser(sampler: str):
    """Exact ε-prediction for Gaussian data: E[ε | x_t] = σ·x / (α²S² + σ²)."""

    def denoise(x, t):
        a2, s2 = _abar(sampler, t)
        return (s2.sqrt() * x.double() / (a2 * S**2 + s2)).float()

    return denoise


def gaussian_v_denoiser(sampler: str):
    """Exact v-prediction for the same data: v = α·E[ε | x] − σ·E[x0 | x] = ασ(1 − S²)·x / (α²S² + σ²)."""

    def denoise(x, t):
        a2, s2 = _abar(sampler, t)
        return ((a2 * s2).sqrt() * (1 - S**2) * x.double() / (a2 * S**2 + s2)).float()

    return denoise


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "ddim-cosine", "dpmpp-2m-cosine"])
def test_v_prediction_matches_epsilon_prediction(sampler):
    # The same exact denoiser written as ε or as v must give the same samples (same noise draws).
    eps = D.sample(gaussian_denoiser(sampler), SMALL, sampler=sampler, steps=10, generator=gen(3))
    v = D.sample(
        gaussian_v_denoiser(sampler),
        SMALL,
        sampler=sampler,
        steps=10,
        generator=gen(3),
        prediction_type="v_prediction",
    )
    assert (eps - v).abs().max().item() < 1e-4
    assert eps.std().item() > 0.1  # a real sample, not a collapsed one
    with pytest.raises(ValueError, match="unknown prediction type"):
        D.sample(gaussian_v_denoiser(sampler), SMALL, sampler=sampler, prediction_type="x0")


@pytest.mark.parametrize("schedule", ["", "-cosine"])
def test_deterministic_samplers_solve_gaussian_probability_flow(schedule):
    # For Gaussian data the probability-flow ODE maps x_T to x_T·S/√(ᾱ_T·S² + 1 − ᾱ_T) exactly.
    x_t = torch.randn(SMALL, generator=gen(1)).clamp(-3, 3)
    a2 = D.alpha_sigma(torch.tensor(1.0))[0].double() ** 2 if schedule else None
    a2 = D.discrete_alphas_cumprod()[999].double() if a2 is None else a2
    exact = x_t * S / float(a2 * S**2 + 1 - a2) ** 0.5
    err = {}
    for method in ("ddim", "dpmpp-2m"):
        name = method + schedule
        for steps in (20, 50, 200):
            out = D.sample(gaussian_denoiser(name), SMALL, sampler=name, steps=steps, x_init=x_t)
            err[method, steps] = (out - exact).abs().max().item()
    assert err["ddim", 200] < 0.015 and err["dpmpp-2m", 200] < 0.002
    assert err["ddim", 20] > err["ddim", 50] > err["ddim", 200]  # converges
    for steps in (20, 50):  # the second-order solver beats first-order DDIM by a wide margin
        assert err["dpmpp-2m", steps] < err["ddim", steps] / 3


def test_ancestral_cosine_samples_gaussian_with_right_variance():
    name = "ddpm-cosine"
    out = D.sample(gaussian_denoiser(name), (2, 64, 64), sampler=name, steps=200, generator=gen())
    assert abs(out.std().item() / S - 1) < 0.05


def test_cosine_schedule_values():
    tau = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    assert D.logsnr(tau).tolist() == pytest.approx([20.0, 0.0, -20.0], abs=1e-9)
    alpha, sigma = D.alpha_sigma(torch.tensor([0.5, 0.99, 0.991], dtype=torch.float64))
    assert (alpha**2).tolist() == pytest.approx([0.5, 2.48e-4, 2.01e-4], rel=3e-3)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones(3, dtype=torch.float64))
    # Spec §5.3: diffusers' ᾱ at k lies close to (not on) the cosine ᾱ at τ = k/1000.
    abar = D.discrete_alphas_cumprod()
    assert abar[500].item() == pytest.approx(0.4923, abs=1e-4)
    assert abar[990].item() == pytest.approx(1.97e-4, rel=3e-3)


def test_q_sample():
    x0, noise = torch.rand(SMALL) * 2 - 1, torch.randn(SMALL)
    tau = torch.tensor([0.0, 0.5])
    z = D.q_sample(x0, tau, noise)
    assert torch.allclose(z[0], x0[0], atol=1e-3)  # λ = 20: σ = 4.5e-5, essentially clean
    assert torch.allclose(z[1], (x0[1] + noise[1]) * 0.5**0.5, atol=1e-6)


# ---------------------------------------------------------------- guidance
def test_guidance_weight_one_is_the_conditional_pass():
    def uncond(x, t):
        raise AssertionError("w = 1 must not run the unconditional pass")

    assert D.guided(tanh_denoiser, uncond, 1.0) is tanh_denoiser
    a = D.sample(tanh_denoiser, SMALL, steps=5, generator=gen(), denoise_uncond=uncond)
    b = D.sample(tanh_denoiser, SMALL, steps=5, generator=gen())
    assert torch.equal(a, b)


def test_guidance_formula_and_batched_helper():
    x, t = torch.randn(SMALL), torch.full((2,), 0.3)
    cond, uncond = tanh_denoiser(x, t), affine_denoiser(x, t)
    two_pass = D.guided(tanh_denoiser, affine_denoiser, 2.0)(x, t)
    assert torch.allclose(two_pass, 2 * cond - uncond)
    calls = []

    def batched(x2, t2):  # conditional rows first, as the render loop batches them
        calls.append(x2.shape[0])
        half = x2.shape[0] // 2
        return torch.cat(
            [tanh_denoiser(x2[:half], t2[:half]), affine_denoiser(x2[half:], t2[half:])]
        )

    one_pass = D.guided(tanh_denoiser, weight=2.0, denoise_batched=batched)(x, t)
    assert torch.allclose(one_pass, two_pass) and calls == [4]
    with pytest.raises(ValueError, match="denoise_uncond"):
        D.guided(tanh_denoiser, None, 2.0)


# ---------------------------------------------------------------- API behaviour
def test_unknown_sampler_lists_choices():
    with pytest.raises(ValueError, match="ddpm, ddpm-cosine, ddim"):
        D.sample(tanh_denoiser, SMALL, sampler="euler", steps=10)


@pytest.mark.parametrize("steps", [0, 1001, 2.5, True])
def test_invalid_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        D.sample(tanh_denoiser, SMALL, steps=steps)


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-cosine", "dpmpp-2m"])
def test_same_seed_same_samples(sampler):
    a = D.sample(tanh_denoiser, SMALL, sampler=sampler, steps=10, generator=gen(5))
    b = D.sample(tanh_denoiser, SMALL, sampler=sampler, steps=10, generator=gen(5))
    c = D.sample(tanh_denoiser, SMALL, sampler=sampler, steps=10, generator=gen(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_half_precision_model_keeps_float32_state():
    dtypes, steps_seen = [], []

    def bf16_model(x, t):
        dtypes.append(x.dtype)
        return tanh_denoiser(x, t).to(torch.bfloat16)

    def progress(i, n, x0):
        steps_seen.append((i, n, x0.dtype))

    out = D.sample(
        bf16_model, SMALL, steps=4, generator=gen(), dtype=torch.bfloat16, callback=progress
    )
    assert out.dtype == torch.float32 and set(dtypes) == {torch.bfloat16}
    assert steps_seen == [(i, 4, torch.float32) for i in range(4)]
    # The initial noise is a float32 draw whatever the model dtype.
    assert torch.equal(D.initial_noise(SMALL, gen()), torch.randn(SMALL, generator=gen()))


def test_x_init_shape_is_checked():
    with pytest.raises(ValueError, match="x_init"):
        D.sample(tanh_denoiser, SMALL, steps=2, x_init=torch.zeros(1, 16, 8))


def test_per_row_generators_match_single_row_draws():
    # A batch with one generator per row samples each row exactly as if it ran alone.
    from midisynth.diffusion import sample

    def den(x, t):
        return torch.tanh(0.5 * x + 0.1 * t[:, None, None])

    shape = (1, 8, 4)
    alone = [
        sample(den, shape, sampler="ddpm", steps=5, generator=torch.Generator().manual_seed(s))
        for s in (3, 7)
    ]
    gens = [torch.Generator().manual_seed(s) for s in (3, 7)]
    both = sample(den, (2, 8, 4), sampler="ddpm", steps=5, generator=gens)
    assert torch.equal(both, torch.cat(alone))
