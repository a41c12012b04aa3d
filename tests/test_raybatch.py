"""`midisynth render FOLDER -o OUT --ray` on a real local Ray instance (no mocks of Ray).

Ray binds every interface and probes a public DNS address unless kept in a box, so each run here
happens inside a network namespace of its own with only loopback up (``unshare -n``, then ``ip
link set lo up``); the tests skip where namespaces or Ray are unavailable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_midi

pytest.importorskip("ray")


def _netns_ok() -> bool:
    if not (shutil.which("unshare") and shutil.which("ip")):
        return False
    probe = subprocess.run(
        ["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30
    )
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _netns_ok(), reason="needs `unshare -n` (root) to keep Ray on loopback"
)

FAST = ["-m", "tiny-random", "--steps", "2", "--tail", "0.2", "--batch-size", "1", "-q"]


def _midisynth(args: list[str], env: dict | None = None, netns: bool = False):
    cmd = [sys.executable, "-m", "midisynth", *args]
    if netns:
        line = " ".join(f"'{c}'" for c in cmd)
        cmd = ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {line}"]
    env = {**os.environ, "COLUMNS": "400", **(env or {})}  # long paths: no wrapped lines
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    src = tmp_path / "midi"
    (src / "sub").mkdir(parents=True)
    make_midi(src / "a.mid", [(0.0, 0.5, 60), (0.5, 1.0, 64)])
    make_midi(src / "sub" / "b.mid", [(0.0, 1.5, 48)], program=40)
    make_midi(src / "crash.mid", [(0.0, 1.0, 67), (0.2, 0.8, 72)])  # its first worker dies
    (src / "broken.mid").write_bytes(b"MThd garbage")
    (src / "sub" / "empty.mid").write_bytes(b"")
    return src


def test_ray_matches_local_reports_bad_files_and_survives_a_killed_worker(corpus, tmp_path):
    local = _midisynth(["render", str(corpus), "-o", str(tmp_path / "local"), *FAST])
    assert local.returncode == 1  # the two bad files
    out = tmp_path / "ray"
    res = _midisynth(
        ["render", str(corpus), "-o", str(out), "--ray", "--workers", "2", *FAST],
        env={"MIDISYNTH_RAY_FAULT": "crash.mid"},
        netns=True,
    )
    assert res.returncode == 1, res.stderr[-3000:]
    said = res.stderr.replace("\n", "")
    assert "broken.mid" in said and "empty.mid" in said
    assert said.count("broken.mid") == 1  # named once, as given (workers report absolute paths)
    good = ["a.wav", "sub/b.wav", "crash.wav"]
    for name in good:  # byte-identical to the local run, whichever worker rendered it
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == sorted([*good, "manifest.jsonl"])  # no partial file or temporary left
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    by_name = {Path(x["input"]).name: x for x in lines}
    assert len(lines) == 5 and set(by_name) == {
        "a.mid",
        "b.mid",
        "crash.mid",
        "broken.mid",
        "empty.mid",
    }
    assert by_name["crash.mid"]["status"] == "ok" and by_name["crash.mid"]["attempts"] == 2
    assert by_name["broken.mid"]["status"] == "failed" and by_name["broken.mid"]["attempts"] == 1
    assert by_name["broken.mid"]["error"]
    assert by_name["a.mid"]["seconds"] > 0 and by_name["a.mid"]["model"] == "tiny-random"
    assert len(by_name["a.mid"]["model_sha256"]) == 64 and by_name["a.mid"]["seed"] == 0

    # Restarted with --skip-existing: only the missing file is rendered; the manifest grows.
    (out / "a.wav").unlink()
    again = _midisynth(
        [
            "render",
            str(corpus),
            "-o",
            str(out),
            "--ray",
            "--workers",
            "1",
            "--skip-existing",
            *FAST,
        ],
        netns=True,
    )
    assert again.returncode == 1, again.stderr[-3000:]
    assert (out / "a.wav").read_bytes() == (tmp_path / "local" / "a.wav").read_bytes()
    more = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()][5:]
    status = sorted((Path(x["input"]).name, x["status"]) for x in more)
    assert status == [
        ("a.mid", "ok"),
        ("b.mid", "skipped"),
        ("broken.mid", "failed"),
        ("crash.mid", "skipped"),
        ("empty.mid", "failed"),
    ]


def test_ray_flags_are_checked_before_any_work(tmp_path):
    src = tmp_path / "m.mid"
    make_midi(src, [(0.0, 0.5, 60)])
    res = _midisynth(["render", str(src), "--workers", "2", *FAST])
    assert res.returncode == 2 and "--workers needs --ray" in res.stderr
    res = _midisynth(["render", str(src), "--ray", "--stems", *FAST])
    assert res.returncode == 2 and "--stems and --plot run locally" in res.stderr
    assert not (tmp_path / "m.wav").exists()
