"""Pure metrics of rendered audio and mels (no rendering, no files): mel L1, log-spectral
distance, Fréchet distance, note F1 against a score, score-following checks, mel statistics.

``evaluate.py`` runs them over files; benchmarks call them directly. mir_eval (for note F1) is
optional (the ``eval`` extra) and imported inside the function that needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from . import audio
from .extras import pip_install

EVAL_INSTALL = f"{pip_install('eval')} && pip install --no-deps basic-pitch==0.4.0 aisfx==0.1.2"
ONSET_TOLERANCES = (0.05, 0.1)  # seconds
LSD_FLOOR = audio.LOG_FLOOR_CLIP**2  # power floor of the log-spectral distance


class EvalDependencyError(ImportError):
    """An optional evaluation package is missing; the message names the pip command."""


def _require(module: str, purpose: str) -> Any:
    try:
        with _quiet():
            return importlib.import_module(module)
    except ImportError:
        raise EvalDependencyError(
            f"{purpose} needs the '{module.split('.')[0]}' package: {EVAL_INSTALL}"
        ) from None


@contextlib.contextmanager
def _quiet():
    """Silence the import-time chatter of basic-pitch and its dependencies (logging, warnings)."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _np(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def mel_l1(ref_mel: np.ndarray, est_mel: np.ndarray) -> float:
    """Mean absolute difference of two log-mels [T, 128] (feature units), trimmed to the shorter."""
    ref_mel, est_mel = _np(ref_mel), _np(est_mel)
    n = min(len(ref_mel), len(est_mel))
    if n == 0:
        return math.nan
    return float(np.abs(ref_mel[:n].astype(np.float64) - est_mel[:n]).mean())


