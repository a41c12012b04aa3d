"""Peak memory of rendering a 1-minute vs a 60-minute MIDI file: flat in song length.

    python benchmarks/memory.py --threads 1

Both songs are written with mido (piano, bass and drums, a 4-bar pattern repeated) and rendered
with `tiny-random` (so that an hour of audio finishes on a CPU: the model's size adds a constant to
the peak, not a slope) through `render_files`, the CLI's streaming file writer: each 5.12 s
segment goes through the streaming inverter straight into the output file. Each run is its own
process; its peak RSS is measured by a small launcher (_common.py). "load only" is a process that imports midisynth and
loads the model without rendering: the fixed part of the peak. With --in-memory the two songs are
also rendered with `render()`, which keeps the whole song's audio and mel in memory (what the
streaming writer avoids): 60 min is 230 MB of float32 audio + 92 MB of mel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, report_result, run_child, write_song  # noqa: E402


def child(a: dict) -> dict:
    import torch

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    from midisynth.batch import FileTask, render_files
    from midisynth.render import RenderOptions, render
    from midisynth.weights import load_model

    model = load_model(a["model"])
    opts = RenderOptions(steps=a["steps"])
    t0 = time.perf_counter()
    if a["mode"] == "load":
        return {"render_s": 0.0, "audio_s": 0.0, "output_mb": 0.0}
    if a["mode"] == "memory":
        out = render(model, a["midi"], opts)
        return {
            "render_s": time.perf_counter() - t0,
            "audio_s": len(out.audio) / out.sample_rate,
            "output_mb": 0.0,
        }
    dst = Path(a["dst"])
    (res,) = render_files(model, [FileTask(Path(a["midi"]), dst)], opts)
    if not res.ok:
        raise RuntimeError(res.error)
    return {
        "render_s": time.perf_counter() - t0,
        "audio_s": res.seconds,
        "output_mb": dst.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--model", default="tiny-random")
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: sampler's)")
    ap.add_argument("--in-memory", action="store_true", help="also measure render() in memory")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        report_result(child(json.loads(args.child)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="midisynth-mem-"))
    try:
        print(f"# {machine(args.threads or None)}", flush=True)
        runs = [("load only", "load", None)]
        for m in args.minutes:
            midi = write_song(tmp / f"song_{m:g}min.mid", m * 60)
            runs.append(("render_files → .wav (streaming)", "file", midi))
            if args.in_memory:
                runs.append(("render() in memory", "memory", midi))
        rows, records = [], []
        base = None
        for label, mode, midi in runs:
            song = "—" if midi is None else midi.stem.removeprefix("song_")
            print(f"# {label}, {song} …", flush=True)
            a = dict(
                model=args.model,
                steps=args.steps,
                threads=args.threads,
                mode=mode,
                midi=str(midi),
                dst=str(tmp / "out.wav"),
            )
            r = run_child([sys.executable, __file__, "--child", json.dumps(a)])
            if r.returncode or not r.result:
                rows.append([label, song, f"failed: {r.log_tail.splitlines()[-1:]}", "", "", ""])
                continue
            res = r.result
            base = r.peak_rss_mb if mode == "load" else base
            delta = "" if base is None or mode == "load" else f"{r.peak_rss_mb - base:+.0f}"
            rows.append(
                [
                    label,
                    song,
                    f"{res['audio_s']:.0f}",
                    f"{res['render_s']:.1f}",
                    f"{res['output_mb']:.1f}" if mode == "file" else "—",
                    f"{r.peak_rss_mb:.0f}",
                    delta,
                ]
            )
            records.append({"run": label, "song": song, **res, "peak_rss_mb": r.peak_rss_mb})
            (tmp / "out.wav").unlink(missing_ok=True)
        print()
        print(f"# {machine(args.threads or None)}; model {args.model}")
        print_table(
            ["run", "song", "audio s", "render s", "file MiB", "peak RSS MiB", "vs load only"],
            rows,
        )
        if args.json:
            args.json.write_text(json.dumps(records, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
