"""A neural mel inverter trained here (Vocos-style): log-mel → STFT magnitude and phase → iSTFT.

    mel (B, T, 128) ──Conv──▶ ConvNeXt blocks ──▶ Linear ──▶ log|S| (B, T, 513), phase (B, T, 513)
                                                        └──▶ iSTFT with the front end's framing

The STFT it predicts uses the front end's own framing (``griffinlim.stft``: frame k = samples
[320k, 320k + 640), periodic Hann 640 in a 1024-point FFT), so one mel frame = one STFT frame and
the output has exactly T·320 samples. Phase is predicted as a 2-D vector (cos, sin) normalised per
bin, which avoids the wrap-around of an angle. Trained (``train_vocoder``) on multi-resolution STFT
and mel losses against audio synthesized from MIDI; no discriminator (a CPU budget).

Checkpoints are a folder with ``vocoder.safetensors`` + ``vocoder.json`` (VocoderConfig).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from . import audio
from .griffinlim import InverterError, griffin_lim, refine_magnitude, spread_mel

N_BINS = audio.N_FFT // 2 + 1  # 513
MEL_SHIFT, MEL_SCALE = 4.0, 4.0  # input normalisation: (mel + 4) / 4 ≈ [-2, 2] for music


@dataclass
class VocoderConfig:
    d_model: int = 256
    layers: int = 8
    kernel: int = 7
    ff_mult: int = 3
    dilations: list[int] = field(default_factory=lambda: [1])  # cycled; 1 = plain ConvNeXt
    # "predicted": magnitude and phase from the network, one iSTFT (Vocos). "griffin-lim": the
    # network predicts only the STFT magnitude (a correction of the mel's own smeared spectrum)
    # and ``gl_iters`` Griffin-Lim iterations find a phase for it — learnable in CPU-minutes.
    phase: str = "predicted"
    gl_iters: int = 32
    # griffin-lim mode: multiplicative NNLS updates, started from the network's magnitudes, that
    # pull them back into agreement with the input mel (the mel is what we know for sure)
    refine_iters: int = 10
    # predicted mode: the log-magnitude head is a correction added to the mel's own energy spread
    # back over the FFT bins (as in griffin-lim mode), so training starts from the right loudness
    # in every bin instead of from 1.0 everywhere and the network's first steps go to the phase
    mag_base: bool = False


class _Block(nn.Module):
    def __init__(self, d: int, kernel: int, dilation: int, ff_mult: int) -> None:
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.conv = nn.Conv1d(d, d, kernel, padding=pad, dilation=dilation, groups=d)
        self.norm = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.scale = nn.Parameter(torch.full((d,), 0.1))

    def forward(self, h: Tensor) -> Tensor:  # (B, T, D)
        y = self.conv(h.transpose(1, 2)).transpose(1, 2)
        return h + self.scale * self.ff(self.norm(y))


def istft_batch(spec: Tensor) -> Tensor:
    """complex (B, F, 513) → (B, F·320) by weighted overlap-add with the front end's framing."""
    win = torch.hann_window(audio.WIN, periodic=True, device=spec.device)
    frames = torch.fft.irfft(spec, n=audio.N_FFT)[..., : audio.WIN] * win  # (B, F, 640)
    B, F, _ = frames.shape
    hop = audio.HOP

    def ola(x: Tensor) -> Tensor:  # (B, F, 2·HOP) → (B, (F+1)·HOP)
        out = x.new_zeros(B, F + 1, hop)
        out[:, :F] += x[..., :hop]
        out[:, 1:] += x[..., hop:]
        return out.flatten(1)

    env = ola((win**2).expand(B, F, -1))
    return (ola(frames) / env.clamp_min(0.1))[:, : F * hop]


