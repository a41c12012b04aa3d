"""The `midisynth` command line: a thin Typer layer over the library.

Everything heavy (torch, the model) is imported inside the commands so that `--help` is instant.
Expected failures (bad MIDI, missing model, bad flag values) print one line and exit non-zero;
tracebacks are for bugs only.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="midisynth",
    help="Render MIDI to audio with the spectrogram-diffusion neural synthesizer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)
stdout = out  # for commands whose own `out` parameter hides the console


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error and exit."""
    from rich.markup import escape

    # escape: messages quote pip commands such as `pip install 'midisynth[eval]'`, which rich
    # would otherwise read as markup and drop.
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input, not our bugs (imported lazily)."""
    from .inverter import InverterError
    from .midi import MidiError
    from .weights import ModelError

    return (MidiError, ModelError, InverterError, ValueError, OSError)


class Sampler(str, Enum):  # = diffusion.SAMPLERS (kept literal: --help must not import torch)
    ddpm = "ddpm"
    ddpm_cosine = "ddpm-cosine"
    ddim = "ddim"
    ddim_cosine = "ddim-cosine"
    dpmpp_2m = "dpmpp-2m"
    dpmpp_2m_cosine = "dpmpp-2m-cosine"


class Normalize(str, Enum):
    none = "none"
    peak = "peak"
    loudness = "loudness"


@app.command()
def inspect(
    file: Annotated[Path, typer.Argument(help="MIDI file to inspect.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON with the token ids of every segment.")
    ] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Tokenize for this model (default: the default model)."),
    ] = None,
    reference: Annotated[
        bool,
        typer.Option(
            help="Tokenize exactly as the reference (diffusers MidiProcessor): the released model's "
            "codec and mapping, tempo from track 0 only."
        ),
    ] = False,
) -> None:
    """Show what the model will see: tracks, programs (before → after mapping), segments, tokens."""
    from . import programs, tokens
    from .midi import MidiError, read_midi
    from .weights import RELEASED_SETTINGS, ModelError, model_settings

    try:
        settings = RELEASED_SETTINGS if reference else model_settings(model)
        # render obeys tempo events on every track; the reference only those of track 0
        score = read_midi(file, all_track_tempos=not reference)
        pmap = programs.get_program_map(settings["program_map"])
        codec = tokens.Codec.from_dict(settings["codec"])
    except (MidiError, ModelError, ValueError) as e:
        fail(str(e))
    segs = tokens.notes_to_segments(
        score.notes,
        score.total_time,
        codec=codec,
        program_map=pmap,
        reference_tail_ties=reference,  # the reference's stale tie section after the last event
    )
    if as_json:
        doc = {
            "file": str(file),
            "duration": score.total_time,
            "instruments": [
                {
                    "index": i.index,
                    "track": i.track,
                    "channel": i.channel,
                    "name": i.name,
                    "program": i.program,
                    "mapped_program": None if i.is_drum else pmap(i.program),
                    "is_drum": i.is_drum,
                    "notes": i.n_notes,
                }
                for i in score.instruments
            ],
            "segments": [[int(t) for t in s[:-1]] for s in segs],  # without EOS and padding
        }
        out.print_json(json.dumps(doc))
        return
    from rich.table import Table

    out.print(
        f"[bold]{file}[/]  format {score.format}, {score.total_time:.2f} s, "
        f"{len(score.notes)} notes, {len(segs)} segments of 5.12 s"
    )
    table = Table("#", "track", "ch", "name", "program", "→ model", "notes")
    for i in score.instruments:
        if i.is_drum:
            prog, mapped = "drums", "drums"
        else:
            prog = f"{i.program} {programs.program_name(i.program)}"
            mapped = f"{pmap(i.program)} {programs.program_name(pmap(i.program))}"
        table.add_row(
            str(i.index), str(i.track), str(i.channel + 1), i.name, prog, mapped, str(i.n_notes)
        )
    out.print(table)
    lens = [len(s) for s in segs]
    if lens:
        out.print(
            f"tokens per segment: min {min(lens)}, mean {sum(lens) / len(lens):.0f}, max {max(lens)}"
        )


@app.command()
def render(
    input: Annotated[Path, typer.Argument(help="A MIDI file, or a folder of them (recursive).")],
    output: Annotated[
        Path | None,
        typer.Argument(help="Output file (extension sets the format: .wav .flac .ogg) or folder."),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", "-o", help="Folder for outputs (mirrors input tree)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="wav, flac or ogg (when not set by OUT).")
    ] = "wav",
    program: Annotated[
        list[str] | None,
        typer.Option(
            "--program",
            "-p",
            help="Swap instruments: SRC=DST, GM names or numbers (piano=cello, 0=42). Repeatable.",
        ),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            help="Set one track's instrument: N=PROGRAM, N = the 'track' column of `midisynth "
            "inspect` (the MIDI file's track index, from 0). Repeatable.",
        ),
    ] = None,
    no_drums: Annotated[bool, typer.Option("--no-drums", help="Drop channel-10 drums.")] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (`midisynth models`) or folder.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32 or bfloat16.")] = "auto",
    sampler: Annotated[
        Sampler | None,
        typer.Option(
            help="ddpm = reference; dpmpp-2m/ddim = fast; -cosine = on the training schedule. "
            "Default: the model's own setting (config.json), else dpmpp-2m."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(
            min=1, max=1000, help="Denoising steps per segment (default: the model's or sampler's)."
        ),
    ] = None,
    guidance: Annotated[
        float, typer.Option(min=0.0, max=20.0, help="Classifier-free guidance weight (1 = off).")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed → same audio).")] = 0,
    tail: Annotated[
        float, typer.Option(min=0.0, max=30.0, help="Seconds kept after the last note.")
    ] = 1.0,
    inverter: Annotated[
        str | None, typer.Option(help="griffin-lim or soundstream-onnx (default: the model's).")
    ] = None,
    sample_rate: Annotated[
        int,
        typer.Option(
            "--sample-rate",
            "-r",
            min=8000,
            max=192000,
            help="Output sample rate (resampled from 16 kHz).",
        ),
    ] = 16000,
    normalize: Annotated[
        Normalize, typer.Option(help="none, peak (-1 dBFS) or loudness (-16 LUFS).")
    ] = Normalize.none,
    gain: Annotated[
        float, typer.Option(min=-60.0, max=60.0, help="Gain in dB, after normalisation.")
    ] = 0.0,
    mel_out: Annotated[
        Path | None,
        typer.Option(help="Also save the log-mel [frames, 128] to this .npy (single file only)."),
    ] = None,
    stems: Annotated[
        bool,
        typer.Option(
            help="Also write one file per instrument beside the output (OUT.track2-cello.wav, "
            "OUT.drums.wav…); the output is then their sum. Single file only."
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Also save a picture (PNG) of the rendered log-mel with the note onsets and the "
            "waveform envelope. Single file only; needs matplotlib."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=256, help="Files rendered together (GPU throughput).")
    ] = 8,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option(help="Skip inputs whose output exists.")] = False,
    use_ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Render on a Ray cluster (RAY_ADDRESS, else a local one): long-lived workers, "
            "dead workers' files re-run, OUT/manifest.jsonl. Needs midisynth[ray].",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Ray workers (default: the cluster's CPUs / --threads, or GPUs)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1, max=256, help="CPU threads for torch (per worker with --ray; 1 there)."
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summaries.")] = False,
) -> None:
    """Render MIDI to audio.

    \b
    midisynth render song.mid                      # → song.wav
    midisynth render song.mid out.flac -p piano=cello
    midisynth render midi_folder/ -o audio_folder/ --skip-existing
    """
    from rich.markup import escape

    from .programs import parse_program, parse_swap

    try:
        swaps = tuple(parse_swap(p) for p in program or [])
        tracks = tuple(_parse_track(t, parse_program) for t in track or [])
        if sampler is Sampler.ddpm and steps is not None and steps > 1000:
            raise ValueError("--steps must be at most 1000")
        if (stems or plot is not None) and not input.is_file():
            raise ValueError("--stems and --plot work on a single MIDI file, not a folder")
        if stems and (mel_out is not None or plot is not None):
            raise ValueError("--stems cannot be combined with --mel-out or --plot")
        if use_ray and (stems or plot is not None):
            raise ValueError("--ray renders files as they are; --stems and --plot run locally")
        if workers is not None and not use_ray:
            raise ValueError("--workers needs --ray")
        if use_ray:
            from .raybatch import import_ray

            import_ray()
        if plot is not None and plot.suffix.lower() != ".png":
            raise ValueError(f"--plot must name a .png file, got {plot}")
        if plot is not None:
            from .plot import check_available

            check_available()
    except (ValueError, ImportError) as e:
        fail(str(e), 2)
    if threads is not None and not use_ray:
        import torch

        torch.set_num_threads(threads)
    from . import batch
    from .raybatch import RayOptions
    from .render import RenderOptions, unused_changes, with_model_defaults
    from .weights import ModelError, default_model_name, load_model, resolve_device

    try:
        plan = batch.plan_outputs(
            input,
            output,
            output_dir,
            fmt,
            mel_out=mel_out,
            overwrite=overwrite,
            skip_existing=skip_existing,
        )
        options = RenderOptions(
            sampler=sampler.value if sampler is not None else None,
            steps=steps,
            guidance=guidance,
            seed=seed,
            tail=tail,
            inverter=inverter,
            program_swaps=swaps,
            track_programs=tracks,
            drums=not no_drums,
            batch_size=batch_size,
        )
        options.n_steps()
        if input.is_file():  # a single bad file fails here, before the model loads
            from .midi import read_midi

            score = read_midi(input, all_track_tempos=not options.reference_tempo)
            for line in [*score.warnings, *unused_changes(score, options)]:
                err.print(f"warning: {escape(line)}")
        if not plan.tasks:
            if not quiet:
                err.print(f"nothing to do: {len(plan.skipped)} output(s) exist (--skip-existing)")
            raise typer.Exit(0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            dev = resolve_device(device)  # an unavailable device falls back, with one line
        for w in caught:
            err.print(f"warning: {escape(str(w.message))}")
        from .inverter import check_runtime

        if inverter is None and (model or default_model_name()) == "official":
            check_runtime("soundstream-onnx")  # before a 1.7 GB download, not after it
        try:
            loaded = load_model(model, device=dev, dtype=dtype)
        except ModelError as e:
            if model is None and default_model_name() == "official":
                from .weights import REGISTRY

                previews = [n for n, entry in REGISTRY.items() if entry.preview]
                hint = f"; offline, try --model {previews[0]} (a preview)" if previews else ""
                raise ModelError(
                    f"{str(e).splitlines()[0]} (no --model given, and no bundled model is "
                    f"installed as the default: the official one is{hint})"
                ) from None
            raise
        if inverter is not None:
            from .inverter import load_inverter

            load_inverter(inverter, dev)  # fail before rendering, not after the first segment
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    options = with_model_defaults(options, loaded)
    if not quiet:
        _describe(loaded, options, swaps, tracks, len(plan.tasks))
    out_opts = batch.OutputOptions(sample_rate=sample_rate, normalize=normalize.value, gain_db=gain)
    if stems:
        _render_stems(loaded, plan.tasks[0], options, out_opts, quiet)
        raise typer.Exit(0)
    if plot is not None and plan.tasks[0].mel_out is None:
        import tempfile

        tmp_mel = Path(tempfile.mkdtemp(prefix="midisynth-plot-")) / "mel.npy"
        plan.tasks[0] = dataclasses.replace(plan.tasks[0], mel_out=tmp_mel)
    if use_ray:
        root = output or output_dir or (input if input.is_dir() else plan.tasks[0].dst.parent)
        ray_opts = RayOptions(workers=workers, threads=threads or 1)
        results = _render_on_ray(
            loaded, model, plan, options, out_opts, ray_opts, device, dtype, root, quiet
        )
        failed = [r for r in results if not r.ok]
        if not quiet or failed:
            _summary(results, plan.skipped, quiet)
        raise typer.Exit(1 if failed else 0)
    results = _render_with_progress(loaded, plan.tasks, options, out_opts, quiet)
    if plot is not None and results[0].ok:
        _plot_file(plot, plan.tasks[0], options, quiet)
    failed = [r for r in results if not r.ok]
    if not quiet or failed:
        _summary(results, plan.skipped, quiet)
    raise typer.Exit(1 if failed else 0)


def _render_stems(loaded, task, options, out_opts, quiet: bool) -> None:
    from .midi import read_midi
    from .stems import write_stems

    score = read_midi(task.src, all_track_tempos=not options.reference_tempo)
    try:
        paths, scaled = write_stems(loaded, score, task.dst, options, out_opts)
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if not quiet:
        for p in paths:
            err.print(f"[green]✓[/] {p}")
        err.print(f"mix + {len(paths) - 1} stem(s) written; the stems sum to the mix")
        if scaled:
            err.print("turned down to avoid clipping (the same gain on every stem)")


def _plot_file(png: Path, task, options, quiet: bool) -> None:
    import shutil

    import numpy as np
    import soundfile as sf

    from .midi import read_midi
    from .plot import plot_render
    from .render import apply_programs

    mel = np.load(task.mel_out)
    wave, sr = sf.read(task.dst, dtype="float32", always_2d=True)
    score = read_midi(task.src, all_track_tempos=not options.reference_tempo)
    onsets = sorted({round(n.start, 3) for n in apply_programs(score, options)})
    png.parent.mkdir(parents=True, exist_ok=True)
    plot_render(png, mel, wave.mean(1), sr, onsets, title=task.src.name)
    if task.mel_out.parent.name.startswith("midisynth-plot-"):
        shutil.rmtree(task.mel_out.parent, ignore_errors=True)
    if not quiet:
        err.print(f"[green]✓[/] {png}")


def _parse_track(text: str, parse_program) -> tuple[int, int]:
    n, sep, prog = text.partition("=")
    if not sep or not n.strip().isdigit():
        raise ValueError(f"--track must look like N=PROGRAM (e.g. 2=cello), got {text!r}")
    return int(n), parse_program(prog)


def _describe(loaded, options, swaps, tracks, n_files: int) -> None:
    """One status line: model, device, sampler, and the instrument changes in effect."""
    from .programs import program_name

    err.print(
        f"model [bold]{loaded.name}[/] on {loaded.device} ({str(loaded.dtype).removeprefix('torch.')}), "
        f"sampler {options.sampler} × {options.n_steps()} steps"
        + (f", guidance {options.guidance:g}" if options.guidance != 1 else "")
        + f", {n_files} file(s)"
    )
    for a, b in swaps:
        err.print(f"  program {a} {program_name(a)} → {b} {program_name(b)}")
    for t, b in tracks:
        err.print(f"  track {t} → {b} {program_name(b)}")
    if not options.drums:
        err.print("  drums removed")
    if loaded.config.frame is None and int(loaded.codec.get("num_velocity_bins", 1)) <= 1:
        _notice_once(
            "velocity",
            "note: this model ignores note velocity and pitch bend (as the released model does)",
        )


def _notice_once(key: str, message: str) -> None:
    """Print a notice the first time only (remembered in the cache folder)."""
    from .weights import cache_dir

    marker = cache_dir() / f"notice-{key}"
    if marker.exists():
        return
    err.print(f"[dim]{message}[/]")
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass


def _render_with_progress(loaded, tasks, options, out_opts, quiet: bool):
    from . import batch

    if quiet:
        return batch.render_files(loaded, tasks, options, out_opts)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s audio"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("rendering", total=1.0)

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, total=total)

        def on_result(r) -> None:
            if r.ok:
                bar.console.print(f"[green]✓[/] {r.task.dst} ({r.seconds:.1f} s)")
            else:
                bar.console.print(f"[red]✗[/] {_error_for(r)}")

        return batch.render_files(loaded, tasks, options, out_opts, progress, on_result)


def _render_on_ray(loaded, model, plan, options, out_opts, ray_opts, device, dtype, root, quiet):
    """``raybatch.render_files_ray`` with a progress bar over the corpus (files, audio, ETA)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from .raybatch import render_files_ray

    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.jsonl"
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("files, {task.fields[audio]:.0f} s audio ({task.fields[speed]:.1f}× realtime)"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True, disable=quiet) as bar:
        task = bar.add_task("rendering on Ray", total=len(plan.tasks), audio=0.0, speed=0.0)

        def on_progress(p) -> None:
            speed = p.audio_seconds / p.elapsed if p.elapsed > 0 else 0.0
            bar.update(task, completed=p.files_done, audio=p.audio_seconds, speed=speed)

        def on_result(r) -> None:
            if quiet:
                return
            if r.ok:
                bar.console.print(f"[green]✓[/] {r.task.dst} ({r.seconds:.1f} s)")
            else:
                bar.console.print(f"[red]✗[/] {_error_for(r)}")

        try:
            results = render_files_ray(
                loaded,
                model,
                plan.tasks,
                options,
                out_opts,
                device=device,
                dtype=dtype,
                ray_options=ray_opts,
                manifest=manifest,
                skipped=plan.skipped,
                on_result=on_result,
                on_progress=on_progress,
                log=None if quiet else bar.console.print,
            )
        except RuntimeError as e:
            fail(str(e).splitlines()[0])
    if not quiet:
        err.print(f"manifest: {manifest}")
    return results


