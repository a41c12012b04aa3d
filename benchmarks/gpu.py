"""Rendering speed on one NVIDIA GPU (H100/H200): single-file realtime factor, batched throughput.

    python benchmarks/gpu.py                # on the GPU machine: ~8 min, → $OUT/gpu_results.json
    python benchmarks/gpu.py --smoke --threads 1   # anywhere (CPU is fine): tiny sizes, ~1 min

Measures, for the base-size model (random weights in the released layout, 410 M parameters: speed
does not depend on the values), every bundled model under weights/ and, with --official PATH, a
local copy of the official weights:
1. single file: a --single-seconds song (default 60 s) rendered by `render()` at the defaults
   (dpmpp-2m 20 steps, bf16 on CUDA) and at the reference settings (fp32, ddpm 100 steps); one
   warm-up render of a 1-segment song first (CUDA context, kernels); realtime factor = render
   time / audio length, plus peak GPU memory (torch.cuda.max_memory_allocated);
2. batched folder: --files songs of --file-seconds each rendered to WAV files by `render_files`
   (the CLI's streaming writer) with RenderOptions(batch_size=N) for each --batch-sizes N;
   throughput = seconds of audio written per second of wall time.
The inverter is each model's own (Griffin-Lim on the GPU for the random model). A time budget
(--budget-s, default 400 s after set-up) skips what would not fit and says so. Results are
printed as tables and written as JSON to $OUT/gpu_results.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_song  # noqa: E402


def env_info(device) -> dict:
    import torch

    info = {
        "torch": torch.__version__,
        "device": str(device),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(
            gpu=p.name,
            gpu_memory_gib=round(p.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and songs; runs on a CPU")
    ap.add_argument("--official", type=Path, help="a local official-weights folder to include")
    ap.add_argument("--single-seconds", type=float, default=60.0)
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--file-seconds", type=float, default=30.0)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--budget-s", type=float, default=400.0, help="measurement time budget")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT/gpu_results.json")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from midisynth import weights
    from midisynth.batch import FileTask, render_files
    from midisynth.model import ModelConfig, SpectrogramDiffusion
    from midisynth.render import RenderOptions, render, resolve_dtype

    if args.smoke:
        args.single_seconds, args.files, args.file_seconds = 6.0, 3, 4.0
        args.batch_sizes = [1, 3]
        size = "tiny"
    else:
        size = "base"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit("no CUDA device: this benchmark is for a GPU machine (use --smoke to test it)")
    out_path = args.out or Path(os.environ.get("OUT", ".")) / "gpu_results.json"
    results: dict = {"env": env_info(device), "smoke": args.smoke, "single": [], "batched": []}
    tmp = Path(tempfile.mkdtemp(prefix="midisynth-gpu-"))

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2) + "\n")

    try:
        t_setup = time.perf_counter()
        torch.manual_seed(0)
        folder = weights.save_model(
            SpectrogramDiffusion(ModelConfig.named(size)), tmp / f"random-{size}", name="random"
        )
        models = {f"random-{size}": folder}
        models.update({e.name: e.local_dir for e in weights.REGISTRY.values() if e.local_dir})
        if args.official:
            models["official"] = args.official
        warm = write_song(tmp / "warm.mid", 3.0)
        single = write_song(tmp / "single.mid", args.single_seconds)
        (tmp / "folder").mkdir()
        tasks = [
            FileTask(
                write_song(tmp / "folder" / f"song{i:03d}.mid", args.file_seconds),
                tmp / "wav" / f"song{i:03d}.wav",
            )
            for i in range(args.files)
        ]
        results["setup_s"] = time.perf_counter() - t_setup
        print(f"# {results['env']}  (set-up {results['setup_s']:.0f} s)", flush=True)
        t0 = time.perf_counter()

        def over_budget() -> bool:
            return time.perf_counter() - t0 > args.budget_s

        settings = {
            "defaults": (RenderOptions(), "auto"),
            "reference": (RenderOptions(sampler="ddpm", steps=100), "float32"),
        }
        for mname, path in models.items():
            for sname, (opts, dtype_name) in settings.items():
                row = {"model": mname, "settings": sname, "steps": opts.n_steps()}
                if over_budget():
                    results["single"].append({**row, "skipped": "time budget"})
                    continue
                dtype = resolve_dtype(dtype_name, device)
                model = weights.load_model(path, device=device, dtype=dtype)
                render(model, warm, opts)  # warm-up
                peak_reset(device)
                sync(device)
                t = time.perf_counter()
                out = render(model, single, opts)
                sync(device)
                secs = time.perf_counter() - t
                audio_s = len(out.audio) / out.sample_rate
                row.update(
                    dtype=str(dtype).removeprefix("torch."),
                    audio_s=audio_s,
                    render_s=secs,
                    rtf=secs / audio_s,
                    x_realtime=audio_s / secs,
                    peak_gpu_gib=peak_gib(device),
                )
                results["single"].append(row)
                print(f"# single {row}", flush=True)
                save()
                del model
            if over_budget():
                continue
            model = weights.load_model(path, device=device, dtype=resolve_dtype("auto", device))
            for bs in args.batch_sizes:
                row = {"model": mname, "batch_size": bs, "files": len(tasks)}
                if over_budget():
                    results["batched"].append({**row, "skipped": "time budget"})
                    continue
                shutil.rmtree(tmp / "wav", ignore_errors=True)
                peak_reset(device)
                sync(device)
                t = time.perf_counter()
                res = render_files(model, tasks, RenderOptions(batch_size=bs))
                sync(device)
                secs = time.perf_counter() - t
                audio_s = sum(r.seconds for r in res)
                row.update(
                    failed=sum(not r.ok for r in res),
                    audio_s=audio_s,
                    wall_s=secs,
                    audio_s_per_s=audio_s / secs,
                    peak_gpu_gib=peak_gib(device),
                )
                results["batched"].append(row)
                print(f"# batched {row}", flush=True)
                save()
            del model
        results["measure_s"] = time.perf_counter() - t0
        save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def f(v, spec=".2f"):
        return "—" if v is None else format(v, spec)

    print()
    print_table(
        [
            "model",
            "settings",
            "dtype",
            "steps",
            "audio s",
            "render s",
            "RTF",
            "x realtime",
            "GPU GiB",
        ],
        [
            [r["model"], r["settings"], r.get("dtype", "—"), str(r["steps"])]
            + (
                [r.get("skipped", "")] + [""] * 4
                if "skipped" in r
                else [
                    f(r["audio_s"], ".1f"),
                    f(r["render_s"]),
                    f(r["rtf"], ".3f"),
                    f(r["x_realtime"], ".1f"),
                    f(r["peak_gpu_gib"]),
                ]
            )
            for r in results["single"]
        ],
    )
    print()
    print_table(
        ["model", "batch", "files", "audio s", "wall s", "audio s / s", "GPU GiB", "failed"],
        [
            [r["model"], str(r["batch_size"]), str(r["files"])]
            + (
                [r["skipped"]] + [""] * 4
                if "skipped" in r
                else [
                    f(r["audio_s"], ".0f"),
                    f(r["wall_s"], ".1f"),
                    f(r["audio_s_per_s"], ".1f"),
                    f(r["peak_gpu_gib"]),
                    str(r["failed"]),
                ]
            )
            for r in results["batched"]
        ],
    )
    print(f"\nresults: {out_path}")


if __name__ == "__main__":
    main()
