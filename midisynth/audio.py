"""Signal constants, the log-mel front end, scaling, audio file I/O, resampling and gain.

The front end reproduces the original system's TensorFlow features exactly (spec §2):
``tf.signal.stft(pad_end=True)`` framing, periodic Hann 640 in a 1024-point FFT, magnitude,
``tf.signal.linear_to_mel_weight_matrix`` (HTK mel, triangles linear in mel, DC row zero), clip to
[1e-5, 1e8], natural log. numpy, soundfile and soxr are imported only by the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

# ---- Signal constants (spec §2). Derived values are computed, never retyped. --------------------
SAMPLE_RATE = 16_000  # Hz, mono; the model, the inverter and the features all run at this rate
HOP = 320  # STFT frame step in samples (20 ms)
WIN = 640  # STFT frame (= periodic Hann window) length in samples (40 ms)
N_FFT = 1024  # each windowed frame is zero-padded at the end to this length
N_FREQS = N_FFT // 2 + 1  # 513 linear-frequency bins (incl. DC and Nyquist)
N_MELS = 128  # mel channels
F_MIN = 0.0  # Hz, lower edge of the lowest mel band
F_MAX = SAMPLE_RATE / 2  # 8000 Hz, upper edge of the highest mel band
MEL_BREAK_HZ = 700.0  # HTK mel scale: mel(f) = MEL_HIGH_Q * ln(1 + f / MEL_BREAK_HZ)
MEL_HIGH_Q = 1127.0
LOG_FLOOR_CLIP = 1e-5  # mel magnitudes are clipped to [1e-5, 1e8] before the natural log
LOG_CEIL_CLIP = 1e8
LOG_FLOOR = math.log(LOG_FLOOR_CLIP)  # -11.512925…: the feature value of silence ("matches MelGAN")
SCALE_MIN = LOG_FLOOR  # feature range mapped to the network range [-1, 1] by scale()
SCALE_MAX = 4.0  # "largest value for most examples" in the original
FRAME_RATE = SAMPLE_RATE // HOP  # 50 frames per second
SEGMENT_FRAMES = 256  # frames per generated segment (and per context)
SEGMENT_SAMPLES = SEGMENT_FRAMES * HOP  # 81 920 samples
SEGMENT_SECONDS = SEGMENT_SAMPLES / SAMPLE_RATE  # 5.12 s
CONTEXT_FRAMES = SEGMENT_FRAMES  # the context encoder sees the previous full segment
# When encoding real audio, the original computes the STFT over a segment plus this many following
# frames and keeps the first SEGMENT_FRAMES, so the last frames' windows see real audio rather than
# the zero padding of pad_end (avoids "audible pops").
ADDITIONAL_FRAMES_FOR_ENCODING = 16


def _check_constants() -> None:
    # Not asserts: these must hold under `python -O` too.
    checks = {
        "SAMPLE_RATE is a multiple of HOP": SAMPLE_RATE % HOP == 0,
        "HOP <= WIN <= N_FFT": HOP <= WIN <= N_FFT,
        "FRAME_RATE == 50": FRAME_RATE == 50,
        "SEGMENT_SAMPLES == 81920": SEGMENT_SAMPLES == 81_920,
        "SEGMENT_SECONDS == 5.12": math.isclose(SEGMENT_SECONDS, 5.12),
        "F_MIN < F_MAX <= Nyquist": F_MIN < F_MAX <= SAMPLE_RATE / 2,
        "SCALE_MIN < SCALE_MAX": SCALE_MIN < SCALE_MAX,
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        raise RuntimeError(f"inconsistent signal constants: {failed}")


_check_constants()

# File formats write_audio() knows: extension -> (soundfile format, default subtype).
AUDIO_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the hidden temporaries an earlier, killed run left for output ``path``
    (``.NAME.<8 hex>.spool.wav``, ``.NAME.<8 hex>.tmp``, ``.NAME.<pid>.tmp.npy``): SIGKILL gives no
    process the chance to clean up, so the next run writing the same output does. Returns them."""
    import glob
    import re

    pattern = re.compile(
        rf"^\.{re.escape(path.name)}\.([0-9a-f]{{8}}\.(spool\.wav|tmp)|[0-9]+\.tmp\.npy)$"
    )
    removed = []
    if path.parent.is_dir():
        for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if pattern.match(p.name):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