def log_spectral_distance(
    ref_audio: np.ndarray,
    est_audio: np.ndarray,
    n_fft: int | None = None,
    sounding_db: float | None = None,
) -> float:
    """Log-spectral distance in dB between two 16 kHz signals, frames trimmed to the shorter.

    ``n_fft`` None: power STFT with the front end's framing (640-sample Hann, hop 320, 1024-point
    FFT, 513 bins). ``n_fft`` N: an N-sample periodic Hann window, hop N/4, N/2+1 bins — at 2048 a
    frame spans four model frames, so phase that does not line up from frame to frame (smeared
    partials, the mark of a guessed phase) shows as it does not at the model's own framing.
    Power floored at 1e-10; per frame sqrt(mean over bins of (10·log10 P_ref − 10·log10 P_est)²),
    then the mean over frames — over the frames where the reference sounds only, when
    ``sounding_db`` is given: those within that many dB of the reference's loudest frame (so
    digital silence, where one inverter leaves a −80 dB hiss and another none, does not dominate).
    """
    from .griffinlim import stft

    n = min(len(ref_audio), len(est_audio))
    if n == 0:
        return math.nan

    def db(x: np.ndarray) -> torch.Tensor:
        sig = torch.as_tensor(np.asarray(x[:n]), dtype=torch.float64)
        if n_fft is None:
            spec = stft(sig)  # (F, 513)
        else:
            win = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
            spec = torch.stft(
                sig, n_fft, n_fft // 4, window=win, center=True, return_complex=True
            ).T  # (F, n_fft/2 + 1)
        return 10.0 * torch.log10(spec.abs().square().clamp_min(LSD_FLOOR))

    ref_db = db(ref_audio)
    per_frame = (ref_db - db(est_audio)).square().mean(dim=1).sqrt()
    if sounding_db is not None:
        energy = 10.0 * torch.log10((10.0 ** (ref_db / 10.0)).sum(dim=1))
        per_frame = per_frame[energy >= energy.max() - sounding_db]
    return float(per_frame.mean())


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings [n, d] and [m, d].

    ||μx − μy||² + Tr(Σx + Σy − 2 (Σx Σy)^½), with Tr((Σx Σy)^½) computed as the sum of the square
    roots of the eigenvalues of the symmetric Σx^½ Σy Σx^½ (stable for the singular covariances of
    small sets). A set of one embedding has a zero covariance.
    """
    x, y = np.atleast_2d(np.asarray(x, np.float64)), np.atleast_2d(np.asarray(y, np.float64))
    if x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(f"need two non-empty sets of equal dimension, got {x.shape} and {y.shape}")

    def cov(a: np.ndarray) -> np.ndarray:
        return (
            np.cov(a, rowvar=False).reshape(a.shape[1], a.shape[1]) if len(a) > 1 else 0 * a.T @ a
        )

    sx, sy = cov(x), cov(y)
    w, v = np.linalg.eigh(sx)
    root_x = (v * np.sqrt(w.clip(min=0))) @ v.T
    m = root_x @ sy @ root_x
    tr_root = np.sqrt(np.linalg.eigvalsh((m + m.T) / 2).clip(min=0)).sum()
    d = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * tr_root
    return float(max(d, 0.0))


def note_array(notes: Iterable[Any]) -> np.ndarray:
    """midisynth `Note`s (drums dropped) or (onset, offset, pitch) tuples → float [n, 3]."""
    rows = [
        (n.start, n.end, n.pitch) if hasattr(n, "pitch") else tuple(n[:3])
        for n in notes
        if not getattr(n, "is_drum", False)
    ]
    return np.asarray(rows, np.float64).reshape(-1, 3)


def note_f1(
    ref: np.ndarray, est: np.ndarray, *, onset_tolerance: float = 0.05, offset: bool = False
) -> dict[str, float]:
    """Note precision/recall/F1 (mir_eval) of `est` against `ref`, both [n, 3] (onset, offset, pitch).

    Onset within `onset_tolerance` s and pitch within 50 cents; with `offset`, also the offset within
    max(20 % of the reference note, 50 ms). No reference notes → NaN (undefined, left out of means).
    """
    transcription = _require("mir_eval.transcription", "transcription F1")
    midi_to_hz = importlib.import_module("mir_eval.util").midi_to_hz
    ref, est = (
        np.asarray(ref, np.float64).reshape(-1, 3),
        np.asarray(est, np.float64).reshape(-1, 3),
    )
    if len(ref) == 0:
        return {"precision": math.nan, "recall": math.nan, "f1": math.nan}
    if len(est) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0}

    def intervals(a: np.ndarray) -> np.ndarray:  # mir_eval wants strictly positive durations
        return np.stack([a[:, 0], np.maximum(a[:, 1], a[:, 0] + 1e-3)], axis=1)

    p, r, f, _ = transcription.precision_recall_f1_overlap(
        intervals(ref),
        midi_to_hz(ref[:, 2]),
        intervals(est),
        midi_to_hz(est[:, 2]),
        onset_tolerance=onset_tolerance,
        offset_ratio=0.2 if offset else None,
    )
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def transcription_scores(ref: np.ndarray, est: np.ndarray) -> dict[str, float]:
    """{'f1_onset_50', 'f1_onoff_50', 'f1_onset_100', 'f1_onoff_100'} for ONSET_TOLERANCES."""
    out = {}
    for tol in ONSET_TOLERANCES:
        ms = round(tol * 1000)
        out[f"f1_onset_{ms}"] = note_f1(ref, est, onset_tolerance=tol)["f1"]
        out[f"f1_onoff_{ms}"] = note_f1(ref, est, onset_tolerance=tol, offset=True)["f1"]
    return out


# --------------------------------------------------------------------------------------------
# Transcriber and embeddings (models shipped in wheels)


def chroma_accuracy(wave: np.ndarray, notes: list, hop: int = audio.HOP) -> tuple[float, float]:
    """Score following without a transcriber: (fraction of frames with pitched notes sounding whose
    strongest pitch class — 4096-point STFT of 16 kHz ``wave``, 55–2000 Hz — is one the score plays
    there, the chance level: mean number of active classes / 12). ``notes``: midi.Note-like."""
    x = torch.as_tensor(wave, dtype=torch.float32)
    spec = torch.stft(x, 4096, hop, window=torch.hann_window(4096), return_complex=True).abs()
    freqs = torch.fft.rfftfreq(4096, 1 / audio.SAMPLE_RATE)
    band = (freqs >= 55) & (freqs <= 2000)
    pc = (torch.round(12 * torch.log2(freqs[band] / 440.0)).long() + 9) % 12  # 0 = C
    chroma = torch.zeros(12, spec.shape[1]).index_add_(0, pc, spec[band])  # (12, T)
    hits, chance, n = 0, 0.0, 0
    for f in range(spec.shape[1]):
        t = f * hop / audio.SAMPLE_RATE
        active = {nt.pitch % 12 for nt in notes if not nt.is_drum and nt.start + 0.05 <= t < nt.end}
        if not active or chroma[:, f].sum() <= 0:
            continue
        hits += int(int(chroma[:, f].argmax()) in active)
        chance += len(active) / 12
        n += 1
    return hits / max(n, 1), chance / max(n, 1)


def onset_f1(mel: np.ndarray, notes: list, tol: float = 0.05) -> float:
    """F-measure of spectral-flux peaks of ``mel`` [T, 128] (log-mel, 20 ms frames) against the
    score's onset times, within ``tol`` seconds."""
    flux = np.maximum(np.diff(mel, axis=0), 0).sum(1)  # (T-1,) novelty; frame i+1 vs i
    thr = flux.mean() + flux.std()
    peaks = [
        i + 1
        for i in range(1, len(flux) - 1)
        if flux[i] > thr and flux[i] >= flux[i - 1] and flux[i] >= flux[i + 1]
    ]
    est = np.array(peaks) / audio.FRAME_RATE
    ref = np.unique(np.round([n.start for n in notes], 2))
    if not len(est) or not len(ref):
        return 0.0
    hit_ref = sum(bool(np.any(np.abs(est - r) <= tol)) for r in ref)
    hit_est = sum(bool(np.any(np.abs(ref - e) <= tol)) for e in est)
    p, r = hit_est / len(est), hit_ref / len(ref)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def mel_stats_embedding(mel: np.ndarray, window: int = 50, hop: int = 25) -> np.ndarray:
    """Hand-crafted embedding: per 1 s window (hop 0.5 s) of a log-mel [T, 128], the mean and the
    standard deviation of each band → [windows, 256]. A clip shorter than a window is one window."""
    mel = _np(mel).astype(np.float64)
    starts = range(0, max(len(mel) - window, 0) + 1, hop)
    rows = [
        np.concatenate([mel[s : s + window].mean(0), mel[s : s + window].std(0)]) for s in starts
    ]
    return np.stack(rows) if len(mel) else np.zeros((0, 2 * mel.shape[-1]))


def energy_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Does the output move with the music? Mean over the batch of the Pearson correlation over
    time of log total energy, corr_t(log Σ_f exp(a), log Σ_f exp(b)); a, b [B, T, F] log-mel.
    1 for the reference itself, ≈ 0 for output that ignores the timing of the notes."""
    ea, eb = torch.logsumexp(a, -1), torch.logsumexp(b, -1)  # (B, T)
    ea, eb = ea - ea.mean(1, keepdim=True), eb - eb.mean(1, keepdim=True)
    den = (ea.norm(dim=1) * eb.norm(dim=1)).clamp_min(1e-9)
    return float(((ea * eb).sum(1) / den).mean())
