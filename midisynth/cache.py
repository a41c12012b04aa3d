"""Training cache: MIDI + audio (recorded or synthesized) → pieces (whole log-mel + notes) in shards.

A cache is a folder of ``train-NNNNN.npz`` / ``val-NNNNN.npz`` shards (per piece: float16 log-mel
[F, 128] and the notes actually rendered as a float64 [N, 6] array ``start, end, pitch, velocity,
program, is_drum``) plus ``index.json``. ``build_cache`` renders a corpus into one once; the
validation split is by file (a stable hash of its name); ``compact_cache`` copies one with uint8
mels, small enough to carry to another machine. ``data.py`` turns cached pieces into training
examples. Build one with ``midisynth cache`` or ``python -m midisynth.cache --help``.

Audio sources
-------------
(a) A paired folder: every ``NAME.mid`` (or ``.midi``) with ``NAME.wav`` / ``NAME.flac`` (or
    ``.ogg``) beside it, recursively. The audio must start at MIDI time 0 and may have any sample
    rate or channel count (it is mixed to mono and resampled to 16 kHz). Programs are those of the
    MIDI file, so they must describe the recorded instruments.
(b) MIDI files synthesized with a General-MIDI SoundFont by the FluidSynth command-line program.
    (``synth.py``: FluidSynth, and why.)
    Each piece is re-written as a plain MIDI file from its notes (sustain pedal already applied,
    programs possibly randomized, every channel closed with All-Notes-Off/All-Sound-Off at the
    piece end + 1 s), so the audio matches the tokens exactly and has a bounded length.
    SoundFont: the ``soundfont`` argument, else ``$MIDISYNTH_SOUNDFONT``, else the Debian path
    ``/usr/share/sounds/sf2/FluidR3_GM.sf2`` (package ``fluid-soundfont-gm``).
(c) Procedurally generated multi-instrument pieces (random chord progressions, bass lines,
    melodies, arpeggios, single-note sweeps over the whole range and drum patterns over ~100 GM
    programs), synthesized as in (b).

Program randomization (synthesized sources): per piece, with probability ``keep_programs`` the
file's own programs are kept; otherwise every pitched instrument (track/channel/program) gets a
random GM program 0..111 (no percussive/sound-effect programs), so piano-only corpora teach every
instrument.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import audio
from .midi import MidiError, Note, read_midi
from .synth import (
    FLUIDSYNTH_GAIN,
    find_soundfont,
    pick_soundfont,
    procedural_piece,
    randomize_programs,
    synthesize,
)

# ---- Cache constants ------------------------------------------------------------------------------
TAIL_SECONDS = 1.0  # audio kept after the last note-off (= RenderOptions.tail)
NOTE_COLUMNS = ("start", "end", "pitch", "velocity", "program", "is_drum")
AUDIO_EXTS = (".wav", ".flac", ".ogg")
MIDI_EXTS = (".mid", ".midi")


# ---- Notes as arrays ------------------------------------------------------------------------------


def notes_to_array(notes: Sequence[Note]) -> np.ndarray:
    """Notes → float64 [N, 6] (columns NOTE_COLUMNS)."""
    rows = [(n.start, n.end, n.pitch, n.velocity, n.program, float(n.is_drum)) for n in notes]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(NOTE_COLUMNS))


def array_to_notes(arr: np.ndarray, offset: float = 0.0) -> list[Note]:
    """float [N, 6] → notes, times moved by ``offset`` seconds (instrument = program + 128·drum)."""
    out = []
    for s, e, p, v, prog, drum in arr.tolist():
        out.append(
            Note(
                s + offset,
                e + offset,
                int(p),
                int(v),
                int(prog),
                drum > 0.5,
                int(prog + 128 * drum),
            )
        )
    return out


# ---- Cache ------------------------------------------------------------------------------------------


@dataclass
class Piece:
    """One cached piece: its whole log-mel and the notes that sound in it."""

    name: str  # unique id, e.g. "freedoom/d_dm02.mid" or "procedural/00017"
    source: str  # freedoom | pop909 | procedural | paired | ...
    mel: np.ndarray  # [F, 128] float16 log-mel feature units (audio = notes' end + TAIL_SECONDS)
    notes: np.ndarray  # [N, 6] float64, NOTE_COLUMNS

    @property
    def seconds(self) -> float:
        return len(self.mel) / audio.FRAME_RATE


@dataclass(frozen=True)
class Job:
    """One piece to render (picklable, for worker processes)."""

    name: str
    source: str
    midi: str | None = None  # MIDI path (synthesized or paired)
    audio: str | None = None  # paired audio path; None = synthesize
    seed: int = 0  # procedural seed / program randomization seed
    keep_programs: float = 0.3
    soundfont: str | None = None
    reverb: bool = False
    # Augmentation, rendered as new audio: pitched notes moved by ``transpose`` semitones (kept in
    # 0..127), every time multiplied by ``stretch`` (> 1 = slower). Name: ``BASE#augK``.
    transpose: int = 0
    stretch: float = 1.0

    @property
    def base(self) -> str:
        """The name of the file this job renders (augmented copies share their original's split)."""
        return self.name.split("#aug")[0]


def is_validation(name: str, fraction: float) -> bool:
    """Stable split by file: the first 8 hex digits of sha1(name) as a fraction below ``fraction``
    (an augmented copy ``NAME#augK`` goes where ``NAME`` goes)."""
    name = name.split("#aug")[0]
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 16**8 < fraction


def augment_notes(notes: Sequence[Note], transpose: int, stretch: float) -> list[Note]:
    """Pitched notes moved by ``transpose`` semitones (dropped if they leave 0..127; drums keep
    their keys, which name instruments), all times multiplied by ``stretch``."""
    out = []
    for n in notes:
        pitch = n.pitch if n.is_drum else n.pitch + transpose
        if 0 <= pitch <= 127:
            out.append(replace(n, pitch=pitch, start=n.start * stretch, end=n.end * stretch))
    return out


def augmented_jobs(jobs: Sequence[Job], copies: int, seed: int = 0) -> list[Job]:
    """``copies`` augmented variants of every synthesized MIDI job: transpose uniform in −5..+6
    semitones (never 0), tempo stretch log-uniform in [0.8, 1.25], seeded by name."""
    out = []
    for j in jobs:
        if j.midi is None or j.audio is not None:
            continue
        rng = np.random.default_rng([seed, int(hashlib.sha1(j.name.encode()).hexdigest()[:8], 16)])
        for k in range(copies):
            t = int(rng.choice([-5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6]))
            s = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
            out.append(replace(j, name=f"{j.name}#aug{k + 1}", transpose=t, stretch=round(s, 4)))
    return out


def paired_files(folder: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(MIDI, audio) pairs of a paired folder: NAME.mid beside NAME.wav|flac|ogg, recursively."""
    pairs = []
    for mid in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in MIDI_EXTS):
        for ext in AUDIO_EXTS:
            wav = mid.with_suffix(ext)
            if wav.is_file():
                pairs.append((mid, wav))
                break
    return pairs


def mel_of(wave: np.ndarray | torch.Tensor) -> np.ndarray:
    """Whole-piece log-mel [F, 128] float16 of 16 kHz mono audio."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    return audio.log_mel(x, compute_dtype=torch.float32).numpy().astype(np.float16)


def synthesize_piece(job: Job) -> Piece:
    """Synthesize one piece (or read a paired one's audio) and compute its log-mel (runs in a
    worker process)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(
        [job.seed, int(hashlib.sha1(job.name.encode()).hexdigest()[:8], 16)]
    )
    if job.audio is not None:  # paired: the file's own notes and programs
        assert job.midi is not None
        notes = read_midi(job.midi).notes
        wave = audio.read_audio(job.audio).numpy()
    else:
        if job.midi is not None:
            notes = randomize_programs(read_midi(job.midi).notes, rng, job.keep_programs)
            if job.transpose or job.stretch != 1.0:
                notes = augment_notes(notes, job.transpose, job.stretch)
                if not notes:
                    raise ValueError("no notes left after augmentation")
        else:
            notes = procedural_piece(rng, float(rng.uniform(15, 45)))
        duration = max(n.end for n in notes) + TAIL_SECONDS
        wave, notes = synthesize(notes, duration, job.soundfont, reverb=job.reverb)
    return Piece(job.name, job.source, mel_of(wave), notes_to_array(notes))


def quantize_mel(mel: np.ndarray) -> np.ndarray:
    """Log-mel [F, 128] → uint8 over the training range [SCALE_MIN, SCALE_MAX] (steps of 0.061
    feature units, ~0.5 dB; training clips to that range anyway). Inverse: ``dequantize_mel``."""
    lo, hi = audio.SCALE_MIN, audio.SCALE_MAX
    q = np.round((np.clip(mel.astype(np.float32), lo, hi) - lo) / (hi - lo) * 255)
    return q.astype(np.uint8)


def dequantize_mel(q: np.ndarray) -> np.ndarray:
    """uint8 [F, 128] → float16 log-mel feature units."""
    lo, hi = audio.SCALE_MIN, audio.SCALE_MAX
    return (q.astype(np.float32) / 255 * (hi - lo) + lo).astype(np.float16)


def save_shard(path: Path, pieces: Sequence[Piece], compact: bool = False) -> None:
    """Pieces → one .npz: concatenated mels/notes with offsets, names and sources. ``compact``:
    mels quantized to uint8 (``quantize_mel``) and the file deflated, ~6× smaller."""
    mo = np.cumsum([0] + [len(p.mel) for p in pieces])
    no = np.cumsum([0] + [len(p.notes) for p in pieces])
    tmp = path.with_name(path.name + ".tmp.npz")
    mel = np.concatenate([p.mel for p in pieces]) if pieces else np.zeros((0, 128), np.float16)
    mel_entry = {"mel_u8": quantize_mel(mel)} if compact else {"mel": mel}
    (np.savez_compressed if compact else np.savez)(
        tmp,
        **mel_entry,
        mel_offsets=mo,
        notes=np.concatenate([p.notes for p in pieces]) if pieces else np.zeros((0, 6)),
        note_offsets=no,
        names=np.array([p.name for p in pieces]),
        sources=np.array([p.source for p in pieces]),
    )
    os.replace(tmp, path)


def load_shard(path: str | os.PathLike) -> list[Piece]:
    with np.load(path) as z:
        mel = dequantize_mel(z["mel_u8"]) if "mel_u8" in z else z["mel"]
        mo, notes, no = z["mel_offsets"], z["notes"], z["note_offsets"]
        names, sources = z["names"].tolist(), z["sources"].tolist()
    return [
        Piece(n, s, mel[mo[i] : mo[i + 1]], notes[no[i] : no[i + 1]])
        for i, (n, s) in enumerate(zip(names, sources, strict=True))
    ]


def check_cache(folder: str | os.PathLike) -> None:
    """FileNotFoundError (one line) unless ``folder`` holds both train and val shards."""
    for split in ("train", "val"):
        if not any(Path(folder).glob(f"{split}-*.npz")):
            raise FileNotFoundError(
                f"no {split}-*.npz shards in {folder}: not a training cache, or one too small to "
                "hold a validation piece (build it with python -m midisynth.cache)"
            )


def load_cache(folder: str | os.PathLike, split: str = "train") -> list[Piece]:
    """All pieces of one split (``train`` or ``val``) of a cache folder."""
    shards = sorted(Path(folder).glob(f"{split}-*.npz"))
    if not shards:
        raise FileNotFoundError(f"no {split}-*.npz shards in {folder}")
    return [p for s in shards for p in load_shard(s)]


def midi_jobs(
    source: str,
    root: str | os.PathLike,
    *,
    max_files: int | None = None,
    seed: int = 0,
    **job_args,
) -> list[Job]:
    """Jobs for the MIDI files under ``root`` (a random subset of ``max_files`` if given)."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_EXTS)
    if max_files is not None and max_files < len(files):
        pick = np.random.default_rng(seed).choice(len(files), max_files, replace=False)
        files = [files[i] for i in sorted(pick)]
    return [
        Job(f"{source}/{f.relative_to(root).as_posix()}", source, str(f), seed=seed, **job_args)
        for f in files
    ]


@dataclass
class CacheStats:
    pieces: dict[str, int] = field(default_factory=dict)  # split → count
    seconds: dict[str, float] = field(default_factory=dict)  # split → audio seconds
    by_source: dict[str, float] = field(default_factory=dict)  # source → audio seconds
    failed: list[str] = field(default_factory=list)  # "name: reason"


def build_cache(
    jobs: Iterable[Job],
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.04,
    workers: int = 2,
    shard_seconds: float = 4 * 3600,
    settings: dict | None = None,
    log=print,
) -> CacheStats:
    """Render every job once and write train/val shards + index.json into ``out``.

    Pieces that fail (unreadable MIDI, synthesizer error or timeout) are skipped and listed.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = list(jobs)
    val_names = {j.base for j in jobs if is_validation(j.name, val_fraction)}
    if not val_names and len(jobs) >= 2 and val_fraction > 0:
        # A small corpus (e.g. 20 procedural pieces) may hash no name below the fraction; training
        # needs a validation split, so the piece with the lowest hash is held out.
        val_names = {min(jobs, key=lambda j: hashlib.sha1(j.base.encode()).hexdigest()).base}
    stats = CacheStats()
    buffers: dict[str, list[Piece]] = {"train": [], "val": []}
    counters = {"train": 0, "val": 0}
    t0 = time.time()

    def flush(split: str, force: bool = False) -> None:
        buf = buffers[split]
        if buf and (force or sum(p.seconds for p in buf) >= shard_seconds):
            save_shard(out / f"{split}-{counters[split]:05d}.npz", buf)
            counters[split] += 1
            buffers[split] = []

    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [(j, pool.submit(synthesize_piece, j)) for j in jobs]
        for k, (job, fut) in enumerate(futures):
            try:
                piece = fut.result()
            except (MidiError, OSError, ValueError, subprocess.SubprocessError) as e:
                stats.failed.append(f"{job.name}: {str(e).splitlines()[0] if str(e) else e}")
                continue
            split = "val" if job.base in val_names else "train"
            buffers[split].append(piece)
            stats.pieces[split] = stats.pieces.get(split, 0) + 1
            stats.seconds[split] = stats.seconds.get(split, 0.0) + piece.seconds
            stats.by_source[job.source] = stats.by_source.get(job.source, 0.0) + piece.seconds
            flush(split)
            if (k + 1) % 50 == 0 or k + 1 == len(futures):
                h = sum(stats.seconds.values()) / 3600
                log(f"[cache] {k + 1}/{len(futures)} pieces, {h:.2f} h, {time.time() - t0:.0f} s")
    for split in buffers:
        flush(split, force=True)
    index = {
        "pieces": stats.pieces,
        "hours": {k: v / 3600 for k, v in stats.seconds.items()},
        "hours_by_source": {k: v / 3600 for k, v in stats.by_source.items()},
        "failed": stats.failed,
        "val_fraction": val_fraction,
        "wall_seconds": time.time() - t0,
        "settings": settings or {},
    }
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return stats


def compact_cache(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    max_mib: float | None = 48.0,
    seed: int = 0,
    shard_mib: float = 56.0,
) -> dict[str, Any]:
    """Copy a cache into ``dst`` as compact shards (uint8 mels, deflated), each file at most
    ``shard_mib`` — e.g. to carry training data to a machine that cannot synthesize it, one shard
    per transfer. ``max_mib``: a budget for all shards together (train pieces are taken in a seeded
    random order until it is spent; every val piece is kept); None keeps every piece. Returns (and
    writes to index.json) what was kept."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.glob("*.npz"):
        old.unlink()
    val_pieces = load_cache(src, "val")
    save_shard(dst / "val-00000.npz", val_pieces, compact=True)
    budget = math.inf if max_mib is None else max_mib * 2**20
    budget -= (dst / "val-00000.npz").stat().st_size
    train = load_cache(src, "train")
    order = np.random.default_rng(seed).permutation(len(train)).tolist()
    kept: list[Piece] = []
    used, shard, start = 0, 0, 0
    while start < len(order):
        group = [train[i] for i in order[start : start + 16]]
        path = dst / f"train-{shard:05d}.npz"
        save_shard(path, group, compact=True)
        while len(group) > 1 and (  # trim to fit the shard size and the budget
            path.stat().st_size > shard_mib * 2**20 or used + path.stat().st_size > budget
        ):
            group = group[: len(group) // 2]
            save_shard(path, group, compact=True)
        if used + path.stat().st_size > budget or path.stat().st_size > shard_mib * 2**20:
            path.unlink()
            break
        kept += group
        used += path.stat().st_size
        shard, start = shard + 1, start + len(group)
    if not kept:
        raise ValueError(f"max_mib={max_mib} leaves no room for any training piece")
    info: dict[str, Any] = {}
    index = src / "index.json"
    if index.is_file():
        info = json.loads(index.read_text())
    info.update(
        compact={
            "from": str(src), "max_mib": max_mib, "shard_mib": shard_mib, "seed": seed,
            "mel": "uint8",
        },
        pieces={"train": len(kept), "val": len(val_pieces)},
        hours={
            "train": round(sum(p.seconds for p in kept) / 3600, 3),
            "val": round(sum(p.seconds for p in val_pieces) / 3600, 3),
        },
        hours_by_source={
            s: round(sum(p.seconds for p in kept if p.source == s) / 3600, 3)
            for s in sorted({p.source for p in kept})
        },
    )  # fmt: skip
    (dst / "index.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ---- Command line ------------------------------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    """The options of ``midisynth cache`` / ``python -m midisynth.cache``."""
    ap = argparse.ArgumentParser(prog=prog, description="Build a training cache.")
    ap.add_argument("out", type=Path, help="cache folder to write")
    ap.add_argument(
        "--compact-from",
        type=Path,
        default=None,
        metavar="CACHE",
        help="instead of building: copy CACHE into OUT with uint8 mels, at most --max-mib",
    )
    ap.add_argument(
        "--max-mib",
        type=float,
        default=None,
        help="with --compact-from: all shards together at most this (default: keep everything)",
    )
    ap.add_argument(
        "--shard-mib",
        type=float,
        default=56.0,
        help="with --compact-from: each shard file at most this, to carry in parts (default 56)",
    )
    ap.add_argument(
        "--midi",
        action="append",
        default=[],
        metavar="NAME=DIR[:MAX_FILES]",
        help="MIDI folder to synthesize (repeatable), e.g. freedoom=../shared/midi/freedoom",
    )
    ap.add_argument(
        "--paired",
        action="append",
        default=[],
        metavar="DIR",
        help="folder of NAME.mid + NAME.wav|flac pairs (repeatable)",
    )
    ap.add_argument("--procedural", type=int, default=0, help="number of generated pieces")
    ap.add_argument(
        "--augment",
        action="append",
        default=[],
        metavar="NAME=COPIES",
        help="for the --midi source NAME, also render COPIES transposed (−5..+6 semitones) and "
        "time-stretched (0.8–1.25×) variants of each file as new audio (repeatable)",
    )
    ap.add_argument(
        "--soundfont",
        action="append",
        default=[],
        help="SoundFont to synthesize with (repeatable: each piece draws one, seeded by its name)",
    )
    ap.add_argument("--keep-programs", type=float, default=0.3)
    ap.add_argument("--reverb", action="store_true")
    ap.add_argument("--val-fraction", type=float, default=0.04)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: Sequence[str] | None = None, prog: str = "python -m midisynth.cache") -> int:
    """``python -m midisynth.cache OUT --midi NAME=DIR[:MAX] --paired DIR --procedural N``."""
    args = _parser(prog).parse_args(argv)
    if args.compact_from is not None:
        info = compact_cache(
            args.compact_from, args.out, args.max_mib, args.seed, shard_mib=args.shard_mib
        )
        print(json.dumps({k: info[k] for k in ("pieces", "hours")}))
        return 0
    synth = bool(args.midi or args.procedural)
    fonts = [str(find_soundfont(f)) for f in (args.soundfont or [None])] if synth else [None]
    common = dict(keep_programs=args.keep_programs, reverb=args.reverb)
    jobs: list[Job] = []
    for spec in args.midi:
        name, _, rest = spec.partition("=")
        folder, _, limit = rest.partition(":")
        jobs += midi_jobs(
            name, folder, max_files=int(limit) if limit else None, seed=args.seed, **common
        )
    copies = {n: int(c) for n, _, c in (a.partition("=") for a in args.augment)}
    for source, n in copies.items():
        jobs += augmented_jobs([j for j in jobs if j.source == source], n, args.seed)
    for folder in args.paired:
        jobs += [
            Job(f"paired/{m.relative_to(folder).as_posix()}", "paired", str(m), str(w))
            for m, w in paired_files(folder)
        ]
    jobs += [
        Job(f"procedural/{i:05d}", "procedural", None, seed=args.seed + i, **common)
        for i in range(args.procedural)
    ]
    jobs = [j if j.audio else replace(j, soundfont=pick_soundfont(j.name, fonts)) for j in jobs]
    settings = {
        "midi": args.midi,
        "paired": args.paired,
        "procedural": args.procedural,
        "augment": args.augment,
        "soundfonts": [Path(f).name for f in fonts if f],
        "keep_programs": args.keep_programs,
        "reverb": args.reverb,
        "gain": FLUIDSYNTH_GAIN,
        "tail_seconds": TAIL_SECONDS,
        "seed": args.seed,
    }
    stats = build_cache(
        jobs, args.out, val_fraction=args.val_fraction, workers=args.workers, settings=settings
    )
    print(
        json.dumps(
            {
                "pieces": stats.pieces,
                "hours": {k: round(v / 3600, 3) for k, v in stats.seconds.items()},
                "failed": len(stats.failed),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