class ClippingWarning(UserWarning):
    """write_audio() scaled the signal down because its peak exceeded 0 dBFS."""


# ---- Log-mel front end ---------------------------------------------------------------------------


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    return MEL_HIGH_Q * torch.log1p(f / MEL_BREAK_HZ)


@functools.lru_cache(maxsize=1)
def _mel_filterbank_f64() -> torch.Tensor:
    # tf.signal.linear_to_mel_weight_matrix(N_MELS, N_FREQS, SAMPLE_RATE, F_MIN, F_MAX), in float64.
    freqs = torch.linspace(0.0, SAMPLE_RATE / 2, N_FREQS, dtype=torch.float64)[1:]  # drop DC
    bins_mel = _hz_to_mel(freqs)[:, None]  # (512, 1)
    lo_hi = torch.tensor([F_MIN, F_MAX], dtype=torch.float64)
    edges = torch.linspace(*_hz_to_mel(lo_hi).tolist(), N_MELS + 2, dtype=torch.float64)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]  # (128,) each
    rising = (bins_mel - lower) / (center - lower)
    falling = (upper - bins_mel) / (upper - center)
    weights = torch.minimum(rising, falling).clamp_min(0.0)  # (512, 128), triangles in mel
    return torch.cat([torch.zeros(1, N_MELS, dtype=torch.float64), weights])  # DC row = 0


