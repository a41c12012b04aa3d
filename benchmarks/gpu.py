"""Rendering speed on one NVIDIA GPU (H100/H200): single-file realtime factor, batched throughput.

    python benchmarks/gpu.py                       # GPU machine: ~7 min → $OUT/gpu_results.json
    python benchmarks/gpu.py --profile             # + the GPU-busy share of one render, eager
                                                   #   and with CUDA graphs (torch.profiler)
    python benchmarks/gpu.py --smoke --threads 1   # anywhere (a CPU is fine): a few seconds

Without a CUDA device (and without --smoke) it stops at once with one line.

Measures, for the base-size model (random weights in the released layout, 410 M parameters: speed
does not depend on the values), every bundled model under weights/ and, with --official PATH, a
local copy of the official weights — each at the settings it supports (``render.check_options``;
a setting it cannot use is listed as such, never a crash):
1. single file: a --single-seconds song (default 60 s) rendered by `render()`:
   - defaults: the model's own sampling (config.json; else dpmpp-2m 20 steps), bf16 on CUDA;
   - defaults + graphs: the same with ``RenderOptions.cuda_graphs`` (each step a CUDA graph);
   - reference: fp32, DDPM 100 steps (released architecture), or a frame model's own sampling
     in fp32 (its sampling starts part-way from a prior, which DDPM cannot);
   one warm-up render of a short song first (CUDA context, kernels, graph captures); realtime
   factor = render time / audio length; peak GPU memory (torch.cuda.max_memory_allocated);
2. batched folder: --files songs of --file-seconds each rendered to WAV files by `render_files`
   (the CLI's streaming writer) for each --batch-sizes N (0 = automatic: from free GPU memory),
   eager and with CUDA graphs; throughput = seconds of audio written per second of wall time;
3. --profile: one render of the single song (defaults, eager then graphs) under torch.profiler:
   GPU-busy share = union of the CUDA kernels' time spans / wall time, the number of kernels,
   and the CPU ops that ran with no CUDA time among the 10 costliest (e.g. an inverter left on
   the CPU would show as aten::polar / aten::angle).
The inverter is each model's own (Griffin-Lim or vocoder-s, on the model's device). A time budget
(--budget-s, default 300 s after set-up) skips what would not fit and says so. Results are
printed as tables and written as JSON to $OUT/gpu_results.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
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
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    return info


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed(device, fn, *args):
    """(fn(*args), seconds), the device synchronised around it and its peak memory counter reset."""
    peak_reset(device)
    sync(device)
    t = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - t


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _device_time(e) -> float:
    return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0) or 0


def gpu_busy(events, wall_s: float) -> dict:
    """From torch.profiler events: the union of the CUDA kernels' spans / ``wall_s``, the number
    of kernels, and the costliest CPU ops that had no CUDA time (work left on the CPU)."""
    from torch.autograd import DeviceType

    spans, cpu_only = [], {}
    for e in events:
        if e.device_type == DeviceType.CUDA:
            spans.append((e.time_range.start, e.time_range.end))
        elif e.name.startswith("aten::") and _device_time(e) == 0:
            cpu_only[e.name] = cpu_only.get(e.name, 0.0) + e.self_cpu_time_total
    busy, end = 0.0, float("-inf")
    for a, b in sorted(spans):  # union of intervals (µs)
        if b > end:
            busy += b - max(a, end)
            end = b
    top = sorted(cpu_only.items(), key=lambda kv: -kv[1])[:10]
    return {
        "gpu_busy_s": busy / 1e6,
        "gpu_busy_share": busy / 1e6 / wall_s if spans else None,
        "gpu_ops": len(spans),  # kernels, copies and memsets
        "cpu_only_ops_ms": {k: round(v / 1e3, 1) for k, v in top},
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Without a CUDA device, only --smoke runs (tiny sizes, to test the script).",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny model and songs; runs on a CPU")
    ap.add_argument("--official", type=Path, help="a local official-weights folder to include")
    ap.add_argument("--single-seconds", type=float, default=60.0)
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--file-seconds", type=float, default=30.0)
    ap.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 8, 32, 0],
        help="folder batch sizes; 0 = automatic (render.resolve_batch_size)",
    )
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph rows")
    ap.add_argument("--profile", action="store_true", help="GPU-busy share (torch.profiler)")
    ap.add_argument("--models", nargs="+", help="only these (e.g. random-base frame-s)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="measurement time budget")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--out", type=Path, default=None, help="default: $OUT/gpu_results.json")
    args = ap.parse_args()

    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        sys.exit(
            "error: no CUDA device: this benchmark is for a GPU machine (--smoke tests it on a CPU)"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    from midisynth import weights
    from midisynth.batch import FileTask, render_files
    from midisynth.model import ModelConfig, SpectrogramDiffusion
    from midisynth.render import (
        RenderOptions,
        check_options,
        render,
        resolve_batch_size,
        resolve_dtype,
        with_model_defaults,
    )

    if args.smoke:
        args.single_seconds, args.files, args.file_seconds = 1.0, 2, 1.0
        args.batch_sizes = [0]
        size = "tiny"
    else:
        size = "base"
    # CUDA graphs are ignored off CUDA (eager steps): the smoke test on a CPU skips their rows
    graph_modes = [False] if args.no_graphs or device.type != "cuda" else [False, True]
    out_path = args.out or Path(os.environ.get("OUT", ".")) / "gpu_results.json"
    results: dict = {
        "env": env_info(device),
        "smoke": args.smoke,
        "single": [],
        "batched": [],
        "profile": [],
    }
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
        if args.models:
            models = {k: v for k, v in models.items() if k in args.models}
        # 2 segments (first and later shapes, as the graphs see them); 1 for the smoke test
        warm = write_song(tmp / "warm.mid", 1.0 if args.smoke else 6.0)
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

        def settings_for(model) -> dict:
            """name → options: the model's own sampling, with graphs, and its reference."""
            own = with_model_defaults(RenderOptions(), model)
            ref = (
                own if model.config.frame is not None else RenderOptions(sampler="ddpm", steps=100)
            )
            out = {"defaults": own}
            if True in graph_modes:
                out["defaults+graphs"] = dataclasses.replace(own, cuda_graphs=True)
            out["reference"] = ref
            return out

        for mname, path in models.items():
            loaded: dict = {}  # dtype name → the model on the device

            def load(dtype_name: str, path=path, loaded=loaded):
                if dtype_name not in loaded:
                    loaded.clear()  # one copy on the device at a time
                    dtype = resolve_dtype(dtype_name, device)
                    loaded[dtype_name] = weights.load_model(path, device=device, dtype=dtype)
                return loaded[dtype_name]

            for sname, opts in settings_for(load("auto")).items():
                model = load("float32" if sname == "reference" else "auto")
                opts = with_model_defaults(opts, model)
                row = {"model": mname, "settings": sname, "sampler": opts.sampler}
                row["steps"] = opts.n_steps()
                try:
                    check_options(opts, model)  # e.g. ddpm on a frame model: listed, not run
                except ValueError as e:
                    results["single"].append({**row, "skipped": f"unsupported: {e}"})
                    continue
                if over_budget():
                    results["single"].append({**row, "skipped": "time budget"})
                    continue
                dtype = model.dtype
                render(model, warm, opts)  # warm-up (and graph captures)
                out, secs = timed(device, render, model, single, opts)
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
                if args.profile and sname.startswith("defaults") and not over_budget():
                    from torch.profiler import ProfilerActivity, profile

                    acts = [ProfilerActivity.CPU]
                    if device.type == "cuda":
                        acts.append(ProfilerActivity.CUDA)
                    with profile(activities=acts) as prof:
                        sync(device)
                        t = time.perf_counter()
                        render(model, single, opts)
                        sync(device)
                        wall = time.perf_counter() - t
                    prow = {"model": mname, "settings": sname, "wall_s": wall}
                    prow.update(gpu_busy(prof.events(), wall))
                    results["profile"].append(prow)
                    print(f"# profile {prow}", flush=True)
                    save()
            if over_budget():
                continue
            model = load("auto")
            for bs in args.batch_sizes:
                for graphs in graph_modes:
                    opts = RenderOptions(batch_size=bs or None, cuda_graphs=graphs)
                    row = {
                        "model": mname,
                        "batch_size": resolve_batch_size(opts, model),
                        "auto": bs == 0,
                        "graphs": graphs,
                        "files": len(tasks),
                    }
                    if over_budget():
                        results["batched"].append({**row, "skipped": "time budget"})
                        continue
                    shutil.rmtree(tmp / "wav", ignore_errors=True)
                    res, secs = timed(device, render_files, model, tasks, opts)
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
            loaded.clear()
        results["measure_s"] = time.perf_counter() - t0
        save()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_results(results)
    print(f"\nresults: {out_path}")


