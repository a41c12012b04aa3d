"""Noise schedules and samplers for the spectrogram-diffusion decoder (spec §5).

Everything here is a pure tensor function around a denoiser callable; the model is never imported::

    denoise(x, t) -> eps    x   [B, 256, 128] noisy mel in scaled [-1, 1] space
                            t   [B] float32 model time in [0, 1] (the decoder multiplies it by 20000)
                            eps [B, 256, 128] predicted noise

The released model predicts ε ("epsilon"). Models trained here may instead predict v = α·ε − σ·x0
("v_prediction", Salimans & Ho 2022): then x0 = α·x − σ·v has no 1/α, so the first, pure-noise steps
do not amplify the model's errors — what makes a small, briefly trained model sample well.

One model, two schedules:
- "discrete": diffusers' ``DDPMScheduler`` as shipped with the Hub checkpoint (squaredcos_cap_v2 betas,
  1000 train steps, model told t = k/1000). ``sampler="ddpm"`` reproduces diffusers' pipeline given the
  same ``torch.Generator``: same noise draws in the same order, same arithmetic.
- "cosine": the original's continuous log-SNR schedule λ(τ) = −2 ln tan(aτ + b), which the model was
  trained on. ``sampler="ddpm-cosine"`` is the original's ancestral sampler (1000 steps by default).
The few-step samplers (DDIM η=0, DPM-Solver++(2M)) run on either. All samplers clip the x0 prediction
to [-1, 1] because the training targets were clipped, and keep their state in float32 whatever dtype
the model runs in (spec §5.2: bf16 sampling "led to much worse results").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Denoise = Callable[[Tensor, Tensor], Tensor]  # (x [B, ...], t [B]) -> eps [B, ...]
Callback = Callable[[int, int, Tensor], None]  # (step index, number of steps, x0 prediction)
PREDICTION_TYPES = ("epsilon", "v_prediction")  # what the denoiser outputs (diffusers' names)
Generators = torch.Generator | Sequence[torch.Generator] | None  # one per batch row, or shared

NUM_TRAIN_TIMESTEPS = 1000  # checkpoint scheduler config; model time = k / 1000
MAX_BETA = 0.999  # diffusers' cap in betas_for_alpha_bar (only the last beta hits it)
LOGSNR_MIN, LOGSNR_MAX = -20.0, 20.0  # range of the original cosine schedule (spec §5.1)
_B = math.atan(math.exp(-0.5 * LOGSNR_MAX))  # 4.539993e-5: λ(0) = +20
_A = math.atan(math.exp(-0.5 * LOGSNR_MIN)) - _B  # 1.5707055: λ(1) = −20


# ---------------------------------------------------------------- schedules
def _logsnr64(tau: Tensor) -> Tensor:
    # float64: near τ = 0, 1 − ᾱ is ~1e-9, far below float32's resolution of ᾱ itself.
    return -2.0 * torch.log(torch.tan(_A * tau.double() + _B))


def logsnr(tau: Tensor) -> Tensor:
    """Cosine log-SNR λ(τ) = −2 ln tan(aτ + b) ∈ [−20, 20]; ``tau`` any shape in [0, 1] → same shape."""
    return _logsnr64(tau).to(tau.dtype)


def alpha_sigma(tau: Tensor) -> tuple[Tensor, Tensor]:
    """(α, σ) of the cosine schedule at τ: α² = sigmoid(λ) = ᾱ, σ² = sigmoid(−λ) = 1 − ᾱ (≈ cos², sin²
    of πτ/2). ``tau`` any shape → two tensors of that shape and dtype."""
    lam = _logsnr64(tau)
    return torch.sigmoid(lam).sqrt().to(tau.dtype), torch.sigmoid(-lam).sqrt().to(tau.dtype)


def q_sample(x0: Tensor, tau: Tensor, noise: Tensor) -> Tensor:
    """Forward diffusion for training: z = α(τ)·x0 + σ(τ)·ε. x0, noise [B, ...]; tau [B] → z [B, ...]."""
    alpha, sigma = alpha_sigma(tau.float())
    view = (-1,) + (1,) * (x0.dim() - 1)  # broadcast the per-example scalars from the left
    return alpha.view(view).to(x0) * x0 + sigma.view(view).to(x0) * noise


@functools.lru_cache(maxsize=1)
def discrete_alphas_cumprod() -> Tensor:
    """ᾱ_k, k = 0…999, [1000] float32, built exactly as diffusers does for "squaredcos_cap_v2": float64
    betas from f(s) = cos²((s + 0.008)/1.008 · π/2), capped at 0.999, then a float32 cumprod. Shared and
    cached: do not modify in place."""
    n = NUM_TRAIN_TIMESTEPS

    def f(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((k + 1) / n) / f(k / n), MAX_BETA) for k in range(n)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float32), dim=0)


@dataclass(frozen=True)
class _Grid:
    """The noise levels a sampler visits, noisiest first; after the last comes clean data (ᾱ = 1).

    ᾱ and 1 − ᾱ are 0-d tensors in the schedule's own precision: float32 for the discrete table, so the
    step arithmetic is diffusers' to the bit; float64 for the cosine schedule, where 1 − ᾱ near τ = 0
    is far below float32's resolution of ᾱ (hence also kept apart from ᾱ).
    """

    times: Tensor  # [N] float32 model time for each step
    abar: Tensor  # [N + 1] ᾱ at each step, then 1 (clean)
    sigma2: Tensor  # [N + 1] 1 − ᾱ, then 0


def _discrete_grid(steps: int, spacing: str) -> _Grid:
    n = NUM_TRAIN_TIMESTEPS
    if spacing == "leading":  # diffusers' DDPM default: 990, 980, …, 0 for 100 steps.
        # Faithful quirk: for 501…999 steps the stride is 1, so sampling starts at k = steps − 1.
        ks = [i * (n // steps) for i in reversed(range(steps))]
    else:  # "trailing": 999, 899, …, 99 for 10 steps. Few-step samplers must start at pure noise.
        ks = [round(n - i * n / steps) - 1 for i in range(steps)]
    abar = torch.cat([discrete_alphas_cumprod()[ks], torch.ones(1)])
    # Integer tensor / 1000 in float32, as the pipeline computes `t / num_train_timesteps`.
    times = torch.tensor(ks, dtype=torch.float32) / n
    return _Grid(times, abar, 1.0 - abar)


def _cosine_grid(steps: int, start: float = 1.0) -> _Grid:
    # The original: step i = N−1…0 evaluates the model at t = (i+1)/N and moves to s = i/N.
    # ``start`` < 1 squeezes the same grid into [0, start] (shallow diffusion from a prior).
    num = torch.arange(steps, 0, -1, dtype=torch.float64) * start
    lam = torch.cat([_logsnr64(num / steps), torch.tensor([math.inf], dtype=torch.float64)])
    return _Grid(num.float() / steps, torch.sigmoid(lam), torch.sigmoid(-lam))


# ---------------------------------------------------------------- noise and guidance
def _randn(shape: tuple[int, ...], generator: Generators, device: torch.device) -> Tensor:
    # Like diffusers' randn_tensor: draw on the generator's device (a CPU generator gives the same
    # numbers whatever device runs the model), always float32, then move. A list holds one generator
    # per batch row, so a file renders the same alone or batched with others.
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
        rows = [_randn((1, *shape[1:]), g, device) for g in generator]
        return torch.cat(rows) if rows else torch.zeros(shape, device=device)
    where = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(device)


def initial_noise(
    shape: tuple[int, ...],
    generator: Generators = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """x_T ~ N(0, I), ``shape`` e.g. [B, 256, 128], float32 on ``device``. In diffusers' pipeline this is
    the first draw of each segment, before the samplers' per-step variance draws."""
    return _randn(tuple(shape), generator, torch.device(device))


