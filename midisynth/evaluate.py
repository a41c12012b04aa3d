"""Evaluation: render MIDI files and score the audio against reference recordings (spec §15).

Three systems are scored per file, always on the span both audios cover (trimmed to the shorter),
after matching each system's loudness (BS.1770) to the reference's:
- ``model``: the rendering of the MIDI file;
- ``gt-encoded``: reference audio → log-mel → the model's inverter; the ceiling for any mel model;
- ``reference``: the reference audio itself; only its transcription F1 is meaningful (the ceiling
  set by the transcriber).

Metrics:
- ``mel_l1``: mean |Δ| of the log-mel features (natural-log units, the model's own front end) of
  the system's audio vs the reference's. ``model_mel_l1`` is the same for the mel the model
  generated, before the inverter.
- ``lsd``: log-spectral distance in dB on the 513-bin power STFT (the front end's framing, floor
  1e-10 = the mel floor squared): per frame the RMS over bins of the dB difference, then the mean.
- ``f1_onset_50`` … ``f1_onoff_100``: note F1 (mir_eval) of a transcription of the audio against
  the MIDI's pitched notes, onset-only and onset+offset (offset within 20 % of the note or 50 ms),
  at 50 ms and 100 ms onset tolerance (50 ms is harsh on slow attacks: strings, pads, winds).
  Transcriber: Spotify's basic-pitch 0.4.0 (ICASSP 2022), its ONNX model from the wheel run with
  onnxruntime, default thresholds. Not program-aware (the original used MT3, spec §15).
- Fréchet distances over the whole set (one Gaussian per system from every file's embeddings):
  ``aisfx``: the 512-d embedding of the *aisfx* CNN (Ma & Lerch, ISMIR 2022), a sound-effects
  model whose weights ship in its wheel, one per 2.3 s block (hop 1.16 s) — a general audio
  embedding, not a music one (VGGish/TRILL of the paper need downloads); ``mel-stats``: a
  hand-crafted embedding, the mean and standard deviation of each log-mel band over 1 s windows
  (hop 0.5 s), 256-d. Fréchet distances depend on the number of embeddings: compare runs only on
  the same files.

Optional packages (the ``eval`` extra, plus two wheels installed without their pinned
dependencies) are imported inside the functions that need them. The FluidSynth reference, the
transcriber and the aisfx embedder are in ``eval_tools.py``.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import audio
from .eval_tools import (
    REFERENCE_EXTS,
    AisfxEmbedder,
    BasicPitch,
    EvalError,
    FluidSynthReference,
    find_reference,
)
from .metrics import (
    ONSET_TOLERANCES,
    EvalDependencyError,
    _require,
    frechet_distance,
    log_spectral_distance,
    mel_l1,
    mel_stats_embedding,
    note_array,
    transcription_scores,
)
from .midi import truncate_score

if TYPE_CHECKING:  # pragma: no cover
    from rich.console import Console

    from .render import RenderOptions
    from .weights import LoadedModel

SYSTEMS = ("model", "gt-encoded", "reference")
EMBEDDINGS = ("aisfx", "mel-stats")


# --------------------------------------------------------------------------------------------
# evaluate()


def _unique_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    root = Path(os.path.commonpath([p.resolve().parent for p in paths]))
    return [str(p.resolve().with_suffix("").relative_to(root)).replace(os.sep, "__") for p in paths]


def _match_loudness(x: torch.Tensor, ref_lufs: float) -> tuple[torch.Tensor, float]:
    lufs = audio.loudness_lufs(x)
    if not (math.isfinite(lufs) and math.isfinite(ref_lufs)):
        return x, 0.0
    return audio.apply_gain(x, ref_lufs - lufs), ref_lufs - lufs


def encode_decode(ref: torch.Tensor, inverter: Any) -> torch.Tensor:
    """Ground truth encoded: audio → log-mel → `inverter`, segment by segment as render() does."""
    from .inverter import StreamingInverter

    mel = audio.log_mel(ref)
    stream = StreamingInverter(inverter)
    chunks = [
        stream.push(mel[i : i + audio.SEGMENT_FRAMES])
        for i in range(0, len(mel), audio.SEGMENT_FRAMES)
    ]
    out = torch.cat([*chunks, stream.flush()]).float().cpu()
    return torch.nn.functional.pad(out, (0, max(0, len(ref) - len(out))))[: len(ref)]


def _plot(path: Path, name: str, mels: dict[str, np.ndarray], scores: dict[str, dict]) -> None:
    matplotlib = _require("matplotlib", "spectrogram plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = [s for s in ("reference", "model", "gt-encoded") if s in mels]
    fig, axes = plt.subplots(len(order), 1, figsize=(10, 2.4 * len(order)), sharex=True)
    for ax, system in zip(np.atleast_1d(axes), order, strict=True):
        mel = mels[system]
        secs = len(mel) / audio.FRAME_RATE
        im = ax.imshow(
            mel.T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=audio.LOG_FLOOR,
            vmax=audio.SCALE_MAX,
            extent=(0, secs, 0, mel.shape[1]),
            interpolation="nearest",
        )
        s = scores.get(system, {})
        bits = [f"{k} {s[k]:.3f}" for k in ("mel_l1", "lsd", "f1_onset_50") if _finite(s.get(k))]
        ax.set_title(f"{system}" + (f"  ({', '.join(bits)})" if bits else ""), fontsize=9)
        ax.set_ylabel("mel band")
    np.atleast_1d(axes)[-1].set_xlabel("seconds")
    fig.suptitle(f"{name}: log-mel (natural log)", fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _finite(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def check_dependencies(transcription: bool, embeddings: Sequence[str], plots: bool) -> None:
    """Raise EvalDependencyError (naming the pip command) before any work if a package is missing."""
    unknown = set(embeddings) - set(EMBEDDINGS)
    if unknown:
        raise ValueError(
            f"unknown embedding {sorted(unknown)}; choose from {', '.join(EMBEDDINGS)}"
        )
    if transcription:
        for m in ("mir_eval", "onnxruntime", "basic_pitch", "librosa", "pretty_midi"):
            _require(m, "transcription F1")
    if "aisfx" in embeddings:
        for m in ("aisfx", "librosa"):
            _require(m, "the aisfx embedding")
    if plots:
        _require("matplotlib", "spectrogram plots")


class _Scorer:
    """The tools evaluate() applies to every file: inverter, transcriber, embedders."""

    def __init__(self, inverter: Any, transcription: bool, embeddings: Sequence[str]):
        self.inverter = inverter
        self.transcriber = BasicPitch() if transcription else None
        self.embedders: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}
        if "aisfx" in embeddings:
            aisfx = AisfxEmbedder()
            self.embedders["aisfx"] = lambda wav, _mel: aisfx(wav)
        if "mel-stats" in embeddings:
            self.embedders["mel-stats"] = lambda _wav, mel: mel_stats_embedding(mel)
        # {embedding: {system: [per-file embeddings [n, d]]}}, for the Fréchet distances
        self.pools = {e: {s: [] for s in SYSTEMS} for e in self.embedders}

    def systems(self, ref: torch.Tensor, rendered: Any, match_loudness: bool):
        """(audio per system trimmed to the common span, gain in dB applied to each)."""
        gt = encode_decode(ref, self.inverter)
        n = min(len(ref), len(rendered.audio))
        if n < audio.WIN:
            raise EvalError("reference or rendering shorter than one frame")
        wavs = {"model": torch.from_numpy(rendered.audio[:n]), "gt-encoded": gt[:n]}
        wavs["reference"] = ref[:n]
        gains = dict.fromkeys(SYSTEMS, 0.0)
        if match_loudness:
            ref_lufs = audio.loudness_lufs(wavs["reference"])
            for s in ("model", "gt-encoded"):
                wavs[s], gains[s] = _match_loudness(wavs[s], ref_lufs)
        return wavs, gains

    def score(self, wavs: dict, gains: dict, rendered: Any, notes: Sequence[Any]):
        """{system: {metric: value}} and the log-mel of each system's audio."""
        mels = {s: audio.log_mel(w).numpy() for s, w in wavs.items()}
        ref_wav, ref_mel = wavs["reference"].numpy(), mels["reference"]
        scores: dict[str, dict[str, float]] = {s: {} for s in SYSTEMS}
        for s in ("model", "gt-encoded"):
            scores[s]["mel_l1"] = mel_l1(ref_mel, mels[s])
            scores[s]["lsd"] = log_spectral_distance(ref_wav, wavs[s].numpy())
        # The generated mel itself (before the inverter), at the matched level.
        direct = rendered.mel[: len(ref_mel)] + gains["model"] * math.log(10) / 20
        scores["model"]["model_mel_l1"] = mel_l1(ref_mel, direct.clip(audio.LOG_FLOOR, None))
        if self.transcriber is not None:
            span = len(ref_wav) / audio.SAMPLE_RATE
            ref_notes = note_array(notes)
            ref_notes = ref_notes[ref_notes[:, 0] < span]  # only what the compared span holds
            for s in SYSTEMS:
                est = self.transcriber(wavs[s].numpy())
                scores[s].update(transcription_scores(ref_notes, est[est[:, 0] < span]))
                scores[s]["transcribed_notes"] = float(len(est))
            scores["reference"]["midi_notes"] = float(len(ref_notes))
        for e, fn in self.embedders.items():
            for s in SYSTEMS:
                self.pools[e][s].append(fn(wavs[s].numpy(), mels[s]))
        return scores, mels

    def frechet(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for e, pool in self.pools.items():
            if pool["reference"]:
                ref = np.concatenate(pool["reference"])
                out[e] = {"n_embeddings": float(len(ref))}
                for s in ("model", "gt-encoded"):
                    out[e][s] = frechet_distance(ref, np.concatenate(pool[s]))
        return out


def evaluate(
    model: LoadedModel,
    midi_files: Sequence[str | os.PathLike],
    *,
    reference_audio: dict[str | os.PathLike, str | os.PathLike] | None = None,
    synth_reference: Callable[[Path, Path], Path] | None = None,
    options: RenderOptions | None = None,
    out_dir: str | os.PathLike | None = None,
    transcription: bool = True,
    embeddings: Sequence[str] = EMBEDDINGS,
    plots: bool = True,
    match_loudness: bool = True,
    max_seconds: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Render each MIDI file and score it (and the ground truth encoded) against reference audio.

    Args:
        model: a loaded model (`midisynth.weights.load_model`).
        midi_files: MIDI paths.
        reference_audio: {midi path: audio path}; files not in it use `<stem>.wav|.flac` beside the
            MIDI file, else `synth_reference(midi, out_dir/reference/<name>.wav)` (e.g. a
            `FluidSynthReference()`), else they fail with a one-line error.
        options: render options (sampler, steps, seed, …).
        out_dir: where `report.json`, `<name>.png` (reference / model / gt-encoded log-mels) and
            `audio/<name>.<system>.wav` go; None writes nothing (synthesized references then go to
            a temporary folder).
        transcription, embeddings, plots: which metric groups to compute (see the module doc).
        match_loudness: scale each system's audio to the reference's integrated loudness first.
        max_seconds: score only the first this-many seconds of each file: the notes that start
            before it are rendered (cut there, no tail) and compared with the same span of the
            reference, which holds exactly those notes.
        log: receives one progress line per file.
    Returns:
        The report (JSON-ready; NaN → None): {"model", "options", "settings", "files": [{"file",
        "reference", "seconds", "gain_db", "scores": {system: {metric: value}}} or {"file",
        "error"}], "summary": {system: {metric: mean over files}}, "frechet": {embedding:
        {system: distance, "n_embeddings"}}, "n_ok", "n_failed"}.
    """
    import tempfile

    from .inverter import load_inverter
    from .midi import MidiError
    from .render import RenderOptions, with_model_defaults

    options = with_model_defaults(options or RenderOptions(), model)
    check_dependencies(transcription, embeddings, plots and out_dir is not None)
    paths = [Path(p) for p in midi_files]
    refs = {Path(k).resolve(): Path(v) for k, v in (reference_audio or {}).items()}
    out = Path(out_dir) if out_dir is not None else None
    tmp = tempfile.TemporaryDirectory(prefix="midisynth-eval-") if out is None else None
    work = out if out is not None else Path(tmp.name)  # type: ignore[union-attr]
    if out is not None:
        (out / "audio").mkdir(parents=True, exist_ok=True)
    say = log or (lambda _m: None)
    inverter = load_inverter(options.inverter or model.inverter, device=model.device)
    scorer = _Scorer(inverter, transcription, embeddings)

    files: list[dict[str, Any]] = []
    try:
        for path, name in zip(paths, _unique_names(paths), strict=True):
            entry: dict[str, Any] = {"file": str(path), "name": name}
            files.append(entry)
            try:
                given = refs.get(path.resolve())
                ref_path = _reference(path, name, given, synth_reference, work, entry)
                wavs, mels, scores, gains = _score_file(
                    model, path, ref_path, options, scorer, match_loudness, max_seconds
                )
                entry.update(seconds=len(wavs["reference"]) / audio.SAMPLE_RATE, gain_db=gains)
                entry["scores"] = scores
                if out is not None:
                    _save(out, name, wavs, mels, scores, plots)
                say(f"{name}: {_one_line(scores)}")
            except (EvalError, MidiError, OSError, ValueError, RuntimeError) as e:
                entry["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
                say(f"{name}: FAILED: {entry['error']}")
    finally:
        if tmp is not None:
            tmp.cleanup()

    settings = {
        "match_loudness": match_loudness,
        "transcriber": "basic-pitch 0.4.0 (ONNX)" if transcription else None,
        "onset_tolerances_s": list(ONSET_TOLERANCES),
        "embeddings": list(scorer.embedders),
        "inverter": getattr(inverter, "name", str(inverter)),
        "max_seconds": max_seconds,
    }
    report = _report(model.name, options, settings, files, scorer.frechet())
    if out is not None:
        tmp_json = out / ".report.json.tmp"
        tmp_json.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp_json, out / "report.json")
    return report


def _report(
    model: str, options: RenderOptions, settings: dict, files: list[dict], frechet: dict
) -> dict[str, Any]:
    """The JSON-ready report (NaN → None) of ``evaluate``, from its per-file entries."""
    import dataclasses

    ok = [f for f in files if "scores" in f]
    report = {
        "model": model,
        "options": dataclasses.asdict(options),
        "settings": settings,
        "files": files,
        "summary": _means(ok),
        "frechet": frechet,
        "n_ok": len(ok),
        "n_failed": len(files) - len(ok),
    }
    return _jsonable(report)


def _reference(
    path: Path,
    name: str,
    given: Path | None,
    synth_reference: Callable[[Path, Path], Path] | None,
    work: Path,
    entry: dict[str, Any],
) -> Path:
    """One MIDI file's reference audio: ``given``, else beside the file, else synthesized into
    ``work/reference``; where it came from is recorded in the file's report ``entry``."""
    ref_path = given or find_reference(path)
    if ref_path is None:
        if synth_reference is None:
            raise EvalError(
                f"no reference audio ({'/'.join(REFERENCE_EXTS)} beside the MIDI "
                "file) and no synthesizer given"
            )
        ref_path = synth_reference(path, work / "reference" / f"{name}.wav")
        entry["reference_source"] = repr(synth_reference)
    entry["reference"] = str(ref_path)
    return ref_path


def _score_file(
    model: LoadedModel,
    path: Path,
    ref_path: Path,
    options: RenderOptions,
    scorer: _Scorer,
    match_loudness: bool,
    max_seconds: float | None,
) -> tuple[dict, dict, dict, dict]:
    """Render one MIDI file (its first ``max_seconds``: cut there, no tail) and score it against
    its reference: (audio, log-mel, scores, loudness gain in dB), each by system."""
    import dataclasses

    from .midi import read_midi
    from .render import render

    score = read_midi(path)
    file_options = options
    if max_seconds is not None and score.total_time > max_seconds:
        score = truncate_score(score, max_seconds)
        file_options = dataclasses.replace(options, tail=0.0)
    rendered = render(model, score, file_options)
    wavs, gains = scorer.systems(audio.read_audio(ref_path), rendered, match_loudness)
    scores, mels = scorer.score(wavs, gains, rendered, score.notes)
    return wavs, mels, scores, gains


def _means(ok: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{system: {metric: mean over the scored files}} (NaNs left out)."""
    return {
        s: {
            k: _nanmean([f["scores"][s].get(k, math.nan) for f in ok])
            for k in sorted({k for f in ok for k in f["scores"][s]})
        }
        for s in SYSTEMS
    }


def _save(out: Path, name: str, wavs: dict, mels: dict, scores: dict, plots: bool) -> None:
    from .audio import ClippingWarning

    with warnings.catch_warnings():  # loudness-matched audio may peak above 0 dBFS: scaled down
        warnings.simplefilter("ignore", ClippingWarning)
        for s in ("model", "gt-encoded"):
            audio.write_audio(out / "audio" / f"{name}.{s}.wav", wavs[s], on_clip="scale")
    if plots:
        _plot(out / f"{name}.png", name, mels, scores)


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _one_line(scores: dict[str, dict[str, float]]) -> str:
    m = scores["model"]
    parts = [f"mel L1 {m['mel_l1']:.3f}", f"LSD {m['lsd']:.2f} dB"]
    if _finite(m.get("f1_onset_50")):
        ceiling = scores["reference"]["f1_onset_50"]
        parts.append(f"note F1 {m['f1_onset_50']:.2f} (reference audio {ceiling:.2f})")
    return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# Report table and the CLI entry

ROWS = (
    ("mel_l1", "log-mel L1 (nats)"),
    ("model_mel_l1", "  … generated mel, before inverter"),
    ("lsd", "log-spectral distance (dB)"),
    ("f1_onset_50", "note F1, onset 50 ms"),
    ("f1_onoff_50", "note F1, onset+offset 50 ms"),
    ("f1_onset_100", "note F1, onset 100 ms"),
    ("f1_onoff_100", "note F1, onset+offset 100 ms"),
)


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    """The summary table (means over files; Fréchet distances over the set) with rich."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    fd = report.get("frechet") or {}
    title = f"{report['model']}: {report['n_ok']} file(s)"
    table = Table(title=title + (f", {report['n_failed']} failed" if report["n_failed"] else ""))
    table.add_column("metric (↓ lower / ↑ higher is better)")
    for s in SYSTEMS:
        table.add_column(s, justify="right")

    def cell(v: Any) -> str:
        return f"{v:.3f}" if _finite(v) else "—"

    summary = report["summary"]
    for key, label in ROWS:
        if any(key in summary.get(s, {}) for s in SYSTEMS):
            arrow = "↑" if key.startswith("f1") else "↓"
            table.add_row(f"{label} {arrow}", *(cell(summary[s].get(key)) for s in SYSTEMS))
    for e, d in fd.items():
        label = f"Fréchet distance, {e} ({int(d['n_embeddings'])} emb.) ↓"
        table.add_row(label, cell(d.get("model")), cell(d.get("gt-encoded")), "0")
    console.print(table)
    for f in report["files"]:
        if "error" in f:
            console.print(f"[red]failed[/] {escape(f['file'])}: {escape(f['error'])}")


def evaluate_command(
    folder: str | os.PathLike,
    model: str | None = None,
    limit: int | None = None,
    out_dir: str | os.PathLike | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    seed: int = 0,
    *,
    device: str = "auto",
    dtype: str = "auto",
    soundfont: str | os.PathLike | None = None,
    transcription: bool = True,
    embeddings: Sequence[str] = EMBEDDINGS,
    max_seconds: float | None = None,
    inverter: str | None = None,
    style: str | None = None,
    console: Console | None = None,
) -> int:
    """`midisynth evaluate`: evaluate a model on a MIDI file or folder; returns the exit code.

    References: `<stem>.wav|.flac` beside each MIDI file, else FluidSynth + a SoundFont
    (`soundfont`, $MIDISYNTH_SOUNDFONT or Debian's FluidR3_GM). Writes `out_dir/report.json`, one
    PNG per file and the rendered audio (default out_dir: ./midisynth-eval). Exit 0 when every file
    was scored, 1 when some failed, 2 on a usage or set-up error (nothing evaluated).
    """
    from rich.console import Console
    from rich.markup import escape

    from .batch import iter_files
    from .inverter import InverterError
    from .midi import MidiError
    from .render import RenderOptions, check_options, with_model_defaults
    from .weights import ModelError, load_model

    console = console or Console(stderr=True, highlight=False)
    out = Console(highlight=False)

    def fail(msg: str) -> int:
        console.print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
        return 2

    src = Path(folder)
    if not src.exists():
        return fail(f"not found: {src}")
    files = [src] if src.is_file() else list(iter_files(src))
    if limit is not None:
        files = files[: max(0, limit)]
    if not files:
        return fail(f"no MIDI files (.mid, .midi, .kar) under {src}")
    try:
        check_dependencies(transcription, embeddings, True)
        options = RenderOptions(
            sampler=sampler, steps=steps, seed=seed, inverter=inverter, style=style
        )
        options.n_steps()
        synth: FluidSynthReference | None = None
        if any(find_reference(f) is None for f in files):
            synth = FluidSynthReference(soundfont)  # raises a clear error when absent
        loaded = load_model(model, device=device, dtype=dtype)
        options = with_model_defaults(options, loaded)
        check_options(options, loaded)  # e.g. ddpm on a frame model: one line now, not per file
    except (EvalDependencyError, EvalError, ModelError, InverterError, MidiError, ValueError) as e:
        return fail(str(e).splitlines()[0])
    dst = Path(out_dir) if out_dir is not None else Path("midisynth-eval")
    console.print(
        f"evaluating {loaded.name} on {len(files)} file(s), {options.sampler} "
        f"{options.n_steps()} steps, seed {seed}; references: "
        + (f"beside the MIDI files, else {synth!r}" if synth else "beside the MIDI files")
    )
    try:
        report = evaluate(
            loaded,
            files,
            synth_reference=synth,
            options=options,
            out_dir=dst,
            transcription=transcription,
            embeddings=embeddings,
            max_seconds=max_seconds,
            log=lambda m: console.print(m, highlight=False),
        )
    except (EvalDependencyError, InverterError) as e:
        return fail(str(e).splitlines()[0])
    print_report(report, out)
    console.print(f"report: {dst / 'report.json'}")
    return 1 if report["n_failed"] or not report["n_ok"] else 0
