"""Stems: one audio file per instrument beside the mix (``midisynth render --stems``).

Each instrument of the file — a (track, channel, program) as ``midisynth inspect`` lists them;
all drums together — is rendered on its own with the same options and seed; the mix is their
sum, so the stems add up to the mix exactly (to the rounding of the file format). A neural
renderer hears instruments together, so this mix can differ slightly from a plain render of the
whole file; what a stem user needs is that the parts add up. Normalisation and gain are decided
on the mix and applied to every stem alike.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from . import audio
from .batch import OutputOptions
from .midi import Score
from .programs import program_name
from .render import ProgressFn, RenderOptions, apply_programs, render

if TYPE_CHECKING:  # pragma: no cover
    from .weights import LoadedModel


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "instrument"


def stem_groups(score: Score, options: RenderOptions) -> list[tuple[str, set[int]]]:
    """(label, instrument indices) per stem: one per pitched instrument, one for all drums.

    Labels name the track and the instrument as it will sound (swaps applied), e.g.
    ``track2-cello``; drums are ``drums``. Dropped drums (``options.drums`` False) get no stem.
    """
    sounding = {n.instrument: n for n in apply_programs(score, options)}
    groups: list[tuple[str, set[int]]] = []
    drums = {i.index for i in score.instruments if i.is_drum and i.index in sounding}
    labels: set[str] = set()
    for info in score.instruments:
        if info.is_drum or info.index not in sounding:
            continue
        label = f"track{info.track}-{_slug(program_name(sounding[info.index].program))}"
        if label in labels:  # same program on two channels of one track
            label = f"{label}-ch{info.channel + 1}"
        labels.add(label)
        groups.append((label, {info.index}))
    if drums:
        groups.append(("drums", drums))
    return groups


def render_stems(
    model: LoadedModel,
    score: Score,
    options: RenderOptions,
    progress: ProgressFn | None = None,
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """(mix, [(label, stem)]) as float32 16 kHz mono arrays of one length; mix = Σ stems."""
    groups = stem_groups(score, options)
    if not groups:
        raise ValueError("no instrument to render a stem of (the file has no notes)")
    stems = []
    for k, (label, members) in enumerate(groups):
        part = dataclasses.replace(score, notes=[n for n in score.notes if n.instrument in members])
        step = None
        if progress is not None:
            step = lambda d, t, k=k: progress(k * t + d, len(groups) * t)  # noqa: E731
        stems.append((label, render(model, part, options, step).audio))
    mix = np.sum([s for _, s in stems], axis=0, dtype=np.float32)
    return mix, stems


def write_stems(
    model: LoadedModel,
    score: Score,
    dst: Path,
    options: RenderOptions,
    out: OutputOptions | None = None,
    progress: ProgressFn | None = None,
) -> tuple[list[Path], bool]:
    """Render stems and write ``dst`` (the mix) and ``dst``'s stem + ``.LABEL`` + suffix beside it.

    Returns (paths written, mix first; whether everything was turned down to avoid clipping).
    Every file is written atomically; if any fails, those already written are removed.
    """
    out = out or OutputOptions()
    mix, stems = render_stems(model, score, options, progress)
    gain = 1.0
    x = torch.from_numpy(mix)
    if out.normalize == "peak":
        gain = audio.db_to_gain(-1.0 - audio.peak_db(x))
    elif out.normalize == "loudness":
        lufs = audio.loudness_lufs(x, audio.SAMPLE_RATE)
        gain = audio.db_to_gain(-16.0 - lufs) if np.isfinite(lufs) else 1.0
    gain *= audio.db_to_gain(out.gain_db)
    peak = float(np.abs(mix).max()) * gain if mix.size else 0.0
    scaled = peak > 1.0
    if scaled:
        gain /= peak
    parts = [(dst, mix)] + [(dst.with_name(f"{dst.stem}.{lbl}{dst.suffix}"), s) for lbl, s in stems]
    written: list[Path] = []
    try:
        for path, wave in parts:
            y = torch.from_numpy(wave * np.float32(gain))
            if out.sample_rate != audio.SAMPLE_RATE:
                y = audio.resample(y, audio.SAMPLE_RATE, out.sample_rate)
            path.parent.mkdir(parents=True, exist_ok=True)
            # "clip", not "scale": a per-file scale would break the sum (peaks are ≤ 1 already,
            # but for resampling overshoot of a few 1e-3).
            written.append(
                audio.write_audio(path, y, out.sample_rate, subtype=out.subtype, on_clip="clip")
            )
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return written, scaled