def guided(
    denoise_cond: Denoise,
    denoise_uncond: Denoise | None = None,
    weight: float = 1.0,
    *,
    denoise_batched: Denoise | None = None,
) -> Denoise:
    """Classifier-free guidance: ε = w·ε_cond + (1 − w)·ε_uncond (spec §5.2).

    ``weight == 1`` returns ``denoise_cond`` itself (one pass, as diffusers runs the checkpoint).
    Otherwise ``denoise_batched`` is preferred when given: it is called once on x [2B, ...], t [2B] with
    the conditional copies in the first half and must return eps [2B, ...] in the same order, which
    halves the number of model calls. Else ``denoise_uncond`` is called beside ``denoise_cond``.
    """
    if not math.isfinite(weight):
        raise ValueError(f"guidance weight must be finite, got {weight}")
    if weight == 1.0:
        return denoise_cond

    def combine(eps_cond: Tensor, eps_uncond: Tensor) -> Tensor:
        return weight * eps_cond.float() + (1.0 - weight) * eps_uncond.float()

    if denoise_batched is not None:
        batched = denoise_batched

        def denoise_pair(x: Tensor, t: Tensor) -> Tensor:
            eps_cond, eps_uncond = batched(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
            return combine(eps_cond, eps_uncond)

        return denoise_pair
    if denoise_uncond is None:
        raise ValueError("guidance weight != 1 needs denoise_uncond or denoise_batched")
    uncond = denoise_uncond
    return lambda x, t: combine(denoise_cond(x, t), uncond(x, t))


# ---------------------------------------------------------------- samplers
def _run(
    method: str,
    eps_fn: Denoise,
    x: Tensor,
    grid: _Grid,
    generator: Generators,
    callback: Callback | None,
    prediction_type: str = "epsilon",
) -> Tensor:
    """Walk ``grid`` from x_T (float32) to x0. The last step always returns the clipped x0 prediction,
    which is where every method lands when the target noise level is zero."""
    n = len(grid.times)
    d_prev, h_prev = None, None  # DPM-Solver++ history: previous x0 prediction and step size in λ
    for i in range(n):
        a_t, s2_t, a_s, s2_s = grid.abar[i], grid.sigma2[i], grid.abar[i + 1], grid.sigma2[i + 1]
        out = eps_fn(x, grid.times[i].to(x.device).expand(x.shape[0]))
        if prediction_type == "v_prediction":
            x0 = (a_t**0.5 * x - s2_t**0.5 * out).clamp(-1.0, 1.0)
        else:
            # Scalar math on 0-d tensors in diffusers' operation order: "ddpm" then matches
            # DDPMScheduler.step bit for bit, and "ddim" DDIMScheduler.step.
            x0 = ((x - s2_t**0.5 * out) / a_t**0.5).clamp(-1.0, 1.0)
        if i == n - 1:
            x = x0
        elif method == "ancestral":
            # DDPM posterior q(x_s | x_t, x0) with "fixed_large" variance = the effective β of this
            # (possibly strided) step, 1 − ᾱ_t/ᾱ_s; equal to the original's (1 − SNR_t/SNR_s)·σ_t².
            alpha = a_t / a_s
            beta = 1 - alpha
            x = (a_s**0.5 * beta) / s2_t * x0 + alpha**0.5 * s2_s / s2_t * x
            x = x + beta**0.5 * _randn(tuple(x.shape), generator, x.device)
        elif method == "ddim":
            # η = 0. ε is recomputed from the clipped x0 so that the step stays on the line through
            # both (diffusers' use_clipped_model_output=True; the original does the same).
            eps = (x - a_t**0.5 * x0) / s2_t**0.5
            x = a_s**0.5 * x0 + s2_s**0.5 * eps
        else:  # "dpmpp-2m": multistep data-prediction solver in half-log-SNR λ = ln(α/σ)
            h = 0.5 * (torch.log(a_s / s2_s) - torch.log(a_t / s2_t))
            # Second order from the second step on: extrapolate x0 linearly in λ to the midpoint.
            d = x0 if d_prev is None else x0 + h / (2 * h_prev) * (x0 - d_prev)
            x = (s2_s / s2_t) ** 0.5 * x - (a_s**0.5 * torch.expm1(-h)) * d
            d_prev, h_prev = x0, h
        if callback is not None:
            callback(i, n, x0)
    return x


@dataclass(frozen=True)
class SamplerSpec:
    """One entry of ``SAMPLERS``."""

    method: str  # "ancestral" | "ddim" | "dpmpp-2m"
    schedule: str  # "discrete" (diffusers' ᾱ table) | "cosine" (the original's continuous schedule)
    default_steps: int
    description: str


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(
        "ancestral", "discrete", 100, "diffusers' DDPMScheduler as the checkpoint ships (reference)"
    ),
    "ddpm-cosine": SamplerSpec(
        "ancestral", "cosine", 1000, "the original's ancestral DDPM on the training schedule"
    ),
    "ddim": SamplerSpec("ddim", "discrete", 50, "deterministic DDIM (eta=0), diffusers' ᾱ table"),
    "ddim-cosine": SamplerSpec("ddim", "cosine", 50, "deterministic DDIM on the training schedule"),
    "dpmpp-2m": SamplerSpec("dpmpp-2m", "discrete", 20, "DPM-Solver++(2M), diffusers' ᾱ table"),
    "dpmpp-2m-cosine": SamplerSpec(
        "dpmpp-2m", "cosine", 20, "DPM-Solver++(2M) on the training schedule"
    ),
}


