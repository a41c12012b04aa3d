"""Griffin-Lim and the spectral pieces every inverter shares.

The STFT pair with the front end's framing, mel → linear magnitude (non-negative least squares),
fast Griffin-Lim, and ``InverterError``, the one-line error of every inverter. They sit here, below
both ``inverter.py`` (which builds inverters, the trained vocoder among them) and ``vocoder.py``
(whose magnitudes are refined and phased by the same functions), so each imports them one way.
"""

from __future__ import annotations

import math

import torch

from . import audio


class InverterError(RuntimeError):
    """An inverter that cannot be loaded or run; one-line message."""


# --------------------------------------------------------------------------------------------
# STFT pair with the TF framing of the front end (frame k = samples [320k, 320k+640), window at
# the start of a 1024-point FFT), so Griffin-Lim matches the magnitudes the model was trained on.


def _window(device: torch.device) -> torch.Tensor:
    return torch.hann_window(audio.WIN, periodic=True, dtype=torch.float32, device=device)


if audio.WIN != 2 * audio.HOP:  # _overlap_add relies on it
    raise RuntimeError("inverter assumes WIN == 2 * HOP")


def stft(x: torch.Tensor) -> torch.Tensor:
    """x [N] → complex STFT [ceil(N/320), 513] with the front end's framing."""
    frames = math.ceil(x.shape[-1] / audio.HOP)
    pad = (frames - 1) * audio.HOP + audio.WIN - x.shape[-1]
    x = torch.nn.functional.pad(x, (0, pad))
    fr = x.unfold(-1, audio.WIN, audio.HOP) * _window(x.device)  # (F, 640)
    return torch.fft.rfft(fr, n=audio.N_FFT)  # (F, 513)


def _overlap_add(frames: torch.Tensor) -> torch.Tensor:
    """(F, WIN) frames at hop HOP → ((F+1)·HOP,) signal. WIN = 2·HOP, so each output hop is the
    sum of two half-frames: two strided adds, much faster than a generic fold."""
    n = frames.shape[0]
    out = frames.new_zeros(n + 1, audio.HOP)
    out[:n] += frames[:, : audio.HOP]
    out[1:] += frames[:, audio.HOP :]
    return out.flatten()


def istft(spec: torch.Tensor) -> torch.Tensor:
    """complex [F, 513] → x [F·320] by weighted overlap-add (least-squares inverse of `stft`)."""
    win = _window(spec.device)
    fr = torch.fft.irfft(spec, n=audio.N_FFT)[..., : audio.WIN] * win  # (F, 640)
    env = _overlap_add((win**2).expand(fr.shape[0], -1))
    # Hann² at 50 % overlap sums to 1 inside; only the first ~7 ms (frame 0's rising half, the one
    # place a single window covers) fall below 0.1. Dividing there by the tiny envelope itself
    # amplified Griffin-Lim's inconsistent first frame into a full-scale burst at the start of
    # every render; the floor turns it into a 7 ms fade-in instead.
    return (_overlap_add(fr) / env.clamp_min(0.1))[: fr.shape[0] * audio.HOP]


def mel_to_linear(mel: torch.Tensor, iters: int = 30) -> torch.Tensor:
    """log-mel [T, 128] → non-negative linear magnitude [T, 513] with M ≈ S @ W.

    Non-negative least squares by multiplicative updates (a pseudo-inverse gives negative
    magnitudes, which Griffin-Lim turns into noise).
    """
    spread = spread_mel(mel)
    return refine_magnitude(spread.clamp_min(1e-8), mel, iters, spread)  # positive start


def spread_mel(mel: torch.Tensor) -> torch.Tensor:
    """exp(mel) @ Wᵀ: the mel's energy spread back over the FFT bins, [..., T, 513]."""
    return mel.float().exp() @ audio.mel_filterbank(device=mel.device).T


def refine_magnitude(
    s: torch.Tensor, mel: torch.Tensor, iters: int, spread: torch.Tensor | None = None
) -> torch.Tensor:
    """``iters`` multiplicative NNLS updates of a magnitude s [T, 513] ≥ 0 towards S @ W = exp(mel)
    (mel [T, 128] log-mel): zeros stay zero, so a start with sharp harmonics keeps them.
    ``spread``: ``spread_mel(mel)`` when the caller already has it."""
    w = audio.mel_filterbank(device=mel.device)  # (513, 128)
    wwt = w @ w.T  # (513, 513)
    mwt = spread_mel(mel) if spread is None else spread  # (T, 513)
    for _ in range(iters):
        s = s * mwt / (s @ wwt + 1e-10)
    return s


class GriffinLim:
    """Dependency-free inverter: NNLS mel → magnitude, then fast Griffin-Lim (momentum 0.99).

    Runs on ``device`` (the model's, from ``load_inverter``: CUDA when the model is there), or on
    the mel's device when None; the audio comes back on that device. Quality is well below the
    neural inverter: phasey and metallic, but the pitches and rhythm are all there.
    """

    name = "griffin-lim"

    def __init__(
        self,
        iters: int = 32,
        momentum: float = 0.99,
        seed: int = 0,
        device: str | torch.device | None = None,
    ):
        self.iters = iters
        self.momentum = momentum
        self.seed = seed
        self.device = torch.device(device) if device is not None else None

    def __call__(self, mel: torch.Tensor, init_audio: torch.Tensor | None = None) -> torch.Tensor:
        if self.device is not None:
            mel = mel.to(self.device)
        return griffin_lim(mel_to_linear(mel), self.iters, self.momentum, self.seed, init_audio)


def griffin_lim(
    mag: torch.Tensor,
    iters: int = 32,
    momentum: float = 0.99,
    seed: int = 0,
    init_audio: torch.Tensor | None = None,
) -> torch.Tensor:
    """Fast Griffin-Lim: linear magnitude [T, 513] → audio [T·320] float32 whose STFT magnitude
    approaches ``mag``. ``init_audio``: audio already emitted just before (its phase is continued,
    so a streamed seam stays coherent)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    phase = torch.rand(mag.shape, generator=gen).to(mag.device) * (2 * math.pi)
    spec = torch.polar(mag, phase)
    if init_audio is not None and init_audio.numel() >= audio.WIN:
        known = stft(init_audio.to(mag.device).float())[: init_audio.numel() // audio.HOP - 1]
        k = min(known.shape[0], spec.shape[0])
        spec[:k] = torch.polar(mag[:k], known[:k].angle())
    prev = spec
    for _ in range(iters):
        rebuilt = stft(istft(spec))
        accel = rebuilt + momentum * (rebuilt - prev)
        prev = rebuilt
        spec = torch.polar(mag, accel.angle())
    return istft(spec).float()
