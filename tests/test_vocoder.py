"""The neural inverter: shapes, the STFT framing, checkpoints, a training smoke run, use in render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from midisynth import audio, griffinlim, inverter, train_vocoder
from midisynth.vocoder import (
    NeuralInverter,
    Vocoder,
    VocoderConfig,
    istft_batch,
    load_vocoder,
    save_vocoder,
)

SMALL = VocoderConfig(d_model=32, layers=2)


def test_istft_batch_matches_the_inverter_istft():
    x = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    spec = torch.stack([griffinlim.stft(r) for r in x])
    y = istft_batch(spec)
    assert y.shape == (2, spec.shape[1] * audio.HOP)
    assert torch.allclose(y[0], griffinlim.istft(spec[0]), atol=1e-5)
    assert torch.allclose(y[:, 200:7900], x[:, 200:7900], atol=1e-4)


def test_forward_length_and_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Vocoder(SMALL)
    mel = torch.full((1, 40, 128), -3.0)
    assert model(mel).shape == (1, 40 * audio.HOP)
    save_vocoder(model, tmp_path / "v")
    again = load_vocoder(tmp_path / "v")
    assert torch.equal(again(mel), model.eval()(mel))
    (tmp_path / "v" / "vocoder.safetensors").write_bytes(b"broken")
    with pytest.raises(inverter.InverterError, match="not a usable vocoder"):
        load_vocoder(tmp_path / "v")


def _audio_set(folder, n=3, seconds=3.0):
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    waves = {
        f"a{i}": (0.2 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float16) for i in range(n)
    }
    folder.mkdir()
    for split in ("audio", "val"):
        np.savez(folder / f"{split}-00000.npz", **waves, names=np.array(list(waves)))
    return folder


def test_training_smoke_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(train_vocoder, "VocoderConfig", lambda: SMALL)
    data = _audio_set(tmp_path / "data")
    cfg = train_vocoder.VocoderTrainConfig(
        data=str(data), out=str(tmp_path / "v"), steps=3, batch_size=2, max_minutes=None, threads=1
    )
    out = train_vocoder.train(cfg, log=lambda *_: None)
    meta = json.loads((out / "vocoder.json").read_text())
    assert meta["steps"] == 3 and {"stft", "mel"} <= set(meta["val"][-1])
    again = train_vocoder.train(
        train_vocoder.VocoderTrainConfig(
            data=str(data),
            out=str(tmp_path / "v2"),
            resume=str(out),
            steps=2,
            batch_size=2,
            max_minutes=None,
            threads=1,
        ),
        log=lambda *_: None,
    )
    meta2 = json.loads((again / "vocoder.json").read_text())
    assert meta2["steps"] == 5 and [v["step"] for v in meta2["val"]] == [3, 5]  # history kept


def test_a_vocoder_folder_is_an_inverter(tmp_path):
    save_vocoder(Vocoder(SMALL), tmp_path / "voc")
    inv = inverter.load_inverter(str(tmp_path / "voc"))
    stream = inverter.StreamingInverter(inv)
    out = stream.push(torch.full((300, 128), -4.0))
    reach = inv.receptive_frames
    assert reach == 3 + 2 * 3  # input conv + two blocks, kernel 7
    assert torch.isfinite(out).all() and out.numel() == (300 - reach) * audio.HOP
    assert stream.flush().numel() == reach * audio.HOP


@pytest.mark.parametrize("chunks", [[256, 256, 188], [5, 3, 400, 292], [700]])
def test_predicted_phase_streams_exactly(chunks):
    """A phase-predicting vocoder streamed in render-sized (or odd) chunks gives the whole song's
    inversion: no seam, because no chunk edge reaches the audio that is emitted."""
    torch.manual_seed(0)
    model = Vocoder(VocoderConfig(d_model=32, layers=4, dilations=[1, 2]))
    with torch.no_grad():
        for blk in model.blocks:  # make every block matter, so a short context would show
            blk.scale.fill_(1.0)
    inv = NeuralInverter(model)
    assert inv.receptive_frames == 3 + 3 + 6 + 3 + 6
    mel = torch.randn(700, 128, generator=torch.Generator().manual_seed(1)) - 4
    whole = inv(mel)
    stream = inverter.StreamingInverter(inv)
    parts, i = [], 0
    for c in chunks:
        parts.append(stream.push(mel[i : i + c]))
        i += c
    parts.append(stream.flush())
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() < 1e-5 * whole.abs().max()
    # the reach is really the reach: a change at frame 300 moves 320-sample blocks 300-R … 300+R+1
    bumped = mel.clone()
    bumped[300] += 1.0
    moved = ((inv(bumped) - whole).abs().reshape(-1, audio.HOP).amax(1) > 0).nonzero().flatten()
    r = inv.receptive_frames
    assert moved.min() == 300 - r and moved.max() == 300 + r + 1


def test_griffin_lim_mode_predicts_magnitudes_and_continues_the_phase(tmp_path):
    torch.manual_seed(0)
    cfg = VocoderConfig(d_model=16, layers=1, phase="griffin-lim", gl_iters=4)
    model = Vocoder(cfg).eval()
    torch.nn.init.zeros_(model.out.weight)
    torch.nn.init.zeros_(model.out.bias)
    mel = audio.log_mel(torch.from_numpy(_sine(1.0)))[None]  # (1, T, 128)
    w = audio.mel_filterbank()
    base = torch.log(mel.exp() @ w.T + 1e-5)
    assert torch.allclose(model.log_magnitude(mel), base)  # zero correction = the smeared mel
    out = model(mel)
    assert out.shape == (1, mel.shape[1] * audio.HOP)
    start = griffinlim.refine_magnitude(base[0].clamp(max=12).exp(), mel[0], 10)
    expect = griffinlim.griffin_lim(start, 4)
    assert torch.allclose(out[0], expect, atol=1e-5)
    prev = torch.from_numpy(_sine(0.5))
    assert not torch.allclose(model(mel, prev), out)  # the seam continues the emitted phase
    with pytest.raises(ValueError, match="phase must be"):
        Vocoder(VocoderConfig(phase="magic"))


def test_griffin_lim_mode_trains_on_magnitudes(tmp_path):
    data = _audio_set(tmp_path / "data")
    cfg = train_vocoder.VocoderTrainConfig(
        data=str(data),
        out=str(tmp_path / "g"),
        steps=3,
        batch_size=2,
        max_minutes=None,
        threads=1,
        vocoder={"phase": "griffin-lim", "d_model": 16, "layers": 1, "gl_iters": 2},
    )
    out = train_vocoder.train(cfg, log=lambda *_: None)
    meta = json.loads((out / "vocoder.json").read_text())
    assert meta["config"]["phase"] == "griffin-lim" and meta["steps"] == 3
    inv = inverter.load_inverter(str(out))
    audio_out = inverter.StreamingInverter(inv).push(torch.full((300, 128), -4.0))
    assert torch.isfinite(audio_out).all()
    wave = torch.from_numpy(_sine(1.28))[None]
    mel = train_vocoder.crop_mels(wave)
    good = torch.log(griffinlim.stft(wave).abs()[:, : mel.shape[1]] + 1e-5)
    assert train_vocoder.magnitude_loss(good, wave) < 1e-3  # the true magnitude scores ~0


def _sine(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * audio.SAMPLE_RATE)) / audio.SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "vocoder-s"


@pytest.mark.skipif(not (SHIPPED / "vocoder.json").is_file(), reason="no shipped vocoder")
def test_shipped_vocoder_loads_by_name_and_is_the_auto_choice():
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir()}
    assert sum(files.values()) <= 20 * 2**20 and "MODEL_CARD.md" in files
    assert not any(n.startswith("train_state") for n in files)  # never optimizer state in git
    inv = inverter.load_inverter("vocoder-s")
    assert isinstance(inv, inverter.load_inverter("auto").__class__) and inv.name == "vocoder"
    mel = audio.log_mel(torch.from_numpy(_sine(3.0)))
    out = inverter.StreamingInverter(inv).push(mel)
    assert torch.isfinite(out).all() and out.abs().max() > 0.01