@functools.lru_cache(maxsize=16)
def _mel_filterbank_cached(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _mel_filterbank_f64().to(device=device, dtype=dtype)


def mel_filterbank(
    device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """TF's ``linear_to_mel_weight_matrix`` for these constants, computed in float64 then cast.

    Returns a cached tensor of shape (N_FREQS, N_MELS) = (513, 128) — do not modify it in place.
    ``mel = magnitude @ mel_filterbank()``.
    """
    return _mel_filterbank_cached(torch.device(device or "cpu"), dtype)


@functools.lru_cache(maxsize=16)
def _hann_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Periodic Hann, as tf.signal.hann_window's default: 0.5 - 0.5 cos(2 pi n / WIN).
    return torch.hann_window(WIN, periodic=True, dtype=torch.float64).to(device, dtype)


def num_frames(num_samples: int) -> int:
    """Feature frames for ``num_samples`` samples: ceil(num_samples / HOP) (pad_end framing)."""
    return -(-num_samples // HOP)


def log_mel(audio: torch.Tensor, *, compute_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Log-mel features of 16 kHz audio, exactly as the original TensorFlow front end.

    Args:
        audio: float tensor (..., N), samples at SAMPLE_RATE in [-1, 1]; any leading batch dims,
            any device.
        compute_dtype: None (default: float64, or float32 on MPS, which has no float64), float32
            or float64. float32 rounding in the FFT reaches ~5e-4 (log units) in mel bands ~80 dB
            below the frame's peak (TF's own float32 features deviate from exact by the same
            order); float64 is exact to ~1e-7 at about twice the CPU cost, which is small next to
            the model. Autocast is disabled inside, so half-precision inputs or an enclosing
            autocast never lower the precision.

    Returns:
        float32 tensor (..., ceil(N / HOP), N_MELS) of natural-log mel magnitudes in
        [LOG_FLOOR, ln 1e8]. Frame k covers samples [HOP*k, HOP*k + WIN), zero-padded at the end.
    """
    audio = torch.as_tensor(audio)
    if not (audio.is_floating_point() and audio.ndim >= 1):
        raise TypeError(f"log_mel expects a float tensor (..., N), got {audio.dtype} {audio.shape}")
    if compute_dtype is None:
        compute_dtype = torch.float32 if audio.device.type == "mps" else torch.float64
    if compute_dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"compute_dtype must be torch.float32 or torch.float64, not {compute_dtype}"
        )
    frames = num_frames(audio.shape[-1])
    if frames == 0:
        return audio.new_zeros((*audio.shape[:-1], 0, N_MELS), dtype=torch.float32)
    with torch.autocast(audio.device.type, enabled=False):
        x = audio.to(compute_dtype)
        x = torch.nn.functional.pad(x, (0, (frames - 1) * HOP + WIN - x.shape[-1]))
        x = x.unfold(-1, WIN, HOP) * _hann_window(x.device, compute_dtype)  # (..., F, WIN)
        magnitude = torch.fft.rfft(x, n=N_FFT).abs()  # (..., F, N_FREQS)
        mel = magnitude @ mel_filterbank(x.device, compute_dtype)  # (..., F, N_MELS)
        return mel.clamp(LOG_FLOOR_CLIP, LOG_CEIL_CLIP).log().to(torch.float32)


def scale(mel: torch.Tensor) -> torch.Tensor:
    """Log-mel features → network range: clip to [SCALE_MIN, SCALE_MAX], map linearly to [-1, 1]."""
    zero_one = (mel.clamp(SCALE_MIN, SCALE_MAX) - SCALE_MIN) / (SCALE_MAX - SCALE_MIN)
    return zero_one * 2.0 - 1.0


def unscale(x: torch.Tensor) -> torch.Tensor:
    """Network range → log-mel features; the exact inverse of scale(), without clipping (as DIFF)."""
    zero_one = (x + 1.0) / 2.0
    return zero_one * (SCALE_MAX - SCALE_MIN) + SCALE_MIN


# ---- Files and resampling ------------------------------------------------------------------------


def resample(audio: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Resample (..., N) audio from ``from_sr`` to ``to_sr`` Hz with soxr (HQ).

    Output length is round(N * to_sr / from_sr); float32 on the input's device.
    """
    audio = torch.as_tensor(audio)
    if from_sr == to_sr:
        return audio.to(torch.float32)
    import soxr

    flat = audio.detach().reshape(-1, audio.shape[-1]).to("cpu", torch.float32)  # (C, N)
    out = soxr.resample(flat.numpy().T, from_sr, to_sr)  # soxr wants (N, C)
    out = torch.from_numpy(out.T.copy()).to(audio.device)
    return out.reshape(*audio.shape[:-1], out.shape[-1])


def read_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Read an audio file as float32 mono at ``sample_rate``: (N,) tensor, channels averaged."""
    import soundfile as sf

    data, file_sr = sf.read(os.fspath(path), dtype="float32", always_2d=True)  # (N, C)
    mono = torch.from_numpy(data.mean(axis=1, dtype="float32"))
    return resample(mono, file_sr, sample_rate)


def _to_frames_first(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    # (N,) or (C, N) channels-first → soundfile's (N,) or (N, C), float32 on the CPU.
    import numpy as np

    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    data = np.asarray(audio, dtype=np.float32)
    if data.ndim not in (1, 2):
        raise ValueError(f"write_audio expects (N,) or (channels, N) audio, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("audio contains NaN or infinite samples")
    return data.T if data.ndim == 2 else data


def write_audio(
    path: str | os.PathLike,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    subtype: str | None = None,
    on_clip: Literal["scale", "clip", "error"] = "scale",
) -> Path:
    """Write (N,) or (channels, N) float audio atomically; the format follows the extension.

    Extensions: .wav (default PCM_16), .flac (PCM_16), .ogg (Vorbis); ``subtype`` overrides the
    default (e.g. "PCM_24", "FLOAT"). Samples beyond ±1 are handled by ``on_clip``: "scale" (default)
    scales the whole signal down to 0 dBFS and emits a ClippingWarning, "clip" hard-clips, "error"
    raises ValueError. The file is written to a temporary name in the target folder and renamed, so
    an interrupted write (any exception, KeyboardInterrupt included) leaves no partial file behind.
    Returns the written path.
    """
    import soundfile as sf

    path = Path(path)
    if path.suffix.lower() not in AUDIO_FORMATS:
        raise ValueError(
            f"unsupported audio extension {path.suffix!r} for {path}; use one of "
            + ", ".join(AUDIO_FORMATS)
        )
    if on_clip not in ("scale", "clip", "error"):
        raise ValueError(f"on_clip must be 'scale', 'clip' or 'error', not {on_clip!r}")
    fmt, default_subtype = AUDIO_FORMATS[path.suffix.lower()]
    subtype = (subtype or default_subtype).upper()
    if not sf.check_format(fmt, subtype):
        raise ValueError(f"subtype {subtype!r} is not valid for {fmt} files ({path.name})")

    data = _to_frames_first(audio)
    peak = float(abs(data).max()) if data.size else 0.0
    if peak > 1.0:
        if on_clip == "scale":
            data = data / peak
            warnings.warn(
                f"{path.name}: peak {20 * math.log10(peak):+.2f} dBFS, scaled down to 0 dBFS",
                ClippingWarning,
                stacklevel=2,
            )
        elif on_clip == "clip":
            data = data.clip(-1.0, 1.0)
        else:
            raise ValueError(f"{path.name}: peak {20 * math.log10(peak):+.2f} dBFS exceeds 0 dBFS")

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            sf.write(f, data, sample_rate, format=fmt, subtype=subtype)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# ---- Gain, peak and loudness ---------------------------------------------------------------------


def db_to_gain(db: float) -> float:
    """Decibels → linear amplitude factor."""
    return 10.0 ** (db / 20.0)


def peak_db(audio: torch.Tensor) -> float:
    """Sample peak in dBFS (-inf for silence)."""
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def apply_gain(audio: torch.Tensor, db: float) -> torch.Tensor:
    """Multiply by the gain of ``db`` decibels."""
    return audio * db_to_gain(db)


def normalize_peak(audio: torch.Tensor, peak_dbfs: float = -1.0) -> torch.Tensor:
    """Scale so that the sample peak is ``peak_dbfs`` dBFS; silence is returned unchanged."""
    current = peak_db(audio)
    return audio if current == -math.inf else apply_gain(audio, peak_dbfs - current)


def prevent_clipping(audio: torch.Tensor, ceiling: float = 1.0) -> tuple[torch.Tensor, bool]:
    """Scale the whole signal down so its peak is ``ceiling`` (default 0 dBFS) if it exceeds it.

    Returns ``(audio, was_scaled)``; unlike hard clipping this adds no distortion, and the caller can
    report that the level changed.
    """
    peak = float(audio.abs().max()) if audio.numel() else 0.0
    return (audio * (ceiling / peak), True) if peak > ceiling else (audio, False)


def _k_weighting_response(n_fft: int, sample_rate: int) -> torch.Tensor:
    # BS.1770 K-weighting = high-shelf (+4 dB above ~1.7 kHz) then RLB high-pass (~38 Hz), designed
    # per sample rate with libebur128's parameters, which reproduce the ITU-R 48 kHz coefficients.
    # Returns the complex frequency response on the rfft grid of n_fft points, float64.
    k = math.tan(math.pi * 1681.974450955533 / sample_rate)
    q = 0.7071752369554196
    vh = 10.0 ** (3.999843853973347 / 20.0)
    vb = vh**0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf_b = [
        (vh + vb * k / q + k * k) / a0,
        2.0 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
    ]
    shelf_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]
    k = math.tan(math.pi * 38.13547087602444 / sample_rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    hp_b = [1.0, -2.0, 1.0]
    hp_a = [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]

    z1 = torch.exp(-1j * 2 * math.pi * torch.arange(n_fft // 2 + 1, dtype=torch.float64) / n_fft)

    def biquad(b: list[float], a: list[float]) -> torch.Tensor:
        return (b[0] + b[1] * z1 + b[2] * z1**2) / (a[0] + a[1] * z1 + a[2] * z1**2)

    return biquad(shelf_b, shelf_a) * biquad(hp_b, hp_a)


def _k_weight(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    # Apply the K-weighting biquads to (C, N) float64 audio without scipy: overlap-add of chunks
    # filtered in the frequency domain. Each chunk's output keeps a half-second tail, which holds the
    # filters' impulse responses (time constants of a few ms) to well below 1e-12, so this equals
    # lfilter; power-of-two FFTs of at most 2**19 points bound time and memory for long files.
    n, tail = x.shape[-1], sample_rate // 2
    n_fft = min(1 << 19, 1 << (n + tail - 1).bit_length())
    hop = n_fft - tail
    response = _k_weighting_response(n_fft, sample_rate)
    out = x.new_zeros(x.shape[0], n + n_fft)
    for start in range(0, n, hop):
        chunk = torch.fft.rfft(x[:, start : start + hop], n=n_fft)
        out[:, start : start + n_fft] += torch.fft.irfft(chunk * response, n=n_fft)
    return out[:, :n]


def loudness_lufs(audio: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> float:
    """Integrated loudness (ITU-R BS.1770-4) of (N,) mono or (channels, N) audio, in LUFS.

    K-weighted mean square over 400 ms blocks with 75 % overlap, absolute gate -70 LUFS, relative
    gate -10 LU; all channels weighted 1.0 (no surround weights). A signal shorter than one block is
    measured as a single block. Returns -inf for silence.
    """
    x = torch.as_tensor(audio).detach().to("cpu", torch.float64)
    x = x.reshape(-1, x.shape[-1])  # (C, N)
    n = x.shape[-1]
    if n == 0:
        return -math.inf
    weighted = _k_weight(x, sample_rate)
    block, step = round(0.4 * sample_rate), round(0.1 * sample_rate)
    if n < block:
        power = weighted.square().mean(-1, keepdim=True)  # (C, 1)
    else:
        power = weighted.square().unfold(-1, block, step).mean(-1)  # (C, blocks)
    power = power.sum(0)  # channel weights 1.0

    def lufs(p: torch.Tensor) -> torch.Tensor:
        return -0.691 + 10.0 * torch.log10(p)

    above_absolute = lufs(power) > -70.0
    if not above_absolute.any():
        return -math.inf
    relative_gate = lufs(power[above_absolute].mean()) - 10.0
    return float(lufs(power[above_absolute & (lufs(power) > relative_gate)].mean()))


def normalize_loudness(
    audio: torch.Tensor, sample_rate: int = SAMPLE_RATE, target_lufs: float = -16.0
) -> torch.Tensor:
    """Scale to an integrated loudness of ``target_lufs`` (BS.1770-4); silence is unchanged.

    The result may peak above 0 dBFS (loud targets, very dynamic material): write_audio() scales it
    down, or call prevent_clipping() first to know.
    """
    current = loudness_lufs(audio, sample_rate)
    return audio if current == -math.inf else apply_gain(audio, target_lufs - current)


# ---- Streaming file output -----------------------------------------------------------------------


WRITE_CEILING = 0.999  # -0.009 dBFS: a full-scale 1.0 would overflow 16-bit PCM in libsndfile


@dataclasses.dataclass
class WriteReport:
    """What AudioFileWriter did to the level of a file."""

    path: Path
    seconds: float
    gain_db: float  # total gain applied (normalisation + user gain − anti-clipping)
    peak_db: float  # sample peak of the written file, dBFS
    scaled_to_avoid_clipping: bool  # True when the requested gain would have clipped


class AudioFileWriter:
    """Streams mono float audio at SAMPLE_RATE into an audio file, atomically and without clipping.

    Chunks are resampled on the fly (soxr stream) and spooled to a float32 temporary file in the
    target folder; `close()` applies the gain (peak or loudness normalisation, then ``gain_db``),
    scales the whole file down if it would clip (never hard-clips), writes the final format to a
    second temporary file and renames it into place. Any exception (or `abort()`) removes both
    temporaries, so no partial output is ever left at ``path``. Memory stays flat except for
    ``normalize="loudness"``, which reads the spooled audio back once to measure it.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_rate: int = SAMPLE_RATE,
        *,
        normalize: Literal["none", "peak", "loudness"] = "none",
        gain_db: float = 0.0,
        peak_target_db: float = -1.0,
        loudness_target: float = -16.0,
        subtype: str | None = None,
    ) -> None:
        import soundfile as sf

        self.path = Path(path)
        ext = self.path.suffix.lower()
        if ext not in AUDIO_FORMATS:
            raise ValueError(
                f"unsupported audio extension {self.path.suffix!r} for {self.path.name}; use one of "
                + ", ".join(AUDIO_FORMATS)
            )
        if normalize not in ("none", "peak", "loudness"):
            raise ValueError(f"normalize must be none, peak or loudness, not {normalize!r}")
        self.format, default_subtype = AUDIO_FORMATS[ext]
        self.subtype = (subtype or default_subtype).upper()
        self.sample_rate, self.normalize, self.gain_db = sample_rate, normalize, gain_db
        self.peak_target_db, self.loudness_target = peak_target_db, loudness_target
        self._peak = 0.0
        self._frames = 0
        self.report: WriteReport | None = None  # set by close()
        remove_stale_temporaries(self.path)
        self._spool_path = self.path.with_name(
            f".{self.path.name}.{uuid.uuid4().hex[:8]}.spool.wav"
        )
        self._spool = sf.SoundFile(
            self._spool_path, "w", samplerate=sample_rate, channels=1, format="WAV", subtype="FLOAT"
        )
        self._resampler = None
        if sample_rate != SAMPLE_RATE:
            import soxr

            self._resampler = soxr.ResampleStream(SAMPLE_RATE, sample_rate, 1, dtype="float32")

    def write(self, chunk: torch.Tensor | np.ndarray) -> None:
        """Append mono samples at SAMPLE_RATE (1-D)."""
        import numpy as np

        data = np.asarray(
            chunk.detach().cpu().float().numpy() if isinstance(chunk, torch.Tensor) else chunk,
            dtype=np.float32,
        ).reshape(-1)
        if not np.isfinite(data).all():
            raise ValueError(f"{self.path.name}: audio contains NaN or infinite samples")
        if self._resampler is not None:
            data = self._resampler.resample_chunk(data)
        self._put(data)

    def _put(self, data: np.ndarray) -> None:
        if data.size:
            self._peak = max(self._peak, float(abs(data).max()))
            self._spool.write(data)
            self._frames += data.size

    def close(self) -> WriteReport:
        """Finish: level, encode, rename into place. Returns what was done to the level."""
        import numpy as np
        import soundfile as sf

        try:
            if self._resampler is not None:
                self._put(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._spool.close()
            gain = self.gain_db
            if self.normalize == "peak" and self._peak > 0:
                gain += self.peak_target_db - 20 * math.log10(self._peak)
            elif self.normalize == "loudness":
                data, _ = sf.read(self._spool_path, dtype="float32")
                lufs = loudness_lufs(torch.from_numpy(data), self.sample_rate)
                del data
                if lufs != -math.inf:
                    gain += self.loudness_target - lufs
            factor = db_to_gain(gain)
            clipped = self._peak * factor > WRITE_CEILING
            if clipped:  # scale the whole file down instead of clipping it
                factor = WRITE_CEILING / self._peak
                gain = 20 * math.log10(factor)
            final = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with (
                    sf.SoundFile(self._spool_path) as src,
                    sf.SoundFile(
                        final,
                        "w",
                        samplerate=self.sample_rate,
                        channels=1,
                        format=self.format,
                        subtype=self.subtype,
                    ) as dst,
                ):
                    for block in src.blocks(blocksize=1 << 18, dtype="float32"):
                        dst.write(block * factor)
                os.replace(final, self.path)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
        finally:
            self.abort()
        peak = self._peak * factor
        self.report = WriteReport(
            self.path,
            self._frames / self.sample_rate,
            gain,
            20 * math.log10(peak) if peak > 0 else -math.inf,
            clipped,
        )
        return self.report

    def abort(self) -> None:
        """Drop everything written so far (the destination is never touched)."""
        if not self._spool.closed:
            self._spool.close()
        self._spool_path.unlink(missing_ok=True)

    def __enter__(self) -> AudioFileWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif self.report is None:
            self.close()
