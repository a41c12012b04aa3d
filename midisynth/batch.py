"""Files and folders — what `midisynth render` runs: output planning (names, overwrite and
skip rules, writability checked before any work), then `render_files`, which renders the files
`options.batch_size` at a time through the segment loop of ``render.py`` and writes each output
atomically, keeping going past bad files.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import audio
from .midi import Score, read_midi
from .render import (
    Job,
    ProgressFn,
    RenderOptions,
    prepare_grids,
    prepare_tokens,
    render_jobs,
    resolve_batch_size,
    unused_changes,
)

if TYPE_CHECKING:  # pragma: no cover
    from .weights import LoadedModel


def iter_files(root: Path, exts: tuple[str, ...] = (".mid", ".midi", ".kar")) -> Iterator[Path]:
    """MIDI files under a folder, recursively, in a stable order."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in exts:
            yield p


# --------------------------------------------------------------------------------------------
# Files and folders (what `midisynth render` runs)


@dataclass(frozen=True)
class OutputOptions:
    """How audio files are written."""

    sample_rate: int = audio.SAMPLE_RATE  # resampled from 16 kHz with soxr when different
    # loudness (-16 LUFS, BS.1770; the whole file turned down if a peak would pass 0 dBFS) |
    # peak (-1 dBFS) | none (the model's raw level, ~-38 LUFS for frame-s)
    normalize: str = "loudness"
    gain_db: float = 0.0  # applied after normalisation; the file is scaled down rather than clipped
    subtype: str | None = None  # soundfile subtype, e.g. PCM_24; None = the format's default


@dataclass(frozen=True)
class FileTask:
    src: Path
    dst: Path
    mel_out: Path | None = None


@dataclass
class Plan:
    tasks: list[FileTask]
    skipped: list[FileTask]  # outputs that exist (--skip-existing)