class Vocoder(nn.Module):
    """mel (B, T, 128) unscaled natural-log mel → audio (B, T·320) at 16 kHz."""

    def __init__(self, config: VocoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VocoderConfig()
        d = cfg.d_model
        self.inp = nn.Conv1d(audio.N_MELS, d, cfg.kernel, padding=cfg.kernel // 2)
        self.inp_norm = nn.LayerNorm(d)
        dil = cfg.dilations
        self.blocks = nn.ModuleList(
            _Block(d, cfg.kernel, dil[i % len(dil)], cfg.ff_mult) for i in range(cfg.layers)
        )
        self.out_norm = nn.LayerNorm(d)
        if cfg.phase not in ("predicted", "griffin-lim"):
            raise ValueError(
                f"VocoderConfig.phase must be predicted or griffin-lim, not {cfg.phase!r}"
            )
        # predicted: log-magnitude, phase cos, phase sin; griffin-lim: a log-magnitude correction
        self.out = nn.Linear(d, (3 if cfg.phase == "predicted" else 1) * N_BINS)

    @property
    def receptive_frames(self) -> int:
        """R: output frame k depends on mel frames k−R … k+R (the convolutions' half-widths)."""
        cfg = self.config
        dil = cfg.dilations
        half = (cfg.kernel - 1) // 2
        return half + sum(half * dil[i % len(dil)] for i in range(cfg.layers))

    def _hidden(self, mel: Tensor) -> Tensor:
        x = (mel.to(self.out.weight.dtype) + MEL_SHIFT) / MEL_SCALE
        h = self.inp_norm(self.inp(x.transpose(1, 2)).transpose(1, 2))  # (B, T, D)
        for blk in self.blocks:
            h = blk(h)
        return self.out(self.out_norm(h)).float()

    def log_magnitude(self, mel: Tensor) -> Tensor:
        """griffin-lim mode: mel (B, T, 128) → natural-log STFT magnitude (B, T, 513): the mel's
        energy spread back over the FFT bins by the filterbank (a smeared spectrum) + the learned
        correction (sharper harmonics, the right tilt)."""
        return torch.log(spread_mel(mel) + 1e-5) + self._hidden(mel)  # (B, T, 513)

    def spectrum(self, mel: Tensor) -> Tensor:
        """predicted mode: mel (B, T, 128) → complex STFT (B, T, 513)."""
        logmag, re, im = self._hidden(mel).chunk(3, dim=-1)
        if self.config.mag_base:
            logmag = logmag + torch.log(spread_mel(mel) + 1e-5)
        mag = torch.exp(logmag.clamp(max=8.0))
        norm = torch.sqrt(re**2 + im**2).clamp_min(1e-6)
        return torch.complex(mag * re / norm, mag * im / norm)

    def forward(self, mel: Tensor, init_audio: Tensor | None = None) -> Tensor:
        """mel (B, T, 128) → audio (B, T·320); ``init_audio`` (griffin-lim mode, B = 1): the audio
        emitted just before, whose phase Griffin-Lim continues."""
        if self.config.phase == "predicted":
            return istft_batch(self.spectrum(mel))
        spread = spread_mel(mel)  # (B, T, 513): the magnitudes' base and the NNLS target
        mag = (torch.log(spread + 1e-5) + self._hidden(mel)).clamp(max=12.0).exp()
        cfg = self.config
        mag = torch.stack(
            [
                refine_magnitude(s, m, cfg.refine_iters, p)
                for s, m, p in zip(mag, mel, spread, strict=True)
            ]
        )
        return torch.stack([griffin_lim(m, cfg.gl_iters, init_audio=init_audio) for m in mag])


class NeuralInverter:
    """The ``Inverter`` protocol around a trained Vocoder (``{"type": "vocoder", "path": DIR}``)."""

    name = "vocoder"

    def __init__(self, model: Vocoder, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        # predicted phase: a pure convolution of the mel, streamed exactly (StreamingInverter);
        # griffin-lim mode iterates over the whole chunk, so it is crossfaded instead
        if model.config.phase == "predicted":
            self.receptive_frames = model.receptive_frames

    def __call__(self, mel: Tensor, init_audio: Tensor | None = None) -> Tensor:
        dev = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model(mel[None].to(dev).float(), init_audio)[0].float()


def save_vocoder(model: Vocoder, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``vocoder.safetensors`` + ``vocoder.json`` into ``folder`` (atomically per file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / ".vocoder.safetensors.tmp"
    save_file(state, str(tmp))
    os.replace(tmp, folder / "vocoder.safetensors")
    meta = {"format": "midisynth-vocoder-1", "config": asdict(model.config), **(extra or {})}
    (folder / "vocoder.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_vocoder(folder: str | os.PathLike) -> Vocoder:
    """A Vocoder from a folder written by ``save_vocoder``; InverterError when unusable."""
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        meta = json.loads((folder / "vocoder.json").read_text())
        model = Vocoder(VocoderConfig(**meta["config"]))
        model.load_state_dict(load_file(str(folder / "vocoder.safetensors")), strict=True)
    except Exception as e:  # noqa: BLE001 - safetensors, json and torch each raise their own
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InverterError(f"{folder}: not a usable vocoder ({msg})") from None
    return model.eval()


def release_vocoder(
    src: str | os.PathLike, dst: str | os.PathLike, evaluation: dict | None = None
) -> Path:
    """Copy a trained vocoder folder to ``dst`` for shipping: the weights and ``vocoder.json``
    (every config field written out, + ``evaluation``); never ``train_state.safetensors``."""
    import shutil

    src, dst = Path(src), Path(dst)
    model = load_vocoder(src)  # checks that it loads
    meta = json.loads((src / "vocoder.json").read_text())
    meta["config"] = asdict(model.config)
    if evaluation is not None:
        meta["evaluation"] = evaluation
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "vocoder.safetensors", dst / "vocoder.safetensors")
    (dst / "vocoder.json").write_text(json.dumps(meta, indent=2) + "\n")
    return dst
