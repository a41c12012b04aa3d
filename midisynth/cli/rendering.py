"""`midisynth render`: its options, and the steps it takes (each a named helper below).

check the flags → plan the outputs and load the model → render (stems, Ray or local, with a
progress bar; then the --plot picture) → summary and exit code.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from ..extras import pip_install
from .common import (
    MODEL_HELP,
    Normalize,
    Sampler,
    err,
    fail,
    fail_on,
    make_folder,
    one_line_warnings,
    parse_duration,
    user_errors,
)


# `render` is long only because Typer reads a command's options from its signature: ~30 options,
# each with its --help text. The body hands them, as one `_Request`, to `_run`.
def render(
    input: Annotated[Path, typer.Argument(help="A MIDI file, or a folder of them (recursive).")],
    output: Annotated[
        Path | None,
        typer.Argument(
            help="Output file (extension sets the format: .wav .flac .ogg) or folder; a missing "
            "folder is created (and said)."
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Folder for outputs (mirrors the input tree; created if missing, and said).",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="wav, flac or ogg (when not set by OUT).")
    ] = "wav",
    program: Annotated[
        list[str] | None,
        typer.Option(
            "--program",
            "-p",
            help="Swap instruments: SRC=DST, GM names or numbers (piano=cello, 0=42). A name is "
            "one program: piano = 0 Acoustic Grand Piano, electric piano = 4 (`midisynth "
            "programs` lists them). A single file must have SRC. Repeatable.",
        ),
    ] = None,
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            help="Set one track's instrument: N=PROGRAM, N = the 'track' column of `midisynth "
            "inspect` (the MIDI file's track index, from 0); a single file must have track N. "
            "Repeatable.",
        ),
    ] = None,
    no_drums: Annotated[bool, typer.Option("--no-drums", help="Drop channel-10 drums.")] = False,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help=MODEL_HELP),
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
        str | None,
        typer.Option(
            help="auto (the trained vocoder-p, which predicts phase; griffin-lim where it is not "
            "installed), griffin-lim, vocoder-p, vocoder-s (network magnitudes + Griffin-Lim "
            "phase) or another vocoder folder, soundstream-onnx (the official "
            "model's ONNX file). Default: the model's own (frame-s and the official model "
            "without its ONNX file: auto)."
        ),
    ] = None,
    style: Annotated[
        str | None,
        typer.Option(
            help="Timbre, for a model trained on several (FrameConfig.styles; frame-s: "
            "FluidR3_GM, its default, or MuseScore_General_Full, the SoundFonts of its training "
            "audio); a prefix will do (--style musescore)."
        ),
    ] = None,
    texture: Annotated[
        float | None,
        typer.Option(
            help="Frame models: standard deviation, in nats, of the seeded dither added to the "
            "rendered log-mel (the frame-to-frame grain of a real spectrum). 0 = a smoother, "
            "cleaner sound. Default: the model's own (frame-s: 0.3).",
        ),
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
        Normalize,
        typer.Option(
            help="loudness = -16 LUFS (BS.1770; turned down as a whole if a peak would clip), "
            "peak = -1 dBFS, none = the model's raw level."
        ),
    ] = Normalize.loudness,
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
        int | None,
        typer.Option(
            min=1,
            max=256,
            help="Files rendered together (GPU throughput). Default: 8 on a CPU; on CUDA as many "
            "as half the free GPU memory holds (a power of two, at most 64).",
        ),
    ] = None,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs",
            help="CUDA: replay each denoising step as a CUDA graph (the same numbers, far fewer "
            "kernel launches; one capture per segment shape). Ignored, with a note, elsewhere.",
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
    skip_existing: Annotated[bool, typer.Option(help="Skip inputs whose output exists.")] = False,
    use_ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Render on a Ray cluster (RAY_ADDRESS, else a local one): long-lived workers, "
            "dead workers' files re-run, OUT/manifest.jsonl. Needs Ray on every node: "
            f"{pip_install('ray')}.",
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
    max_duration: Annotated[
        str,
        typer.Option(
            help="Refuse a MIDI file whose render (notes + tail) would last longer: 90s, 10min, "
            "6h, 2d; 0 = no limit. Checked from the notes before any work."
        ),
    ] = "6h",  # = render.DEFAULT_MAX_DURATION (not imported: it would import torch)
) -> None:
    """Render MIDI to audio.

    \b
    midisynth render song.mid                      # → song.wav
    midisynth render song.mid out.flac -p piano=cello
    midisynth render midi_folder/ -o audio_folder/ --skip-existing
    """
    # locals() holds exactly the parameters here: nothing else has been defined yet.
    _run(_Request(**locals()))


@dataclasses.dataclass(frozen=True)
class _Request:
    """The render command's arguments as given (field names = its parameter names)."""

    input: Path
    output: Path | None
    output_dir: Path | None
    fmt: str
    program: list[str] | None
    track: list[str] | None
    no_drums: bool
    model: str | None
    device: str
    dtype: str
    sampler: Sampler | None
    steps: int | None
    guidance: float
    seed: int
    tail: float
    inverter: str | None
    style: str | None
    texture: float | None
    sample_rate: int
    normalize: Normalize
    gain: float
    mel_out: Path | None
    stems: bool
    plot: Path | None
    batch_size: int | None
    cuda_graphs: bool
    overwrite: bool
    skip_existing: bool
    use_ray: bool
    workers: int | None
    threads: int | None
    quiet: bool
    max_duration: str