@dataclass
class FileResult:
    task: FileTask
    error: str | None = None  # one line; None = rendered
    seconds: float = 0.0  # audio written
    clipped: bool = False  # level lowered to avoid clipping
    # --track / --program changes that changed nothing in this file (``render.unused_changes``);
    # None = not known (a file that could not be read, or a Ray worker's result)
    unused: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (or, if missing, in its nearest existing parent).
    Tried for real: permission bits say yes for folders such as /proc that refuse new files."""
    import tempfile

    p = folder
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".midisynth-probe-"):
            return True
    except OSError:
        return False


class OutputExistsError(ValueError):
    """An output file exists, and neither overwriting nor skipping was asked for (the CLI's
    ``--overwrite`` / ``--skip-existing``; a usage error, exit code 2)."""


def plan_outputs(
    src: Path,
    output: Path | None = None,
    output_dir: Path | None = None,
    fmt: str = "wav",
    *,
    mel_out: Path | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> Plan:
    """Work out every (input, output) pair before any work starts; ValueError/OSError if impossible.

    A file renders to OUTPUT, else OUTPUT_DIR/<stem>.<fmt>, else <input stem>.<fmt> beside it. A
    folder renders every MIDI file below it into OUTPUT (or OUTPUT_DIR, or the input folder),
    mirroring the sub-folders.
    """
    ext = "." + fmt.lower().lstrip(".")
    if ext not in audio.AUDIO_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose wav, flac or ogg")
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    if output is not None and output_dir is not None:
        raise ValueError("give either OUTPUT or --output-dir, not both")
    if src.is_dir():
        root = output or output_dir or src
        if root.exists() and not root.is_dir():
            raise ValueError(f"{root} is a file; a folder input needs an output folder")
        files = list(iter_files(src))
        if not files:
            raise ValueError(f"no MIDI files (.mid, .midi, .kar) under {src}")
        if mel_out is not None:
            raise ValueError("--mel-out works with a single input file only")
        tasks = [FileTask(f, root / f.relative_to(src).with_suffix(ext)) for f in files]
    else:
        if output is not None and output.is_dir():
            output_dir, output = output, None
        if output is not None:
            dst = output if output.suffix else output.with_suffix(ext)
            if dst.suffix.lower() not in audio.AUDIO_FORMATS:
                raise ValueError(
                    f"unsupported output extension {dst.suffix!r}; use .wav, .flac or .ogg"
                )
        else:
            dst = (output_dir or src.parent) / (src.stem + ext)
        if mel_out is not None and mel_out.suffix.lower() != ".npy":
            raise ValueError(f"--mel-out must end in .npy, got {mel_out.name}")
        tasks = [FileTask(src, dst, mel_out)]
    for t in tasks:
        if t.dst.resolve() == t.src.resolve():
            raise ValueError(f"output would overwrite its input: {t.dst}")
    existing = [t for t in tasks if t.dst.exists()]
    skipped: list[FileTask] = []
    if existing and skip_existing:
        skipped = existing
        tasks = [t for t in tasks if not t.dst.exists()]
    elif existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise OutputExistsError(
            f"{existing[0].dst} exists{more}; pass --overwrite or --skip-existing"
        )
    for folder in {t.dst.parent for t in tasks} | {t.mel_out.parent for t in tasks if t.mel_out}:
        if not _writable(folder):
            raise PermissionError(f"cannot write to {folder}")
    return Plan(tasks, skipped)


class _MelFile:
    """Writes a [frames, 128] float32 .npy incrementally (memory-mapped), renamed into place."""

    def __init__(self, path: Path, frames: int):
        audio.remove_stale_temporaries(path)
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.tmp.npy")
        self.arr = np.lib.format.open_memmap(self.tmp, "w+", np.float32, (frames, audio.N_MELS))
        self.pos = 0

    def write(self, mel: torch.Tensor) -> None:
        self.arr[self.pos : self.pos + mel.shape[0]] = mel.numpy()
        self.pos += mel.shape[0]

    def close(self) -> None:
        self.arr.flush()
        del self.arr
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.__dict__.pop("arr", None)
        self.tmp.unlink(missing_ok=True)


def render_groups(tasks: Sequence[FileTask], batch_size: int) -> list[list[FileTask]]:
    """The fixed groups ``render_files`` renders together: ``batch_size`` consecutive tasks each
    (a file that fails to read leaves its group one smaller rather than shifting the others)."""
    step = max(1, batch_size)
    return [list(tasks[i : i + step]) for i in range(0, len(tasks), step)]


def render_files(
    model: LoadedModel,
    tasks: Sequence[FileTask],
    options: RenderOptions,
    out: OutputOptions | None = None,
    progress: ProgressFn | None = None,
    on_result: Callable[[FileResult], None] | None = None,
) -> list[FileResult]:
    """Render MIDI files to audio files, `options.batch_size` at a time (None: chosen by
    ``render.resolve_batch_size``, from free GPU memory on CUDA); keeps going past failures.

    The files are rendered in fixed groups (``render_groups``: consecutive tasks, in order), and a
    group's bytes depend only on its members and the options, so a group sent elsewhere (a Ray
    worker, ``raybatch``) gives the same files. Every output is written atomically (temporary file +
    rename): a failure or Ctrl-C never leaves a partial file. Returns one result per task, in order.
    """

    out = out or OutputOptions()
    results = {t: FileResult(t) for t in tasks}
    prepared = _prepare(model, tasks, options, results, on_result)
    total = sum(len(p[2]) for p in prepared.values()) * audio.SEGMENT_SECONDS
    base = 0.0
    size = resolve_batch_size(options, model)  # fixed once: free GPU memory changes as we go
    options = dataclasses.replace(options, batch_size=size)
    for members in render_groups(tasks, size):
        group = [prepared[t] for t in members if t in prepared]
        if not group:
            continue
        writers: list[audio.AudioFileWriter] = []
        mels: list[_MelFile] = []
        jobs: list[Job] = []
        try:
            for t, score, segs, n in group:
                t.dst.parent.mkdir(parents=True, exist_ok=True)
                w = audio.AudioFileWriter(
                    t.dst,
                    out.sample_rate,
                    normalize=out.normalize,
                    gain_db=out.gain_db,  # type: ignore[arg-type]
                    subtype=out.subtype,
                )
                writers.append(w)
                mel_sink = None
                if t.mel_out is not None:
                    t.mel_out.parent.mkdir(parents=True, exist_ok=True)
                    mels.append(_MelFile(t.mel_out, math.ceil(n / audio.HOP)))
                    mel_sink = mels[-1].write
                gen = torch.Generator(device="cpu").manual_seed(options.seed)
                grids = (
                    prepare_grids(model, score, options, len(segs)) if model.config.frame else None
                )
                jobs.append(Job(segs, n, gen, w.write, mel_sink, grids=grids))
            render_jobs(
                model,
                jobs,
                options,
                None if progress is None else (lambda d, _t, o=base: progress(o + d, total)),
            )
            for (t, *_), w in zip(group, writers, strict=True):
                rep = w.close()
                results[t].seconds, results[t].clipped = rep.seconds, rep.scaled_to_avoid_clipping
            for m in mels:
                m.close()
        except (KeyboardInterrupt, SystemExit):
            _abort(writers, mels)
            raise
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop the folder
            _abort(writers, mels)
            for t, *_ in group:
                results[t].error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        base += sum(len(g[2]) for g in group) * audio.SEGMENT_SECONDS
        if on_result:
            for t, *_ in group:
                on_result(results[t])
    return [results[t] for t in tasks]


def _prepare(
    model: LoadedModel,
    tasks: Sequence[FileTask],
    options: RenderOptions,
    results: dict[FileTask, FileResult],
    on_result: Callable[[FileResult], None] | None,
) -> dict[FileTask, tuple[FileTask, Score, list[np.ndarray], int]]:
    """Each readable task's (task, score, token segments, samples); a file that cannot be read
    gets its error in ``results`` (and reported) now, before any rendering."""
    from .midi import MidiError

    prepared: dict[FileTask, tuple[FileTask, Score, list[np.ndarray], int]] = {}
    for t in tasks:
        try:
            score = read_midi(t.src, all_track_tempos=not options.reference_tempo)
            segs, n = prepare_tokens(model, score, options)
            prepared[t] = (t, score, segs, n)
            results[t].unused = unused_changes(score, options)
        except (MidiError, ValueError) as e:
            results[t].error = str(e)
            if on_result:
                on_result(results[t])
    return prepared


def unused_everywhere(results: Sequence[FileResult]) -> list[str]:
    """The ``--track`` / ``--program`` changes that changed nothing in any file of a folder render
    (a mistyped track, or `piano` meaning program 0 only), one line each; empty when any file's
    result does not say (Ray workers do not)."""
    known = [r.unused for r in results if r.ok]
    if not known or any(u is None for u in known):
        return []
    first = [line.split(":")[0] for line in known[0]]  # "--program 4 (Electric Piano 1)"
    return [
        f"{change} changed nothing in any of the {len(known)} rendered files"
        for change in first
        if all(any(line.startswith(change + ":") for line in u) for u in known)
    ]


def _abort(writers: list[audio.AudioFileWriter], mels: list[_MelFile]) -> None:
    """Remove the temporary files of a group that did not finish."""
    for w in writers:
        w.abort()
    for m in mels:
        m.abort()