def print_results(results: dict) -> None:
    def f(v, spec=".2f"):
        return "—" if v is None else format(v, spec)

    print()
    print_table(
        ["model", "settings", "sampler", "dtype", "steps", "audio s", "render s", "RTF"]
        + ["x realtime", "GPU GiB"],
        [
            [r["model"], r["settings"], r["sampler"], r.get("dtype", "—"), str(r["steps"])]
            + (
                [r["skipped"]] + [""] * 4
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
        ["model", "batch", "graphs", "files", "audio s", "wall s", "audio s / s", "GPU GiB"]
        + ["failed"],
        [
            [
                r["model"],
                f"{r['batch_size']}{' (auto)' if r['auto'] else ''}",
                "yes" if r["graphs"] else "no",
                str(r["files"]),
            ]
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
    if results["profile"]:
        print()
        print_table(
            ["model", "settings", "wall s", "GPU busy s", "GPU busy", "GPU ops", "CPU-only ops"],
            [
                [
                    r["model"],
                    r["settings"],
                    f(r["wall_s"]),
                    f(r["gpu_busy_s"], ".3f"),
                    f(r["gpu_busy_share"] and 100 * r["gpu_busy_share"], ".1f") + " %",
                    str(r["gpu_ops"]),
                    ", ".join(list(r["cpu_only_ops_ms"])[:3]),
                ]
                for r in results["profile"]
            ],
        )


if __name__ == "__main__":
    main()