def _run(req: _Request) -> NoReturn:
    """The whole command: every expected failure is one line and a non-zero exit."""
    swaps, tracks = _check_flags(req)
    _check_sampling(req)
    if req.threads is not None and not req.use_ray:
        import torch

        torch.set_num_threads(req.threads)
    from ..batch import OutputExistsError
    from ..render import with_model_defaults

    try:
        plan, options = _plan(req, swaps, tracks)
        loaded = _load(req)
    except OutputExistsError as e:  # a usage error (fixed by a flag), as in `invert`
        fail(str(e), 2)
    except user_errors() as e:
        fail_on(e)
    options = with_model_defaults(options, loaded)
    if not req.quiet:
        _describe(loaded, options, swaps, tracks, len(plan.tasks))
        if req.cuda_graphs and loaded.device.type != "cuda" and not req.use_ray:
            err.print(f"note: --cuda-graphs needs a CUDA device; eager steps on {loaded.device}")
    with one_line_warnings():  # e.g. a segment with too many notes for the encoder
        code = _dispatch(req, plan, options, loaded)
    raise typer.Exit(code)


def _check_flags(req: _Request) -> tuple[tuple, tuple]:
    """(--program swaps, --track programs), parsed; a bad value or a combination of flags that
    cannot work exits with code 2 before any work, as does a missing optional package."""
    from ..programs import parse_program, parse_swap

    try:
        parse_duration(req.max_duration)
        swaps = tuple(parse_swap(p) for p in req.program or [])
        tracks = tuple(_parse_track(t, parse_program) for t in req.track or [])
        if req.sampler is Sampler.ddpm and req.steps is not None and req.steps > 1000:
            raise ValueError("--steps must be at most 1000")
        if (req.stems or req.plot is not None) and not req.input.is_file():
            raise ValueError("--stems and --plot work on a single MIDI file, not a folder")
        if req.stems and (req.mel_out is not None or req.plot is not None):
            raise ValueError("--stems cannot be combined with --mel-out or --plot")
        if req.use_ray and (req.stems or req.plot is not None):
            raise ValueError("--ray renders files as they are; --stems and --plot run locally")
        if req.workers is not None and not req.use_ray:
            raise ValueError("--workers needs --ray")
        if req.use_ray:
            from ..raybatch import import_ray

            import_ray()
        if req.plot is not None and req.plot.suffix.lower() != ".png":
            raise ValueError(f"--plot must name a .png file, got {req.plot}")
        if req.plot is not None:
            from ..plot import check_available

            check_available()
    except (ValueError, ImportError) as e:
        fail(str(e), 2)
    return swaps, tracks


