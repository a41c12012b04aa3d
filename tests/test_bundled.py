"""The bundled model: the default, offline; hears velocity; the README's first command works."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midisynth import weights
from midisynth.cli import app

REPO = Path(__file__).resolve().parents[1]
SHIPPED = [e for e in weights.REGISTRY.values() if e.local_dir is not None]
BUNDLED = [e for e in SHIPPED if e.name == weights.DEFAULT_MODEL]  # the default, when present
needs_bundled = pytest.mark.skipif(not BUNDLED, reason="no bundled default model in weights/")
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="no model in weights/")


def _ramp_module():
    spec = importlib.util.spec_from_file_location(
        "velocity_ramp", REPO / "benchmarks" / "velocity_ramp.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_bundled
def test_bundled_model_is_the_default_and_listed_so(monkeypatch):
    monkeypatch.delenv(weights.DEFAULT_MODEL_ENV, raising=False)
    assert weights.default_model_name() == weights.DEFAULT_MODEL
    r = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    line = next(x for x in r.output.splitlines() if f"{weights.DEFAULT_MODEL} (default)" in x)
    assert "bundled" in line
    official = next(x for x in r.output.splitlines() if "official" in x)
    assert "needs download" in official or "downloaded" in official


def test_environment_variable_sets_the_default(monkeypatch):
    monkeypatch.setenv(weights.DEFAULT_MODEL_ENV, "tiny-random")
    assert weights.default_model_name() == "tiny-random"
    assert weights.load_model().name == "tiny-random"
    r = CliRunner().invoke(
        app, ["models"], env={"COLUMNS": "200", "MIDISYNTH_MODEL": "tiny-random"}
    )
    assert "tiny-random (default)" in r.output


@needs_bundled
def test_default_render_touches_no_network(tmp_path, monkeypatch):
    """No --model: the bundled model renders with every network path made to fail loudly."""
    import socket

    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the default render tried the network")

    monkeypatch.delenv(weights.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    out = tmp_path / "o.wav"
    r = CliRunner().invoke(app, ["render", str(REPO / "examples" / "melody_chords.mid"), str(out)])
    assert r.exit_code == 0, r.output
    assert out.is_file()


@needs_shipped
@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_shipped_model_card_and_checksums(entry):
    folder = entry.local_dir
    model = weights.load_model(entry.name, verify=True)
    assert model.config.frame is not None and (folder / "MODEL_CARD.md").is_file()
    assert sum(f.stat().st_size for f in folder.glob("*.safetensors")) <= 30 * 2**20
    assert all(f.stat().st_size <= 15 * 2**20 for f in folder.iterdir())
    assert not list(folder.glob("training_state*"))  # never optimizer state in git


@needs_shipped
@pytest.mark.parametrize("entry", SHIPPED, ids=lambda e: e.name)
def test_velocity_ramp_gets_louder(entry):
    model = weights.load_model(entry.name)
    res = _ramp_module().ramp_levels(model)
    assert res["mel_range_db"] >= 10.0, res["rows"]  # velocity 120 ≥ 10 dB above velocity 20
    if entry.name == weights.DEFAULT_MODEL or model.config.frame.velocity == "gain":
        # the default model, and any whose velocity is a monotone gain, rise at every step
        assert res["mel_monotonic"] and res["audio_monotonic"], res["rows"]


def test_readme_first_command_renders_the_example_offline(tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    first = re.findall(r"```bash\n(.*?)\n```", text, re.S)[0]
    render = first.split("&&")[-1].strip()
    args = shlex.split(render)
    assert args[:2] == ["midisynth", "render"]
    if BUNDLED:
        assert "--model" not in args and "-m" not in args  # the bundled model, no flags
    else:  # no default yet: the README names a shipped preview (or tiny-random) explicitly
        named = args[args.index("--model") + 1]
        assert named in [e.name for e in SHIPPED] + ["tiny-random"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(weights.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.chdir(REPO)
    args = args[2:]
    out = tmp_path / "rendered"
    if "-o" in args:  # a folder: its output folder moves to tmp_path
        args[args.index("-o") + 1] = str(out)
    else:
        args = [a if not a.endswith(".wav") else str(out / "o.wav") for a in args]
    r = CliRunner().invoke(app, ["render", *args])
    assert r.exit_code == 0, r.output
    import soundfile as sf

    wavs = sorted(out.rglob("*.wav"))
    assert wavs, r.output
    for wav in wavs:
        wave, sr = sf.read(wav)
        assert sr == 16000 and np.abs(wave).max() > 1e-3
        level = 20 * np.log10(np.sqrt(np.mean(wave**2)))
        assert level > -30, (wav, level)  # --normalize loudness (-16 LUFS) is the default


@needs_bundled
def test_bundled_model_renders_each_style_and_sets_level_by_its_prior():
    # Issue 19: the default model has a style code per training SoundFont (FluidR3_GM first) and
    # renders with the prior setting each frame's level ("level": "prior") plus a texture dither.
    from midisynth.render import RenderOptions, render, with_model_defaults

    model = weights.load_model(weights.DEFAULT_MODEL)
    assert model.config.frame.styles == ["FluidR3_GM", "MuseScore_General_Full"]
    opts = with_model_defaults(RenderOptions(), model)
    assert (opts.level, opts.texture) == ("prior", 0.3)
    song = REPO / "examples" / "piano_pedal.mid"
    fluid, muse = (
        render(model, song, RenderOptions(style=s, tail=0.0)).mel for s in (None, "musescore")
    )
    assert fluid.shape == muse.shape and np.isfinite(fluid).all()
    assert np.abs(fluid - muse).mean() > 0.05  # a different timbre, not the same mel
