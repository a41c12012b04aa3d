"""`midisynth invert`: a render's --mel-out back to its audio; bad inputs fail cleanly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from midisynth.cli import app

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--model", "tiny-random", "--steps", "2", "--device", "cpu"]


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_mel_out_inverts_to_the_render(tmp_path):
    wav, mel, back = tmp_path / "r.wav", tmp_path / "r.npy", tmp_path / "back.wav"
    r = run("render", EXAMPLES / "band.mid", wav, "--mel-out", mel, *FAST)
    assert r.exit_code == 0, r.output
    r = run("invert", mel, back, "--inverter", "griffin-lim")  # tiny-random's inverter
    assert r.exit_code == 0, r.output
    a, _ = sf.read(wav, dtype="float64")
    b, _ = sf.read(back, dtype="float64")
    assert len(a) == len(b)
    # Identical segments, so identical audio up to the last one, which the render inverted at its
    # full 256 frames and the .npy holds trimmed to the song (different Griffin-Lim context). The
    # render was turned down to avoid clipping; compare shapes, not levels.
    last = (len(a) // (256 * 320)) * 256 * 320 - 4 * 320  # before the last seam's crossfade
    ratio = np.abs(a[:last]).max() / np.abs(b[:last]).max()
    assert np.abs(a[:last] - ratio * b[:last]).max() < 2e-4


def test_the_default_models_mel_out_inverts_to_its_render_by_default(tmp_path, monkeypatch):
    # Issue 21: invert defaulted to Griffin-Lim, render to vocoder-s (correlation 0.76).
    monkeypatch.delenv("MIDISYNTH_MODEL", raising=False)
    wav, mel, back = tmp_path / "r.wav", tmp_path / "r.npy", tmp_path / "back.wav"
    r = run("render", EXAMPLES / "melody_chords.mid", wav, "--mel-out", mel, "-q")
    assert r.exit_code == 0, r.output
    r = run("invert", mel, back, "--quiet")
    assert r.exit_code == 0 and r.output == "", r.output  # --quiet: errors only
    a, _ = sf.read(wav, dtype="float64")
    b, _ = sf.read(back, dtype="float64")
    last = (len(a) // (256 * 320)) * 256 * 320 - 4 * 320  # before the last seam's crossfade
    assert len(a) == len(b) and np.abs(a[:last] - b[:last]).max() < 1e-4
    assert np.corrcoef(a, b)[0, 1] > 0.999


def test_invert_help_names_its_inverters():
    text = " ".join(run("invert", "--help").output.split())
    for name in ("auto", "griffin-lim", "vocoder-s", "soundstream-onnx"):
        assert name in text
    assert "[default: auto]" in text


def test_invert_makes_a_missing_folder_and_says_so(tmp_path):
    # It died with a traceback from libsndfile.
    src, out = tmp_path / "m.npy", tmp_path / "new" / "deeper" / "o.wav"
    np.save(src, np.full((30, 128), -5.0, np.float32))
    r = run("invert", src, out)
    assert r.exit_code == 0, r.output
    assert f"created folder {out.parent}" in " ".join(r.output.split()) and out.is_file()


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda p: np.save(p, np.zeros((10, 64), np.float32)), "shape (10, 64)"),
        (lambda p: np.save(p, np.zeros((10, 128), np.int32)), "dtype int32"),
        (lambda p: np.save(p, np.full((10, 128), np.nan, np.float32)), "NaN"),
        (lambda p: p.write_bytes(b"not numpy"), "not a NumPy .npy file"),
        (lambda p: np.savez(p.open("wb"), a=np.zeros((10, 128))), ".npz archive"),
        (lambda p: None, "mel file not found"),
    ],
)
def test_bad_mel_files(tmp_path, content, message):
    src = tmp_path / "m.npy"
    content(src)
    out = tmp_path / "o.wav"
    r = run("invert", src, out)
    assert r.exit_code == 1, r.output
    assert message in r.output and len([ln for ln in r.output.splitlines() if ln.strip()]) == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == (
        ["m.npy"] if src.exists() else []
    )


def test_invert_refuses_to_overwrite(tmp_path):
    src, out = tmp_path / "m.npy", tmp_path / "o.wav"
    np.save(src, np.full((30, 128), -5.0, np.float32))
    out.write_bytes(b"keep")
    assert run("invert", src, out).exit_code == 2 and out.read_bytes() == b"keep"
    r = run("invert", src, out, "--overwrite", "-r", "44100", "--normalize", "peak")
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert info.samplerate == 44100 and abs(info.frames - 30 * 320 * 44100 / 16000) <= 2