def _check_sampling(req: _Request) -> None:
    """--sampler, --steps, --guidance and --style against the model, from its config.json alone (no
    weights, no download, no MIDI file read): settings it cannot use exit with code 2 now, not
    once per file after loading. A frame model (FrameNet) starts part-way from its prior's mel,
    which only the cosine-schedule samplers can do, and has no unconditional mode to guide with."""
    from ..diffusion import check_settings
    from ..render import DEFAULT_SAMPLER, FRAME_SAMPLING, check_texture, match_style
    from ..weights import ModelError, model_settings, resolve

    try:
        name = resolve(req.model)[0]
        settings = model_settings(req.model)
    except ModelError:
        return  # an unknown or broken model is reported by the loader, as it always was
    own = settings["sampling"] or (FRAME_SAMPLING if settings["frame"] else {})
    sampler = req.sampler.value if req.sampler is not None else own.get("sampler", DEFAULT_SAMPLER)
    start = float(own.get("start", 1.0)) if settings["frame"] else 1.0
    try:
        check_settings(
            sampler,
            req.steps,
            start=start,
            guidance=req.guidance,
            unconditional=not settings["frame"],
        )
        match_style(settings["styles"], req.style)
        if req.texture is not None and not settings["frame"]:
            raise ValueError("--texture applies to frame models (FrameNet) only")
        if req.texture is not None:
            check_texture(req.texture, "--texture")
    except ValueError as e:
        fail(f"model {name}: {e}", 2)


def _plan(req: _Request, swaps: tuple, tracks: tuple):
    """(output plan, render options). A single bad MIDI file fails here, before the model loads;
    its warnings are printed; with nothing left to render (--skip-existing) the command ends."""
    from rich.markup import escape

    from .. import batch
    from ..render import RenderOptions, TooLongError, check_duration, unused_changes

    plan = batch.plan_outputs(
        req.input,
        req.output,
        req.output_dir,
        req.fmt,
        mel_out=req.mel_out,
        overwrite=req.overwrite,
        skip_existing=req.skip_existing,
    )
    options = RenderOptions(
        sampler=req.sampler.value if req.sampler is not None else None,
        steps=req.steps,
        guidance=req.guidance,
        seed=req.seed,
        tail=req.tail,
        inverter=req.inverter,
        style=req.style,
        texture=req.texture,
        program_swaps=swaps,
        track_programs=tracks,
        drums=not req.no_drums,
        batch_size=req.batch_size,
        cuda_graphs=req.cuda_graphs,
        max_duration=parse_duration(req.max_duration),
    )
    options.n_steps()
    if req.input.is_file():  # a single bad file fails here, before the model loads
        from ..midi import read_midi

        score = read_midi(req.input, all_track_tempos=not options.reference_tempo)
        try:
            check_duration(score, options)  # a file claiming years: refused now, in one line
        except TooLongError as e:
            raise TooLongError(f"{req.input}: {e}") from None
        for line in score.warnings:
            err.print(f"warning: {escape(line)}")
        _check_changes(req, score, unused_changes(score, options))
    if not plan.tasks:
        if not req.quiet:
            err.print(f"nothing to do: {len(plan.skipped)} output(s) exist (--skip-existing)")
        raise typer.Exit(0)
    return plan, options


def _check_changes(req: _Request, score, unused: list[str]) -> None:
    """A --track or --program that would change nothing in this file (a mistyped track, a name
    that means another program: `piano` is 0 only, not the electric pianos) is refused: one line
    saying what the name means and what the file has, exit 2, before the model loads."""
    from ..programs import parse_swap, program_name

    if not unused:
        return
    line = unused[0]
    if line.startswith("--program "):
        have = sorted({i.program for i in score.instruments if not i.is_drum})
        for text in req.program or []:
            src, prog = text.partition("=")[0].strip(), parse_swap(text)[0]
            if line.startswith(f"--program {prog} (") and not src.isdigit():
                line += f" ('{src}' means program {prog} only)"
                break
        names = ", ".join(f"{p} {program_name(p)}" for p in have) or "none"
        line += f"; its instruments: {names}"
    more = f" (and {len(unused) - 1} more)" if len(unused) > 1 else ""
    fail(f"{req.input}: {line}{more}; nothing rendered", 2)


def _load(req: _Request):
    """The model on its device (an unavailable device falls back, with one warning line), and the
    inverter checked: the official model's ONNX runtime before its 1.7 GB download, a chosen
    inverter before rendering rather than after the first segment."""
    from rich.markup import escape

    from ..inverter import check_runtime
    from ..weights import ModelError, default_model_name, load_model, resolve_device

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dev = resolve_device(req.device)  # an unavailable device falls back, with one line
    for w in caught:
        err.print(f"warning: {escape(str(w.message))}")
    if req.inverter is None and (req.model or default_model_name()) == "official":
        check_runtime("soundstream-onnx")  # before a 1.7 GB download, not after it
    try:
        loaded = load_model(req.model, device=dev, dtype=req.dtype)
    except ModelError as e:
        if req.model is None and default_model_name() == "official":
            from ..weights import DEFAULT_MODEL, DEFAULT_MODEL_ENV, REGISTRY

            hint = f"; offline, try --model {DEFAULT_MODEL}" if DEFAULT_MODEL in REGISTRY else ""
            raise ModelError(
                f"{str(e).splitlines()[0]} (no --model given; the default is the official model, "
                f"set by ${DEFAULT_MODEL_ENV} or because no bundled model is installed{hint})"
            ) from None
        raise
    if req.inverter is not None:
        from ..inverter import load_inverter

        load_inverter(req.inverter, dev)  # fail before rendering, not after the first segment
    return loaded


