"""Mel → waveform: Griffin-Lim, the ONNX SoundStream interface (stand-in), click-free streaming."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from midisynth import audio
from midisynth.griffinlim import istft, stft
from midisynth.inverter import (
    GriffinLim,
    InverterError,
    OnnxInverter,
    StreamingInverter,
    load_inverter,
)


def tone(seconds: float = 2.0, f: float = 440.0) -> torch.Tensor:
    n = int(seconds * audio.SAMPLE_RATE)
    return 0.3 * torch.sin(2 * math.pi * f * torch.arange(n) / audio.SAMPLE_RATE)


def test_stft_istft_roundtrip_and_front_end_magnitude():
    x = tone(1.0) + 0.05 * torch.randn(16000, generator=torch.Generator().manual_seed(0))
    spec = stft(x)
    assert spec.shape == (audio.num_frames(16000), 513)
    # Same framing as the front end: |STFT| @ W gives log_mel.
    mel = (spec.abs().double() @ audio.mel_filterbank(dtype=torch.float64)).clamp(1e-5).log()
    assert torch.allclose(mel.float(), audio.log_mel(x), atol=1e-3)
    y = istft(spec)
    assert y.shape == x.shape
    # Exact except the first ~7 ms, where the overlap-add envelope is below its 0.1 floor.
    assert torch.allclose(y[128:15000], x[128:15000], atol=1e-4)
    assert y[:128].abs().max() <= x[:128].abs().max()  # a fade-in there, never a boost


def test_no_burst_at_the_start():
    # Issue 13: every render began with a near full-scale burst ~2 ms in (the envelope floor).
    y = GriffinLim()(torch.full((200, 128), -2.0))
    first = y[: audio.SAMPLE_RATE // 20].abs().max()  # first 50 ms
    assert first <= y[audio.SAMPLE_RATE // 20 :].abs().max()


def test_griffin_lim_reproduces_the_mel():
    music = audio.read_audio(Path(__file__).parent / "fixtures" / "real_music.flac")
    mel = audio.log_mel(music)
    y = GriffinLim(iters=32)(mel)
    assert y.shape == (mel.shape[0] * audio.HOP,)
    again = audio.log_mel(y[: music.numel()])
    loud = mel > -4  # compare where there is energy
    # Measured 0.051 (log units) on this fixture; a random phase alone gives ~1.2.
    assert (again[loud] - mel[loud]).abs().mean() < 0.1


def seam_jump(y: torch.Tensor, at: int) -> float:
    return float((y[at - 1 : at + 1].diff()).abs().max())


def test_streaming_inverter_is_seamless_and_exact_length():
    x = tone(3.0, 220.0)
    mel = audio.log_mel(x)  # (150, 128)
    stream = StreamingInverter(GriffinLim(iters=16), context=16, crossfade=4)
    parts = [stream.push(mel[i : i + 50]) for i in range(0, 150, 50)] + [stream.flush()]
    y = torch.cat(parts)
    assert y.numel() == 150 * audio.HOP
    # No click at the joins: the biggest sample-to-sample step near a seam is no larger than the
    # signal's own largest step anywhere (a 220 Hz sine at amplitude ~0.3 steps < 0.03).
    steady = float(y[2000:-2000].diff().abs().max())
    for seam in (50 * audio.HOP, 100 * audio.HOP):
        assert seam_jump(y, seam) <= steady + 1e-6


def make_onnx_standin(path):
    """An ONNX model with the official inverter's interface: input_features [B, T, 128] log-mel →
    [B, T·320] audio (here: the mean of each frame's exp-mel, repeated 320×)."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")

    class StandIn(torch.nn.Module):
        def forward(self, input_features):
            frame = input_features.exp().mean(-1, keepdim=True)  # (B, T, 1)
            return frame.repeat(1, 1, 320).flatten(1)  # (B, T*320)

    torch.onnx.export(
        StandIn(),
        (torch.zeros(1, 10, 128),),
        str(path),
        input_names=["input_features"],
        output_names=["audio"],
        dynamic_axes={"input_features": {0: "b", 1: "t"}},
        dynamo=False,
    )
    onnx.checker.check_model(str(path))


def test_onnx_inverter_interface(tmp_path):
    path = tmp_path / "model.onnx"
    make_onnx_standin(path)
    inv = load_inverter({"type": "soundstream-onnx", "path": str(path)})
    mel = torch.randn(37, 128)
    y = inv(mel)
    assert y.shape == (37 * 320,)
    np.testing.assert_allclose(y[::320].numpy(), mel.exp().mean(-1).numpy(), rtol=1e-5)


def test_bad_inverters_fail_clearly(tmp_path):
    with pytest.raises(InverterError, match="unknown inverter"):
        load_inverter("wavenet")
    with pytest.raises(InverterError, match="missing"):
        OnnxInverter(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    pytest.importorskip("onnxruntime")
    with pytest.raises(InverterError, match="cannot load ONNX"):
        OnnxInverter(bad)


# --------------------------------------------------------------------------------------------
# Issue 20: the inverter on the model's device (checked without a GPU)


def test_inverters_follow_the_requested_device():
    from midisynth.checkpoint import BUNDLED_DIR

    gl = load_inverter("griffin-lim", device=torch.device("cpu"))
    assert gl.device == torch.device("cpu")
    assert load_inverter("griffin-lim", device="meta").device == torch.device("meta")
    assert GriffinLim().device is None  # no device: the mel's own
    y = gl(torch.full((20, 128), -4.0))
    assert y.device == torch.device("cpu") and y.shape == (20 * audio.HOP,)
    if not (BUNDLED_DIR / "vocoder-s" / "vocoder.json").is_file():
        pytest.skip("weights/vocoder-s is not installed")
    for dev in ("cpu", "meta"):  # meta: where a CUDA device would be, without one
        voc = load_inverter("vocoder-s", device=torch.device(dev))
        assert {p.device.type for p in voc.model.parameters()} == {dev}
        assert {b.device.type for b in voc.model.buffers()} <= {dev}


def test_onnx_inverter_asks_for_cuda_when_onnxruntime_has_it(tmp_path, monkeypatch):
    from midisynth.inverter import onnx_providers

    cuda_ort = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cpu_ort = ["AzureExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cuda:1", cuda_ort) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    assert onnx_providers(torch.device("cuda"), cuda_ort)[0][1] == {"device_id": 0}
    assert onnx_providers("cuda", cpu_ort) == ["CPUExecutionProvider"]  # CPU-only onnxruntime
    assert onnx_providers("cpu", cuda_ort) == ["CPUExecutionProvider"]  # model on the CPU

    ort = pytest.importorskip("onnxruntime")
    asked = []

    class Session:
        def __init__(self, path, providers):
            asked.append(providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: cuda_ort)
    monkeypatch.setattr(ort, "InferenceSession", Session)
    path = tmp_path / "model.onnx"
    path.write_bytes(b"stand-in")
    inv = load_inverter({"type": "soundstream-onnx", "path": str(path)}, device="cuda")
    assert asked[-1][0] == ("CUDAExecutionProvider", {"device_id": 0}) == inv.providers[0]
    load_inverter({"type": "soundstream-onnx", "path": str(path)}, device="cpu")
    assert asked[-1] == ["CPUExecutionProvider"]


@pytest.mark.gpu
def test_griffin_lim_and_vocoder_run_on_cuda():
    mel = torch.full((40, 128), -4.0)
    for name in ("griffin-lim", "vocoder-s"):
        inv = load_inverter(name, device="cuda")
        stream = StreamingInverter(inv)
        out = stream.push(mel)
        assert out.device.type == "cuda", name
        cpu = StreamingInverter(load_inverter(name, device="cpu")).push(mel)
        # Griffin-Lim's phase search rounds differently on the GPU: compare shape and level
        assert out.shape == cpu.shape and bool(torch.isfinite(out).all()), name
        rms_gpu, rms_cpu = out.pow(2).mean().sqrt().item(), cpu.pow(2).mean().sqrt().item()
        assert abs(rms_gpu - rms_cpu) <= 0.1 * rms_cpu, name