def _error_for(r) -> str:
    """'file: reason', without repeating the file when the reason already starts with it."""
    src = str(r.task.src)
    return r.error if r.error.startswith((src, r.task.src.name)) else f"{src}: {r.error}"


def _summary(results, skipped, quiet: bool) -> None:
    ok = [r for r in results if r.ok]
    failed = [r for r in results if not r.ok]
    clipped = [r for r in ok if r.clipped]
    if quiet:
        for r in failed:
            err.print(f"[red]failed:[/] {_error_for(r)}")
        return
    parts = [f"{len(ok)} rendered"]
    if skipped:
        parts.append(f"{len(skipped)} skipped (exist)")
    if failed:
        parts.append(f"[red]{len(failed)} failed[/]")
    err.print(", ".join(parts))
    if clipped:
        err.print(f"{len(clipped)} file(s) were turned down to avoid clipping")
    if len(results) > 1:
        for r in failed:
            err.print(f"  [red]✗[/] {_error_for(r)}")


@app.command()
def models() -> None:
    """List registered and bundled models, and where converted models are cached."""
    from rich.table import Table

    from .weights import REGISTRY, cache_dir, default_model_name

    default = default_model_name()
    table = Table()
    for col in ("name", "source", "description"):
        table.add_column(col, overflow="fold")  # narrow terminals wrap names/paths, never cut them
    for e in REGISTRY.values():
        src = e.repo_id or (str(e.local_dir) if e.local_dir else "built in")
        table.add_row(e.name + (" (default)" if e.name == default else ""), src, e.description)
    converted = sorted((cache_dir() / "converted").glob("*/config.json"))
    for cfg in converted:
        table.add_row(cfg.parent.name, str(cfg.parent), "converted (use the path or its source)")
    out.print(table)
    out.print(f"Local folders work too: --model /path/to/folder. Cache: {cache_dir()}")


