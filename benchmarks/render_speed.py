"""Realtime factor and peak RSS of rendering a MIDI file on the CPU, side by side.

    python benchmarks/render_speed.py --threads 1

Configurations, each in its own process, whose peak RSS is measured by a small launcher (see
_common.py: Linux carries a parent's high-water mark into its children, so no plain wait4):
- fluidsynth: the FluidSynth CLI with FluidR3_GM (or $MIDISYNTH_SOUNDFONT), 16 kHz; its time is
  the whole process (it loads the 142 MB SoundFont every run);
- midisynth defaults: `load_model(folder, dtype=auto)` + `render()` with the default
  RenderOptions (dpmpp-2m, 20 steps; bf16 where the CPU is fast at it), base-size model, with
  each `--inverter` (default `auto`: the trained vocoder-s, as the official model without its
  ONNX file uses since vocoder-s shipped; `griffin-lim` was its inverter before);
- midisynth reference: fp32, ddpm 100 steps (the diffusers pipeline's settings), base size;
- diffusers: `SpectrogramDiffusionPipeline` at its defaults (100 DDPM steps, fp32, batch 1) on
  the same weights, `output_type="mel"` with melgan=None: **no inversion** for it (midisynth's
  figures include Griffin-Lim, the random model's inverter), tokens made by midisynth;
- the bundled model (weights/<name>) at defaults, when there is one.
The base-size model has random weights in the released layout (410 M parameters, saved once with
`midisynth.weights.save_model`): speed does not depend on the values. A base-size segment at 100
steps takes minutes on a CPU, so every configuration renders a 1-segment song (4 s of music + the
1 s tail = 5.0 s); the fast ones also render a --long song (default 30 s). "render s" is the
`render()` call alone, once per process as the CLI does (first-call warm-up included); "load s"
the model load; "process s" everything, interpreter start-up included. RTF = render s / audio s
(below 1 = faster than realtime). "load" is the 1-minute load average when the configuration
started (other processes on a shared machine).

Threads: every process gets --threads torch threads (FluidSynth is single-threaded). On a shared
machine use the same small number for all; 0 = torch's default.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table, report_result, run_child, write_song  # noqa: E402

SOUNDFONT = Path(os.environ.get("MIDISYNTH_SOUNDFONT", "/usr/share/sounds/sf2/FluidR3_GM.sf2"))


# --------------------------------------------------------------------------------------------
# Children


def child_midisynth(a: dict) -> dict:
    import torch

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    from midisynth.render import RenderOptions, render, resolve_dtype, with_model_defaults
    from midisynth.weights import load_model

    t0 = time.perf_counter()
    dtype = resolve_dtype(a["dtype"], torch.device("cpu"))
    model = load_model(a["model"], device="cpu", dtype=dtype)
    t1 = time.perf_counter()
    opts = RenderOptions(sampler=a["sampler"], steps=a["steps"], inverter=a.get("inverter"))
    out = render(model, a["midi"], opts)
    t2 = time.perf_counter()
    return {
        "load_s": t1 - t0,
        "render_s": t2 - t1,
        "audio_s": len(out.audio) / out.sample_rate,
        "dtype": str(dtype).removeprefix("torch."),
        "steps": with_model_defaults(opts, model).n_steps(),
        "inverter": a.get("inverter") or model.inverter.get("type"),
    }


def child_diffusers(a: dict) -> dict:
    import numpy as np
    import torch

    if a["threads"]:
        torch.set_num_threads(a["threads"])
    from diffusers import DDPMScheduler
    from diffusers.models.transformers.t5_film_transformer import T5FilmDecoder
    from diffusers.pipelines.deprecated.spectrogram_diffusion import (
        SpectrogramContEncoder,
        SpectrogramDiffusionPipeline,
        SpectrogramNotesEncoder,
    )
    from diffusers.utils import logging
    from safetensors.torch import load_file

    from midisynth import audio, tokens
    from midisynth.midi import read_midi
    from midisynth.programs import PROGRAM_MAPS

    logging.set_verbosity_error()

    def ext_mask(self, attention_mask, input_shape=None, dtype=None):
        # transformers 4's get_extended_attention_mask, gone in 5, still called by diffusers
        dtype = self.dtype if dtype is None else dtype
        return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min

    for cls in (SpectrogramNotesEncoder, SpectrogramContEncoder):
        if not hasattr(cls, "get_extended_attention_mask"):
            cls.get_extended_attention_mask = ext_mask
    t0 = time.perf_counter()
    folder = Path(a["model"])
    c = json.loads((folder / "config.json").read_text())["model"]
    common = dict(d_model=c["d_model"], num_heads=c["num_heads"], d_kv=c["d_kv"], d_ff=c["d_ff"])
    enc = dict(common, num_layers=c["num_encoder_layers"], feed_forward_proj="gated-gelu")
    with torch.device("meta"):
        mods = {
            "notes_encoder": SpectrogramNotesEncoder(
                max_length=c["max_tokens"], vocab_size=c["vocab_size"], dropout_rate=0.1, **enc
            ),
            "continuous_encoder": SpectrogramContEncoder(
                input_dims=c["input_dims"],
                targets_context_length=c["context_length"],
                dropout_rate=0.1,
                **enc,
            ),
            "decoder": T5FilmDecoder(
                input_dims=c["input_dims"],
                targets_length=c["targets_length"],
                max_decoder_noise_time=c["max_decoder_noise_time"],
                num_layers=c["num_decoder_layers"],
                dropout_rate=0.1,
                **common,
            ),
        }
    state: dict = {}
    for f in sorted(folder.glob("model*.safetensors")):
        state.update(load_file(str(f)))
    for name, m in mods.items():
        sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
        m.load_state_dict(sub, strict=True, assign=True)
        m.eval()
    del state
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", variance_type="fixed_large"
    )
    pipe = SpectrogramDiffusionPipeline(**mods, scheduler=scheduler, melgan=None)
    pipe.set_progress_bar_config(disable=True)
    score = read_midi(a["midi"])
    segs = tokens.notes_to_segments(
        score.notes, score.total_time + 1.0, program_map=PROGRAM_MAPS["slakh"]
    )
    ids = [row.tolist() for row in tokens.pad_segments(segs)]
    t1 = time.perf_counter()
    with torch.inference_mode():
        mel = pipe(
            ids,
            generator=torch.Generator().manual_seed(0),
            num_inference_steps=a["steps"],
            output_type="mel",
        ).audios[0]
    t2 = time.perf_counter()
    assert np.isfinite(mel).all()
    return {
        "load_s": t1 - t0,
        "render_s": t2 - t1,
        "audio_s": mel.shape[0] / audio.FRAME_RATE,
        "dtype": "float32",
        "steps": a["steps"],
        "inverter": "none (mel only)",
    }


CHILDREN = {"midisynth": child_midisynth, "diffusers": child_diffusers}


# --------------------------------------------------------------------------------------------
# Parent


def make_base_model(dst: Path, size: str) -> Path:
    import torch

    from midisynth.model import ModelConfig, SpectrogramDiffusion
    from midisynth.weights import save_model

    torch.manual_seed(0)
    model = SpectrogramDiffusion(ModelConfig.named(size))
    return save_model(model, dst, name=f"random-{size}", description="random weights, benchmark")


def fluidsynth(midi: Path, wav: Path, threads: int) -> dict | str:
    exe = shutil.which("fluidsynth")
    if exe is None or not SOUNDFONT.is_file():
        return (
            "FluidSynth or the SoundFont is missing (apt-get install fluidsynth fluid-soundfont-gm)"
        )
    cmd = [exe, "-ni", "-q", "-r", "16000", "-g", "0.5", "-F", str(wav), str(SOUNDFONT), str(midi)]
    r = run_child(cmd)
    if r.returncode:
        return f"fluidsynth failed: {r.log_tail}"
    import soundfile as sf

    return {
        "load_s": None,
        "render_s": r.wall_s,
        "audio_s": sf.info(str(wav)).duration,
        "dtype": "—",
        "steps": None,
        "inverter": "—",
        "wall_s": r.wall_s,
        "peak_rss_mb": r.peak_rss_mb,
    }


def python_child(kind: str, args: dict, timeout: float) -> dict | str:
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(args)]
    r = run_child(cmd, timeout=timeout)
    if r.returncode or not r.result:
        return f"failed (exit {r.returncode}): {r.log_tail.splitlines()[-1] if r.log_tail else ''}"
    return {**r.result, "wall_s": r.wall_s, "peak_rss_mb": r.peak_rss_mb}


def _random_model_configs(folder: Path, size: str, songs: dict, inverters: list[str]) -> list:
    """The released design with random weights: defaults (per inverter), the reference sampler,
    diffusers."""
    defaults = [
        (
            f"midisynth defaults ({size}, {inverter})",
            "midisynth",
            dict(
                model=str(folder), dtype="auto", sampler="dpmpp-2m", steps=None, inverter=inverter
            ),
            list(songs),
        )
        for inverter in inverters
    ]
    return [
        *defaults,
        (
            f"midisynth reference ({size})",
            "midisynth",
            dict(model=str(folder), dtype="float32", sampler="ddpm", steps=100),
            ["5 s"],
        ),
        (
            f"diffusers pipeline ({size})",
            "diffusers",
            dict(model=str(folder), steps=100),
            ["5 s"],
        ),
    ]


def fmt(v, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: default)")
    ap.add_argument("--size", default="base", choices=["base", "small", "tiny"])
    ap.add_argument("--long", type=float, default=30.0, help="seconds of the long song (0: none)")
    ap.add_argument("--skip", nargs="*", default=[], help="configurations to leave out (by name)")
    ap.add_argument("--timeout", type=float, default=3600, help="per configuration, seconds")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        help="also time this model folder at its own defaults (repeatable)",
    )
    ap.add_argument(
        "--only-models",
        action="store_true",
        help="time only FluidSynth, the bundled models and --model folders (no random base model)",
    )
    ap.add_argument(
        "--inverter",
        action="append",
        default=[],
        help="inverter of the base-size defaults rows, one row each (repeatable; default: auto)",
    )
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        report_result(CHILDREN[args.child[0]](json.loads(args.child[1])))
        return

    from midisynth import weights

    tmp = Path(tempfile.mkdtemp(prefix="midisynth-bench-"))
    try:
        short = write_song(tmp / "short.mid", 4.0)
        songs = {"5 s": short}
        if args.long > 0:
            songs[f"{args.long:g} s"] = write_song(tmp / "long.mid", args.long)
        print(f"# {machine(args.threads or None)}", flush=True)
        t = args.threads
        configs: list[tuple[str, str, dict | None, list[str]]] = [
            ("fluidsynth", "fluidsynth", None, list(songs)),
        ]
        if not args.only_models:
            print(f"# building the {args.size}-size random model …", flush=True)
            folder = make_base_model(tmp / f"random-{args.size}", args.size)
            configs += _random_model_configs(folder, args.size, songs, args.inverter or ["auto"])
        own = [(e.name, str(e.local_dir)) for e in weights.REGISTRY.values() if e.local_dir]
        own += [(Path(m).name, m) for m in args.model]
        for name, path in own:
            configs.append(
                (
                    f"midisynth defaults ({name})",
                    "midisynth",
                    # sampler None: the model's own defaults (config.json "sampling")
                    dict(model=path, dtype="auto", sampler=None, steps=None),
                    list(songs),
                )
            )
        rows, records = [], []
        for name, kind, cargs, which in configs:
            if name in args.skip or kind in args.skip:
                continue
            for song in which:
                midi = songs[song]
                load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
                print(f"# {name} on the {song} song (load {load:.1f}) …", flush=True)
                if kind == "fluidsynth":
                    r = fluidsynth(midi, tmp / "fs.wav", t)
                else:
                    r = python_child(kind, dict(cargs, midi=str(midi), threads=t), args.timeout)
                if isinstance(r, str):
                    rows.append([name, song, r, "", "", "", "", "", "", "", "", ""])
                    continue
                rtf = r["render_s"] / r["audio_s"]
                steps = f"{r['steps']}" if r["steps"] else "—"
                rows.append(
                    [
                        name,
                        song,
                        r["dtype"],
                        steps,
                        str(r["inverter"]),
                        fmt(r["audio_s"]),
                        fmt(r["load_s"], ".1f"),
                        fmt(r["render_s"], ".1f"),
                        fmt(rtf, ".3f" if rtf < 1 else ".1f"),
                        fmt(r["wall_s"], ".1f"),
                        fmt(r["peak_rss_mb"], ".0f"),
                        f"{load:.1f}",
                    ]
                )
                records.append({"config": name, "song": song, **r, "rtf": rtf, "load": load})
        print()
        print(f"# {machine(args.threads or None)}")
        print_table(
            [
                "configuration",
                "song",
                "dtype",
                "steps",
                "inverter",
                "audio s",
                "load s",
                "render s",
                "RTF",
                "process s",
                "peak RSS MiB",
                "load",
            ],
            rows,
        )
        if args.json:
            args.json.write_text(json.dumps(records, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
