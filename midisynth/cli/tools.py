"""The `midisynth` commands other than render: inspect, models, programs, download, train, cache,
serve, invert, evaluate. Each parses, validates, calls one library function and reports.

Registered on the app in ``cli/__init__.py`` (which also fixes their order in ``--help``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import (
    MODEL_HELP,
    Normalize,
    Sampler,
    err,
    fail,
    fail_on,
    make_folder,
    one_line_warnings,
    out,
    parse_duration,
    stdout,
    user_errors,
)


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
    max_duration: Annotated[
        str,
        typer.Option(
            help="Refuse a MIDI file longer than this (as render does): 90s, 10min, 6h, 2d; "
            "0 = no limit. Every segment's tokens are built, so a file claiming years would "
            "take minutes and gigabytes."
        ),
    ] = "6h",
) -> None:
    """Show what the model will see: tracks, programs (before → after mapping), segments, tokens."""
    from .. import programs, tokens
    from ..midi import MidiError, TooLongError, check_length, read_midi
    from ..weights import RELEASED_SETTINGS, ModelError, model_settings, resolve

    try:
        limit = parse_duration(max_duration)
    except ValueError as e:
        fail(str(e), 2)
    try:
        settings = RELEASED_SETTINGS if reference else model_settings(model)
        shown = (
            "the reference's (diffusers MidiProcessor: the released codec and program mapping, "
            "tempo from track 0 only)"
            if reference
            else f"model {resolve(model)[0]}'s (as render feeds it)"
        )
        # render obeys tempo events on every track; the reference only those of track 0
        score = read_midi(file, all_track_tempos=not reference)
        pmap = programs.get_program_map(settings["program_map"])
        codec = tokens.Codec.from_dict(settings["codec"])
        check_length(score, limit)
    except TooLongError as e:  # a bad file, exit 1 as in render
        fail(f"{file}: {e}")
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
        doc = {"tokenization": "reference" if reference else resolve(model)[0]}
        out.print_json(json.dumps({**doc, **_inspection_doc(file, score, pmap, segs)}))
    else:
        _print_inspection(file, score, pmap, segs)
        out.print(f"tokenization: {shown}", soft_wrap=True, markup=False)


def _inspection_doc(file: Path, score, pmap, segs) -> dict:
    """`inspect --json`: the file's instruments (before → after mapping) and every segment's tokens."""
    return {
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


def _print_inspection(file: Path, score, pmap, segs) -> None:
    """`inspect`: one summary line, the instrument table, token counts per segment."""
    from rich.table import Table

    from .. import programs

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


def models() -> None:
    """List the models: which is the default, and which are available here without a download."""
    from rich.table import Table

    from ..checkpoint import cache_dir
    from ..weights import DEFAULT_MODEL_ENV, REGISTRY, availability, default_model_name

    default = default_model_name()
    table = Table()
    for col in ("name", "available", "source", "description"):
        table.add_column(col, overflow="fold")  # narrow terminals wrap names/paths, never cut them
    for e in REGISTRY.values():
        src = e.repo_id or (str(e.local_dir) if e.local_dir else "built in")
        table.add_row(
            e.name + (" (default)" if e.name == default else ""),
            availability(e),
            src,
            e.description,
        )
    converted = sorted((cache_dir() / "converted").glob("*/config.json"))
    for cfg in converted:
        table.add_row(
            cfg.parent.name, "converted", str(cfg.parent), "converted (use the path or its source)"
        )
    out.print(table)
    if default not in REGISTRY:
        out.print(f"Default: {default} (from ${DEFAULT_MODEL_ENV}).")
    out.print(
        f"Local folders work too: --model /path/to/folder; ${DEFAULT_MODEL_ENV} sets the default. "
        f"Cache: {cache_dir()}"
    )


def programs(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Show this model's mapping.")
    ] = None,
) -> None:
    """List the General MIDI programs and what the model maps each one to."""
    from rich.table import Table

    from .. import programs as gm

    mapping = "slakh"
    if model is not None:
        from ..weights import ModelError, load_model

        try:
            mapping = load_model(model).program_map
        except ModelError as e:
            fail(str(e))
    table = Table("#", "program", "→ model plays", title=f"program mapping: {mapping}")
    for number, name, mapped, mapped_name in gm.mapping_table(mapping):
        table.add_row(str(number), name, f"{mapped} {mapped_name}")
    out.print(table)
    out.print("Drums (MIDI channel 10) are always drums. Names and numbers work in --program.")


def download(
    name: Annotated[
        str, typer.Argument(help="Registered model name (e.g. official).")
    ] = "official",
) -> None:
    """Download (and convert once) a registered model from the Hugging Face Hub."""
    from ..weights import REGISTRY, ModelError, load_model

    if name not in REGISTRY or REGISTRY[name].repo_id is None:
        hub = [n for n, e in REGISTRY.items() if e.repo_id]
        fail(f"{name!r} is not a downloadable model; choose one of: {', '.join(hub)}", 2)
    try:
        loaded = load_model(name)
    except ModelError as e:
        fail(str(e))
    out.print(f"{name}: ready in {loaded.path}")


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
    run, config = _trainer(common, model, prediction_type, lr, data_workers)
    try:
        folder = run(config, log=log)
    except user_errors() as e:
        fail_on(e)
    stdout.print(f"model saved to {folder}")


def _trainer(common: dict, model: str, prediction_type: str, lr: float | None, data_workers: int):
    """The training function and its config: FrameNet's (``train_frame``) or the token design's
    (``train``), with the options only that design takes."""
    if _is_frame_run(model, common["resume"]):
        from ..train_frame import FrameTrainConfig
        from ..train_frame import train as run

        lr_arg = {"lr": lr} if lr is not None else {}
        return run, FrameTrainConfig(**common, **lr_arg, data_workers=data_workers)
    from ..train import TrainConfig
    from ..train import train as run

    config = TrainConfig(
        **common,
        model=model,
        prediction_type=prediction_type,
        lr=lr if lr is not None else 1e-3,
        data_workers=data_workers,
    )
    return run, config


def _is_frame_run(model: str, resume: str | None) -> bool:
    """Whether `midisynth train` runs FrameNet: the resumed folder says so, else ``--model``."""
    if resume:
        cfg = Path(resume) / "config.json"
        try:
            return bool(json.loads(cfg.read_text()).get("model", {}).get("frame"))
        except (OSError, ValueError):
            return False  # the loader reports the folder's problem
    return model == "frame"


def cache(ctx: typer.Context) -> None:
    """Build a training cache: MIDI (+ FluidSynth) or recordings → mels + notes shards.

    midisynth cache OUT --procedural 300 --soundfont A.sf2 --soundfont B.sf2 [--midi NAME=DIR[:MAX]]
    (all options: midisynth cache --help)
    """
    from ..cache import main as cache_main

    try:
        code = cache_main(ctx.args, prog="midisynth cache")
    except user_errors() as e:
        fail_on(e)
    raise typer.Exit(code)


def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    host: Annotated[
        str, typer.Option(help="Address to bind; 127.0.0.1 keeps the page on this computer.")
    ] = "127.0.0.1",
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    max_upload_mb: Annotated[
        float, typer.Option(min=0.01, max=1024, help="Largest MIDI upload accepted.")
    ] = 10.0,
    max_duration: Annotated[
        str,
        typer.Option(
            help="Longest song the page renders (notes + 1 s tail), checked at upload: 90s, "
            "10min, 1h; 0 = no limit."
        ),
    ] = "10min",
    max_queue: Annotated[
        int,
        typer.Option(min=1, max=10_000, help="Renders waiting or running; more are refused."),
    ] = 8,
    max_files: Annotated[
        int,
        typer.Option(
            min=1, help="Uploads kept, and finished renders kept; the oldest are removed."
        ),
    ] = 50,
    max_storage_mb: Annotated[
        float,
        typer.Option(min=1, help="Disk for uploads and renders together; the oldest are removed."),
    ] = 1024.0,
    keep_minutes: Annotated[
        float, typer.Option(min=1, help="Uploads and renders unused this long are removed.")
    ] = 60.0,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            help="Also answer requests addressed to this host name or address (e.g. this "
            "computer's LAN address with --host 0.0.0.0). Repeatable."
        ),
    ] = None,
) -> None:
    """A local web page: drop a MIDI file, choose instruments, render, listen.

    Needs the web extra (starlette, uvicorn): pip install -e '.[web]' in the midisynth clone.
    """
    from rich.markup import escape

    from ..weights import load_model

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        from ..extras import pip_install

        fail(f"the web page needs its extra: {pip_install('web')}", 2)
    try:
        duration = parse_duration(max_duration)
    except ValueError as e:
        fail(str(e), 2)
    try:
        loaded = load_model(model, device=device)
    except user_errors() as e:
        fail_on(e)
    from ..serve import Limits
    from ..serve import serve as run_server

    limits = Limits(max_upload_mb, duration, max_queue, max_files, max_storage_mb, keep_minutes)
    err.print(
        f"midisynth page on http://{escape(host)}:{port}/ with model {loaded.name} (Ctrl-C stops)"
    )
    with one_line_warnings():
        run_server(loaded, host, port, limits, tuple(allow_host or ()))
    err.print("midisynth page stopped")


def invert(
    mel: Annotated[Path, typer.Argument(help="A log-mel .npy file, as --mel-out writes it.")],
    output: Annotated[
        Path,
        typer.Argument(help="Audio file to write (.wav, .flac or .ogg); a missing folder is made."),
    ],
    inverter: Annotated[
        str,
        typer.Option(
            help="auto = what render uses with the default model (the trained vocoder-p, which "
            "predicts phase; griffin-lim where it is not installed); griffin-lim; vocoder-p, "
            "vocoder-s or another vocoder "
            "folder; soundstream-onnx with --inverter-file. A render's --mel-out gives the render "
            "back with the inverter that render used."
        ),
    ] = "auto",
    inverter_file: Annotated[
        Path | None, typer.Option(help="The ONNX file of the soundstream-onnx inverter.")
    ] = None,
    sample_rate: Annotated[
        int, typer.Option("--sample-rate", "-r", min=8000, max=192000, help="Output rate.")
    ] = 16000,
    normalize: Annotated[
        Normalize,
        typer.Option(
            help="loudness = -16 LUFS (BS.1770; turned down as a whole if a peak would clip), "
            "peak = -1 dBFS, none = the model's raw level."
        ),
    ] = Normalize.loudness,
    gain: Annotated[float, typer.Option(min=-60.0, max=60.0, help="Gain in dB.")] = 0.0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print errors only.")] = False,
) -> None:
    """Turn a log-mel file ([frames, 128] float, unscaled natural-log mel) back into audio."""
    from ..inverter import invert_file

    if output.exists() and not overwrite:
        fail(f"{output} exists; pass --overwrite", 2)
    try:
        make_folder(output.parent, quiet)
    except OSError as e:
        fail_on(e)
    spec: dict = {"type": inverter}
    if inverter_file is not None:
        spec["path"] = str(inverter_file)
    try:
        invert_file(
            mel, output, spec, sample_rate=sample_rate, normalize=normalize.value, gain_db=gain
        )
    except user_errors() as e:
        fail_on(e)
    if not quiet:
        err.print(f"[green]✓[/] {output}")


def evaluate(
    midi: Annotated[Path, typer.Argument(help="A MIDI file or a folder of them.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
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
    inverter: Annotated[
        str | None,
        typer.Option(
            help="griffin-lim, soundstream-onnx or a vocoder folder, for the model and the "
            "ground-truth-encoded rows (default: the model's)."
        ),
    ] = None,
    style: Annotated[
        str | None,
        typer.Option(help="Timbre style, for a model trained on several (see render --help)."),
    ] = None,
) -> None:
    """Score renders against reference audio: mel L1, LSD, transcription F1, Fréchet distance.

    Each metric is shown with its ceiling (reference audio → mel → inverter). Needs the eval extra
    and two packages installed without their dependencies (they pin tensorflow / old numpy):
    pip install -e '.[eval]' && pip install --no-deps basic-pitch==0.4.0 aisfx==0.1.2
    (the first in the midisynth clone)
    """
    from ..evaluate import evaluate_command

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
        inverter=inverter,
        style=style,
        console=err,
    )
    raise typer.Exit(code)