@app.command()
def programs(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Show this model's mapping.")
    ] = None,
) -> None:
    """List the General MIDI programs and what the model maps each one to."""
    from rich.table import Table

    from . import programs as gm

    mapping = "slakh"
    if model is not None:
        from .weights import ModelError, load_model

        try:
            mapping = load_model(model).program_map
        except ModelError as e:
            fail(str(e))
    table = Table("#", "program", "→ model plays", title=f"program mapping: {mapping}")
    for number, name, mapped, mapped_name in gm.mapping_table(mapping):
        table.add_row(str(number), name, f"{mapped} {mapped_name}")
    out.print(table)
    out.print("Drums (MIDI channel 10) are always drums. Names and numbers work in --program.")


@app.command()
def download(
    name: Annotated[
        str, typer.Argument(help="Registered model name (e.g. official).")
    ] = "official",
) -> None:
    """Download (and convert once) a registered model from the Hugging Face Hub."""
    from .weights import REGISTRY, ModelError, load_model

    if name not in REGISTRY or REGISTRY[name].repo_id is None:
        hub = [n for n, e in REGISTRY.items() if e.repo_id]
        fail(f"{name!r} is not a downloadable model; choose one of: {', '.join(hub)}", 2)
    try:
        loaded = load_model(name)
    except ModelError as e:
        fail(str(e))
    out.print(f"{name}: ready in {loaded.path}")


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training cache folder (midisynth cache).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model folder to write.")] = Path(
        "runs/model"
    ),
    resume: Annotated[
        str | None, typer.Option(help="Model folder to continue from (e.g. a bundled model).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="frame: FrameNet, the bundled model's design (notes given per frame; trains on a "
            "CPU). Or a preset of the released token design: tiny, cpu-small, cpu-wide, "
            "cpu-medium, small, base. Ignored with --resume (the folder says which)."
        ),
    ] = "frame",
    prediction_type: Annotated[
        str,
        typer.Option(
            help="What a new model predicts: v_prediction (samples stay in range after short training) "
            "or epsilon (the original's objective). Ignored with --resume."
        ),
    ] = "v_prediction",
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps in this run.")] = 2000,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    lr: Annotated[
        float | None,
        typer.Option(min=0.0, help="Peak AdamW learning rate (default 2e-3 frame, 1e-3 others)."),
    ] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop and save after this long.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    data_workers: Annotated[
        int, typer.Option(min=1, help="Processes preparing batches (several to feed a GPU).")
    ] = 1,
    name: Annotated[
        str, typer.Option(help="Model name recorded in config.json.")
    ] = "midisynth-model",
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train (or continue training) a model on a prepared cache. Needs no extra packages.

    Every setting (EMA, warmup, validation, noise-level mix…): python -m midisynth.train --help
    """
    if not data.is_dir():
        fail(f"training cache not found: {data} (build one with midisynth cache)", 2)
    log = lambda msg: err.print(msg, highlight=False)  # noqa: E731
    common = dict(
        data=str(data),
        out=str(out),
        resume=resume,
        steps=steps,
        batch_size=batch_size,
        max_minutes=max_minutes,
        threads=threads,
        device=device,
        name=name,
        seed=seed,
    )
    if _is_frame_run(model, resume):
        from .train_frame import FrameTrainConfig
        from .train_frame import train as run

        config = FrameTrainConfig(**common, **({"lr": lr} if lr is not None else {}))
    else:
        from .train import TrainConfig
        from .train import train as run

        config = TrainConfig(
            **common,
            model=model,
            prediction_type=prediction_type,
            lr=lr if lr is not None else 1e-3,
            data_workers=data_workers,
        )
    try:
        folder = run(config, log=log)
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    stdout.print(f"model saved to {folder}")


def _is_frame_run(model: str, resume: str | None) -> bool:
    """Whether `midisynth train` runs FrameNet: the resumed folder says so, else ``--model``."""
    if resume:
        import json

        cfg = Path(resume) / "config.json"
        try:
            return bool(json.loads(cfg.read_text()).get("model", {}).get("frame"))
        except (OSError, ValueError):
            return False  # the loader reports the folder's problem
    return model == "frame"


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def cache(ctx: typer.Context) -> None:
    """Build a training cache: MIDI (+ FluidSynth) or recordings → mels + notes shards.

    midisynth cache OUT --procedural 300 --soundfont A.sf2 --soundfont B.sf2 [--midi NAME=DIR[:MAX]]
    (all options: midisynth cache --help)
    """
    from .cache import main as cache_main

    try:
        code = cache_main(ctx.args, prog="midisynth cache")
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    raise typer.Exit(code)


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    host: Annotated[
        str, typer.Option(help="Address to bind; 127.0.0.1 keeps the page on this computer.")
    ] = "127.0.0.1",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name or folder.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    max_upload_mb: Annotated[
        float, typer.Option(min=0.01, max=1024, help="Largest MIDI upload accepted.")
    ] = 10.0,
) -> None:
    """A local web page: drop a MIDI file, choose instruments, render, listen (pip install 'midisynth[web]')."""
    from rich.markup import escape

    from .weights import load_model

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("the web page needs its extra: pip install 'midisynth[web]'", 2)
    try:
        loaded = load_model(model, device=device)
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    from .serve import serve as run_server

    err.print(
        f"midisynth page on http://{escape(host)}:{port}/ with model {loaded.name} (Ctrl-C stops)"
    )
    run_server(loaded, host=host, port=port, max_upload_mb=max_upload_mb)


@app.command()
def invert(
    mel: Annotated[Path, typer.Argument(help="A log-mel .npy file, as --mel-out writes it.")],
    output: Annotated[Path, typer.Argument(help="Audio file to write (.wav, .flac or .ogg).")],
    inverter: Annotated[
        str, typer.Option(help="griffin-lim, or soundstream-onnx with --inverter-file.")
    ] = "griffin-lim",
    inverter_file: Annotated[
        Path | None, typer.Option(help="The ONNX file of the soundstream-onnx inverter.")
    ] = None,
    sample_rate: Annotated[
        int, typer.Option("--sample-rate", "-r", min=8000, max=192000, help="Output rate.")
    ] = 16000,
    normalize: Annotated[
        Normalize, typer.Option(help="none, peak (-1 dBFS) or loudness (-16 LUFS).")
    ] = Normalize.none,
    gain: Annotated[float, typer.Option(min=-60.0, max=60.0, help="Gain in dB.")] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
) -> None:
    """Turn a log-mel file ([frames, 128] float, unscaled natural-log mel) back into audio."""
    from .inverter import invert_file

    if output.exists() and not overwrite:
        fail(f"{output} exists; pass --overwrite", 2)
    spec: dict = {"type": inverter}
    if inverter_file is not None:
        spec["path"] = str(inverter_file)
    try:
        invert_file(
            mel, output, spec, sample_rate=sample_rate, normalize=normalize.value, gain_db=gain
        )
    except _user_errors() as e:
        fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    err.print(f"[green]✓[/] {output}")


@app.command()
def evaluate(
    midi: Annotated[Path, typer.Argument(help="A MIDI file or a folder of them.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name or folder.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Evaluate at most this many files.")
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out-dir", "-o", help="Report folder (default ./midisynth-eval)."),
    ] = None,
    sampler: Annotated[
        Sampler | None, typer.Option(help="Default: the model's own setting, else dpmpp-2m.")
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, max=1000)] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    soundfont: Annotated[
        Path | None,
        typer.Option(
            help="SoundFont for reference audio (else $MIDISYNTH_SOUNDFONT or Debian's FluidR3_GM)."
        ),
    ] = None,
    transcription: Annotated[
        bool, typer.Option(help="Transcription F1 (needs basic-pitch).")
    ] = True,
    max_seconds: Annotated[
        float | None,
        typer.Option(min=1.0, help="Score only the first N seconds of each file (quicker)."),
    ] = None,
) -> None:
    """Score renders against reference audio: mel L1, LSD, transcription F1, Fréchet distance.

    Each metric is shown with its ceiling (reference audio → mel → inverter). Needs the eval extra
    and two packages installed without their dependencies (they pin tensorflow / old numpy):
    pip install 'midisynth\\[eval]' && pip install --no-deps basic-pitch==0.4.0 aisfx==0.1.2
    """
    from .evaluate import evaluate_command

    code = evaluate_command(
        midi,
        model,
        limit,
        out_dir,
        sampler.value if sampler is not None else None,
        steps,
        seed,
        device=device,
        soundfont=soundfont,
        transcription=transcription,
        max_seconds=max_seconds,
        console=err,
    )
    raise typer.Exit(code)


def _stop_on_signal(signum: int, _frame) -> None:
    # SIGTERM/SIGHUP (timeout, Docker, systemd, Slurm, Ray) unwind like Ctrl-C: every writer's
    # `except (KeyboardInterrupt, SystemExit)` removes its temporaries on the way out.
    raise SystemExit(128 + signum)


def main() -> None:
    """Console-script entry point."""
    import signal

    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, _stop_on_signal)
    try:
        app()
    except KeyboardInterrupt:
        err.print("[bold red]error:[/] interrupted")
        sys.exit(130)
