"""examples/: the Python API script runs offline, and fails in one line (issue 21 item 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import soundfile as sf

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "render_example.py"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "MIDISYNTH_MODEL"}
    env = {**base, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_the_example_renders_offline_with_the_default_model(tmp_path):
    r = _run(tmp_path, MIDISYNTH_CACHE=str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "wrote melody_chords_cello.wav"
    info = sf.info(tmp_path / "melody_chords_cello.wav")
    assert info.samplerate == 16000 and info.duration > 5


def test_the_example_fails_in_one_line(tmp_path):
    r = _run(tmp_path, MIDISYNTH_MODEL="no-such-model", MIDISYNTH_CACHE=str(tmp_path / "cache"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("error: unknown model 'no-such-model'; available: ")
    assert not (tmp_path / "melody_chords_cello.wav").exists()