def _dispatch(req: _Request, plan, options, loaded) -> int:
    """Render the planned files (as stems, on Ray, or here) and report; returns the exit code."""
    from .. import batch

    out_opts = batch.OutputOptions(
        sample_rate=req.sample_rate, normalize=req.normalize.value, gain_db=req.gain
    )
    root = (req.output or req.output_dir or req.input) if req.input.is_dir() else None
    for folder in (root or plan.tasks[0].dst.parent, req.mel_out and req.mel_out.parent):
        if folder:
            make_folder(folder, req.quiet)  # (sub-folders of a mirrored tree: silently)
    if req.stems:
        _render_stems(loaded, plan.tasks[0], options, out_opts, req.quiet)
        return 0
    if req.plot is not None and plan.tasks[0].mel_out is None:
        import tempfile

        tmp_mel = Path(tempfile.mkdtemp(prefix="midisynth-plot-")) / "mel.npy"
        plan.tasks[0] = dataclasses.replace(plan.tasks[0], mel_out=tmp_mel)
    if req.use_ray:
        results = _render_on_ray(req, loaded, plan, options, out_opts)
    else:
        results = _render_with_progress(loaded, plan.tasks, options, out_opts, req.quiet)
        if req.plot is not None and results[0].ok:
            _plot_file(req.plot, plan.tasks[0], options, req.quiet)
    failed = [r for r in results if not r.ok]
    if not req.quiet or failed:
        _summary(results, plan.skipped, req.quiet)
    return 1 if failed else 0


def _render_stems(loaded, task, options, out_opts, quiet: bool) -> None:
    from ..midi import read_midi
    from ..stems import write_stems

    score = read_midi(task.src, all_track_tempos=not options.reference_tempo)
    try:
        paths, scaled = write_stems(loaded, score, task.dst, options, out_opts)
    except user_errors() as e:
        fail_on(e)
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

    from ..midi import read_midi
    from ..plot import plot_render
    from ..render import apply_programs

    mel = np.load(task.mel_out)
    wave, sr = sf.read(task.dst, dtype="float32", always_2d=True)
    score = read_midi(task.src, all_track_tempos=not options.reference_tempo)
    onsets = sorted({round(n.start, 3) for n in apply_programs(score, options)})
    make_folder(png.parent, quiet)
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
    from ..programs import program_name

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
    from ..checkpoint import cache_dir

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
    from .. import batch

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


def _render_on_ray(req: _Request, loaded, plan, options, out_opts):
    """``raybatch.render_files_ray`` with a progress bar over the corpus (files, audio, ETA); the
    manifest goes to the output folder (OUT, --output-dir, the input folder or the output's)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from ..raybatch import RayOptions, render_files_ray

    quiet = req.quiet
    root = (
        req.output
        or req.output_dir
        or (req.input if req.input.is_dir() else plan.tasks[0].dst.parent)
    )
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
                req.model,
                plan.tasks,
                options,
                out_opts,
                device=req.device,
                dtype=req.dtype,
                ray_options=RayOptions(workers=req.workers, threads=req.threads or 1),
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
    """'file: reason', the file named as the user named it, once: a reason may start with it
    already, as given or (from a Ray worker, which gets absolute paths) resolved."""
    src = str(r.task.src)
    for named in (src, str(r.task.src.resolve())):
        if r.error.startswith(f"{named}:"):
            return src + r.error[len(named) :]
    return r.error if r.error.startswith(r.task.src.name) else f"{src}: {r.error}"


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
        from ..batch import unused_everywhere

        for line in unused_everywhere(results):
            err.print(f"warning: {line}")
    if len(results) > 1:
        for r in failed:
            err.print(f"  [red]✗[/] {_error_for(r)}")