def get_sampler(name: str) -> SamplerSpec:
    """The registry entry for ``name``; ValueError listing the choices for an unknown one."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(
            f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}"
        ) from None


def check_steps(steps: int) -> int:
    """``steps`` if it is an int in 1…1000, else ValueError."""
    if (
        isinstance(steps, bool)
        or not isinstance(steps, int)
        or not 1 <= steps <= NUM_TRAIN_TIMESTEPS
    ):
        raise ValueError(f"steps must be an integer in 1..{NUM_TRAIN_TIMESTEPS}, got {steps!r}")
    return steps


def check_settings(
    sampler: str,
    steps: int | None = None,
    *,
    start: float = 1.0,
    guidance: float = 1.0,
    unconditional: bool = True,
) -> None:
    """ValueError (one line) for settings ``sample`` would refuse, so that they fail before any
    work: an unknown sampler, steps outside 1…1000, ``start`` outside (0, 1] or below 1 on a
    discrete-schedule sampler, a non-finite guidance, or guidance ≠ 1 for a model trained
    without an unconditional mode (``unconditional=False``)."""
    spec = get_sampler(sampler)
    if steps is not None:
        check_steps(steps)
    if not 0.0 < start <= 1.0:
        raise ValueError(f"start must be in (0, 1], got {start}")
    if start < 1.0 and spec.schedule != "cosine":
        cosine = [n for n, s in SAMPLERS.items() if s.schedule == "cosine"]
        twin = f"{sampler}-cosine"
        cosine.sort(key=lambda n: n != twin)  # the same method on the cosine schedule first
        raise ValueError(
            f"sampler {sampler} runs on the discrete schedule; starting part-way (τ = {start:g}, "
            f"from a prior's mel) needs a cosine-schedule one: {', '.join(cosine)}"
        )
    if not math.isfinite(guidance):
        raise ValueError(f"guidance weight must be finite, got {guidance}")
    if guidance != 1.0 and not unconditional:
        raise ValueError(
            "guidance ≠ 1 needs an unconditional mode, which this model has not (use 1)"
        )


@torch.no_grad()
def sample(
    denoise: Denoise,
    shape: tuple[int, ...],
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    generator: Generators = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    x_init: Tensor | None = None,
    guidance: float = 1.0,
    denoise_uncond: Denoise | None = None,
    denoise_batched: Denoise | None = None,
    callback: Callback | None = None,
    prediction_type: str = "epsilon",
    start: float = 1.0,
) -> Tensor:
    """Sample one batch of mel segments: x0 [B, 256, 128] float32 in [-1, 1] (``shape`` = [B, 256, 128]).

    RNG order (diffusers' pipeline): ``initial_noise`` draws x_T from ``generator`` unless ``x_init`` is
    given; then the ancestral samplers draw one variance tensor per step except the last. DDIM and
    DPM-Solver++ draw nothing after x_T. ``denoise`` gets x cast to ``dtype`` (the model's) and t in
    float32; its eps is used in float32. ``steps`` defaults to the sampler's ``default_steps``.
    Guidance: see ``guided`` (``denoise`` is the conditional denoiser). ``callback(i, n, x0_pred)``
    runs after each step. ``prediction_type``: what ``denoise`` returns, "epsilon" (ε, the released
    model) or "v_prediction" (v = α·ε − σ·x0); guidance combines either linearly.
    ``start`` < 1 (cosine samplers only): shallow diffusion — ``x_init`` is already noised to
    τ = ``start`` (e.g. a prior's mel through ``q_sample``) and the steps cover [0, start].
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(
            f"unknown prediction type {prediction_type!r}; choose one of: {', '.join(PREDICTION_TYPES)}"
        )
    check_settings(sampler, steps, start=start, guidance=guidance)
    spec = get_sampler(sampler)
    steps = check_steps(spec.default_steps if steps is None else steps)
    eps_fn = guided(denoise, denoise_uncond, guidance, denoise_batched=denoise_batched)
    if start < 1.0 and x_init is None:
        raise ValueError("start < 1 needs x_init noised to that level")
    if spec.schedule == "cosine":
        grid = _cosine_grid(steps, start)
    else:
        grid = _discrete_grid(steps, "leading" if spec.method == "ancestral" else "trailing")
    if device is None:
        device = x_init.device if x_init is not None else torch.device("cpu")
    device = torch.device(device)
    if x_init is None:
        x = initial_noise(shape, generator, device)
    elif tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}")
    else:
        x = x_init.to(device=device, dtype=torch.float32)

    def model(x: Tensor, t: Tensor) -> Tensor:
        return eps_fn(x.to(dtype), t).float()

    return _run(spec.method, model, x, grid, generator, callback, prediction_type)
