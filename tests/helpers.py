"""Small test helpers shared by several test modules (not a test module itself)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import mido
import numpy as np

from midisynth import audio

if TYPE_CHECKING:
    import torch

    from midisynth.model import ModelConfig


def make_midi(path: Path, notes: list[tuple[float, float, int]], program: int = 0) -> None:
    """(start s, end s, pitch) on channel 0 at 120 qpm (960 ticks per beat = 1920 ticks/s)."""
    ev = [(0, mido.Message("program_change", channel=0, program=program))]
    for s, e, p in notes:
        ev.append((round(s * 1920), mido.Message("note_on", note=p, velocity=100)))
        ev.append((round(e * 1920), mido.Message("note_off", note=p, velocity=0)))
    track, now = mido.MidiTrack(), 0
    for tick, msg in sorted(ev, key=lambda x: x[0]):
        track.append(msg.copy(time=tick - now))
        now = tick
    mf = mido.MidiFile(type=0, ticks_per_beat=960)
    mf.tracks.append(track)
    mf.save(path)


def additive(notes: list[tuple[float, float, int]], seconds: float) -> np.ndarray:
    """A few harmonics per note with a short release: a stand-in for a recording."""
    sr = audio.SAMPLE_RATE
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for s, e, p in notes:
        f = 440.0 * 2 ** ((p - 69) / 12)
        env = np.clip((t - s) * 200, 0, 1) * np.clip(1 - (t - e) * 20, 0, 1) * (t >= s)
        out += sum(0.2 / k * np.sin(2 * np.pi * k * f * t) for k in (1, 2, 3)) * env
    return out.astype(np.float32)


SONG = [(0.5, 1.5, 60), (2.0, 6.0, 67), (5.0, 5.6, 72), (7.0, 9.0, 64)]  # crosses the 5.12 s line


def diffusers_modules(cfg: ModelConfig, dropout_rate: float = 0.1) -> dict[str, torch.nn.Module]:
    """diffusers' own three modules for ``cfg``, keyed by midisynth's submodule names
    (notes_encoder, continuous_encoder, decoder; built in that order, with diffusers' initial
    weights) and set to eager attention. Needs the ``test`` extra (diffusers, transformers); also
    used by benchmarks/model_speed.py."""
    from diffusers.models.transformers.t5_film_transformer import T5FilmDecoder
    from diffusers.pipelines.deprecated.spectrogram_diffusion import (
        SpectrogramContEncoder,
        SpectrogramNotesEncoder,
    )

    common = dict(
        d_model=cfg.d_model,
        num_heads=cfg.num_heads,
        d_kv=cfg.d_kv,
        d_ff=cfg.d_ff,
        dropout_rate=dropout_rate,
    )
    enc = dict(common, num_layers=cfg.num_encoder_layers, feed_forward_proj="gated-gelu")
    mods = {
        "notes_encoder": SpectrogramNotesEncoder(
            max_length=cfg.max_tokens, vocab_size=cfg.vocab_size, **enc
        ),
        "continuous_encoder": SpectrogramContEncoder(
            input_dims=cfg.input_dims, targets_context_length=cfg.context_length, **enc
        ),
        "decoder": T5FilmDecoder(
            input_dims=cfg.input_dims,
            targets_length=cfg.targets_length,
            max_decoder_noise_time=cfg.max_decoder_noise_time,
            num_layers=cfg.num_decoder_layers,
            **common,
        ),
    }
    for m in mods.values():
        for sub in m.modules():  # plain eager attention, and no "_attn_implementation" warning
            if hasattr(sub, "config") and hasattr(sub.config, "_attn_implementation"):
                sub.config._attn_implementation = "eager"
    return mods
