"""Corpus rendering throughput: a local run vs `--ray` with 1 and 2 workers, on the same folder.

    python benchmarks/ray_render.py [--files 8] [--seconds 20] [--model frame-s]

Writes ``--files`` songs of ``--seconds`` each (_common.write_song, varied tempo so the files
differ), then times three whole `midisynth render FOLDER -o OUT -q` processes (interpreter start,
model load, Ray start-up and shutdown included — what a user waits for):
- local: one process, ``--threads 1``;
- ray ×1: ``--ray --workers 1`` (one actor, 1 thread) — its difference to local is the overhead
  of ``--ray``;
- ray ×2: ``--ray --workers 2`` (two actors, 1 thread each).
All three use ``--batch-size`` (default 1): files are dealt out in groups of that many, so a
group per file lets both workers share 8 files (the CLI's default of 8 would make one group).
Reported: wall seconds, files/s, audio-seconds/s (RTF⁻¹), and whether the outputs are
byte-identical to the local run's. Ray runs inside a network namespace with only loopback
(``unshare -n``, as root): the script re-runs itself there when it is not already.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, write_song  # noqa: E402

INNER = "MIDISYNTH_BENCH_IN_NETNS"


def _render(src: Path, out: Path, model: str, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "midisynth", "render", str(src), "-o", str(out), "-m", model]
    t0 = time.perf_counter()
    res = subprocess.run([*cmd, "-q", *extra], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"render failed ({' '.join(extra)}):\n{res.stderr[-2000:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--model", default="frame-s")
    ap.add_argument(
        "--batch-size", type=int, default=1, help="files per group (1: every file its own task)"
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if os.environ.get(INNER) != "1":
        if os.geteuid() != 0 or not shutil.which("unshare"):
            raise SystemExit("needs root and unshare: Ray must run in a loopback-only namespace")
        line = " ".join(f"'{a}'" for a in [sys.executable, *sys.argv])
        env = {**os.environ, INNER: "1"}
        env.pop("RAY_ADDRESS", None)
        return subprocess.call(
            ["unshare", "-n", "sh", "-c", f"ip link set lo up && {line}"], env=env
        )

    tmp = Path(tempfile.mkdtemp(prefix="midisynth-ray-bench-"))
    try:
        src = tmp / "midi"
        src.mkdir()
        for i in range(args.files):
            write_song(src / f"song{i:03d}.mid", args.seconds, bpm=100.0 + 5 * i, drums=i % 2 == 0)
        audio_s = args.files * (args.seconds + 1.0)  # + the 1 s tail
        runs = [
            ("local, 1 thread", "local", ["--threads", "1"]),
            ("--ray, 1 worker", "ray1", ["--ray", "--workers", "1", "--threads", "1"]),
            ("--ray, 2 workers", "ray2", ["--ray", "--workers", "2", "--threads", "1"]),
        ]
        rows, walls = [], {}
        for label, key, extra in runs:
            extra = [*extra, "--batch-size", str(args.batch_size)]
            walls[key] = wall = _render(src, tmp / key, args.model, extra)
            same = all(
                (tmp / key / p.name).read_bytes() == (tmp / "local" / p.name).read_bytes()
                for p in sorted((tmp / "local").glob("*.wav"))
            )
            rows.append(
                {
                    "run": label,
                    "wall s": round(wall, 1),
                    "files/s": round(args.files / wall, 3),
                    "audio s/s": round(audio_s / wall, 2),
                    "vs local": f"{wall / walls['local']:.2f}×",
                    "same bytes": "yes" if same else "NO",
                }
            )
        print(machine())
        print(
            f"{args.files} files × {args.seconds + 1:.0f} s audio, model {args.model}, "
            f"--batch-size {args.batch_size}"
        )
        print_table(list(rows[0]), [[str(v) for v in r.values()] for r in rows])
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
