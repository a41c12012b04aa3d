"""The neural inverter: shapes, the STFT framing, checkpoints, a training smoke run, use in render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from midisynth import audio, griffinlim, inverter, train_vocoder
from midisynth.checkpoint import BUNDLED_DIR
from midisynth.inverter import DEFAULT_VOCODER
from midisynth.vocoder import (
    NeuralInverter,
    Vocoder,
    VocoderConfig,
    istft_batch,
    load_vocoder,
    save_vocoder,
)

SMALL = VocoderConfig(d_model=32, layers=2)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def _tiny_run(tmp_path: Path, out: str, steps: int, **config) -> Path:
    """A few training steps on three sine "pieces" (batch 2, one thread) into tmp_path/out."""
    cfg = train_vocoder.VocoderTrainConfig(
        data=str(_audio_set(tmp_path / f"data-{out}")),
        out=str(tmp_path / out),
        steps=steps,
        batch_size=2,
        max_minutes=None,
        threads=1,
        **config,
    )
    return train_vocoder.train(cfg, log=lambda *_: None)


def test_release_ships_weights_without_optimizer_state(tmp_path):
    vocoder = {"d_model": 16, "layers": 1, "mag_base": True}
    run = _tiny_run(tmp_path, "run", 2, vocoder=vocoder, phase_weight=0.5)
    assert (run / "train_state.safetensors").is_file()
    assert "lsd2048" in json.loads((run / "vocoder.json").read_text())["val"][-1]
    rc = train_vocoder.main(
        ["release", str(run), str(tmp_path / "ship"), "--evaluation", '{"lsd": 1.5}']
    )
    assert rc == 0
    shipped = sorted(p.name for p in (tmp_path / "ship").iterdir())
    assert shipped == ["vocoder.json", "vocoder.safetensors"]
    meta = json.loads((tmp_path / "ship" / "vocoder.json").read_text())
    assert meta["evaluation"] == {"lsd": 1.5} and meta["config"]["mag_base"] is True
    mel = torch.full((1, 20, 128), -4.0)
    assert torch.equal(load_vocoder(tmp_path / "ship")(mel), load_vocoder(run)(mel))


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


def test_predicted_phase_with_a_magnitude_base_starts_from_the_mels_spectrum():
    model = Vocoder(VocoderConfig(d_model=16, layers=1, mag_base=True)).eval()
    with torch.no_grad():  # the log-magnitude rows say "no correction"
        model.out.weight[: griffinlim.audio.N_FFT // 2 + 1] = 0
        model.out.bias[: griffinlim.audio.N_FFT // 2 + 1] = 0
    mel = audio.log_mel(torch.from_numpy(_sine(1.0)))[None]
    base = griffinlim.spread_mel(mel) + 1e-5
    assert torch.allclose(model.spectrum(mel).abs(), base, rtol=1e-4)
    assert model(mel).shape == (1, mel.shape[1] * audio.HOP)


def test_phase_loss_is_zero_for_the_true_spectrum_and_not_for_another():
    wave = torch.from_numpy(_sine(1.28))[None]
    true = griffinlim.stft(wave)[:, : train_vocoder.CROP_FRAMES]
    assert train_vocoder.phase_loss(true, wave) < 1e-5
    assert train_vocoder.phase_loss(true * 2.0, wave) < 1e-5  # phase only: a gain changes nothing
    noise = torch.randn(
        true.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)
    )
    assert train_vocoder.phase_loss(true.abs() * noise / noise.abs(), wave) > 0.5


def test_griffin_lim_mode_trains_on_magnitudes(tmp_path):
    vocoder = {"phase": "griffin-lim", "d_model": 16, "layers": 1, "gl_iters": 2}
    out = _tiny_run(tmp_path, "g", 3, vocoder=vocoder)
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


WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@pytest.mark.parametrize("name", ["vocoder-s", "vocoder-p"])
def test_shipped_vocoders_load_by_name(name):
    folder = WEIGHTS / name
    if not (folder / "vocoder.json").is_file():
        pytest.skip(f"weights/{name} is not shipped")
    files = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert sum(files.values()) <= 20 * 2**20 and "MODEL_CARD.md" in files
    assert max(files.values()) <= 15 * 2**20  # every committed file within the shard limit
    assert not any(n.startswith("train_state") for n in files)  # never optimizer state in git
    inv = inverter.load_inverter(name)
    assert inv.name == "vocoder"
    mel = audio.log_mel(torch.from_numpy(_sine(3.0)))
    stream = inverter.StreamingInverter(inv)
    out = torch.cat([stream.push(mel), stream.flush()])
    assert torch.isfinite(out).all() and out.abs().max() > 0.01


def test_the_auto_inverter_is_the_phase_predicting_one():
    if not (WEIGHTS / DEFAULT_VOCODER / "vocoder.json").is_file():
        pytest.skip("no shipped vocoder")
    assert DEFAULT_VOCODER == "vocoder-p"
    auto = inverter.load_inverter("auto")
    assert auto.model.config.phase == "predicted" and auto.receptive_frames > 0


def _frame_steps(wave: np.ndarray) -> np.ndarray:
    """Mean absolute change of the log-mel from one 20 ms frame to the next: [frames - 1]."""
    mel = audio.log_mel(torch.from_numpy(wave)).numpy()
    return np.abs(np.diff(mel, axis=0)).mean(axis=1)


@pytest.mark.skipif(
    not (BUNDLED_DIR / DEFAULT_VOCODER / "vocoder.json").is_file(), reason="no shipped vocoder"
)
def test_no_seam_between_segments_with_the_default_inverter():
    """Issue 22: a multi-segment render through the default inverter has no step at the segment
    joins above the music's own frame-to-frame change, and equals the whole song's mel inverted
    at once (the joins add nothing)."""
    from midisynth.render import RenderOptions, render
    from midisynth.weights import load_model

    model = load_model(device="cpu")
    out = render(model, EXAMPLES / "band.mid", RenderOptions(seed=3, tail=1.0))
    assert len(out.mel) > 2 * audio.SEGMENT_FRAMES  # three segments, two joins
    inv = inverter.load_inverter("auto")
    whole = inv(torch.from_numpy(out.mel)).numpy()
    # The render's inverter also saw the last segment's frames past the song's end (the mel file
    # stops at the end), so the last R + 1 frames may differ; everything before them may not.
    end = (len(out.mel) - inv.receptive_frames - 1) * audio.HOP
    err = float(np.abs(out.audio[:end] - whole[:end]).max())
    assert err <= 1e-4 * float(np.abs(whole).max()), err
    steps = _frame_steps(out.audio)
    joins = [k * audio.SEGMENT_FRAMES for k in range(1, len(out.mel) // audio.SEGMENT_FRAMES + 1)]
    near = sorted({j + d for j in joins for d in (-2, -1, 0, 1) if 0 <= j + d < len(steps)})
    elsewhere = np.delete(steps, near)
    assert steps[near].max() <= elsewhere.max(), (steps[near], elsewhere.max())


def test_gta_crops_pair_audio_with_the_generated_mel_of_the_same_frames(tmp_path):
    # Issue 19: fine-tuning on a model's own mels needs them frame-aligned with the audio. Here
    # the "model" is the audio's own log-mel made 1 nat louder: a crop's generated input must be
    # exactly that of its frames; its own log-mel stays the target of the mel term.
    rng = np.random.default_rng(0)  # noise, so no mel band sits near float32's rounding floor
    t = np.arange(3 * audio.SAMPLE_RATE) / audio.SAMPLE_RATE
    waves = [(0.1 * rng.standard_normal(len(t)) * (0.2 + t)).astype(np.float32) for _ in range(2)]
    mels = [audio.log_mel(torch.from_numpy(w)).numpy() + 1.0 for w in waves]
    wave, gen = train_vocoder._crops(waves, np.random.default_rng(0), 6, mels, gta=1.0)
    mel_in, real = train_vocoder.input_mels(wave, gen)
    inner = slice(0, train_vocoder.CROP_FRAMES - 2)  # the crop's own last frames see its end
    torch.testing.assert_close(mel_in[:, inner], real[:, inner] + 1.0, atol=2e-3, rtol=0)
    _, none = train_vocoder._crops(waves, np.random.default_rng(0), 6, mels, gta=0.0)
    assert torch.equal(train_vocoder.input_mels(wave, none)[0], real)  # gta 0: the audio's own
    assert train_vocoder._crops(waves, np.random.default_rng(0), 6)[1] is None


def test_gta_training_reads_a_set_with_generated_mels(tmp_path, monkeypatch):
    monkeypatch.setattr(train_vocoder, "VocoderConfig", lambda: SMALL)
    data = _audio_set(tmp_path / "data")
    with pytest.raises(ValueError, match="--gta needs a set built with --model"):
        _tiny_run(tmp_path, "no-mels", 1, gta=0.5)
    for split in ("audio", "val"):
        with np.load(data / f"{split}-00000.npz") as z:
            arrays = {k: z[k] for k in z.files}
        for k in [k for k in arrays if k.startswith("a")]:
            wave = torch.from_numpy(arrays[k].astype(np.float32))
            arrays["m" + k[1:]] = (audio.log_mel(wave).numpy() + 1.0).astype(np.float16)
        np.savez(data / f"{split}-00000.npz", **arrays)
    assert len(train_vocoder.load_audio_set(data)) == 3  # the mels are not read as audio
    assert train_vocoder.load_model_mels(data)[0].shape == (150, 128)  # 3 s
    cfg = train_vocoder.VocoderTrainConfig(
        data=str(data), out=str(tmp_path / "v"), steps=2, batch_size=2, max_minutes=None,
        threads=1, gta=0.5,
    )  # fmt: skip
    out = train_vocoder.train(cfg, log=lambda *_: None)
    val = json.loads((out / "vocoder.json").read_text())["val"][-1]
    assert {"gta_stft", "gta_mel"} <= set(val) and val["gta_mel"] > 0.5  # 1 nat too loud


def test_model_mel_renders_the_same_notes_frame_for_frame(tiny_frame_folder):
    from midisynth.midi import Note

    notes = [Note(0.1, 0.6, 60, 100, 0, False, 0), Note(0.4, 1.0, 64, 80, 0, False, 0)]
    samples = int(1.5 * audio.SAMPLE_RATE)
    mel = train_vocoder._model_mel(str(tiny_frame_folder), notes, samples, "/x/FluidR3_GM.sf2")
    assert mel.shape == (audio.num_frames(samples), 128) and mel.dtype == np.float16
    assert np.isfinite(mel).all() and mel.std() > 0
