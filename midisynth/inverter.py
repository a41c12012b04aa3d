"""Log-mel → waveform: the official SoundStream inverter (ONNX), Griffin-Lim (``griffinlim.py``), the
trained vocoder (``vocoder.py``), and streaming joins.

Every inverter maps unscaled log-mel features [T, 128] (natural-log units, spec §2) to mono float32
audio [T·320] at 16 kHz. `StreamingInverter` turns any of them into a segment-by-segment inverter
whose joins are click-free: each chunk is inverted with left context from the previous one and the
seam is crossfaded, so memory stays flat in song length.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import torch

from . import audio
from .checkpoint import BUNDLED_DIR
from .extras import pip_install
from .griffinlim import GriffinLim, InverterError

DEFAULT_VOCODER = "vocoder-p"  # weights/<this>: what "auto" picks when it is shipped


class Inverter(Protocol):
    """mel [T, 128] log-mel (feature units) → audio [T·HOP] float32 at `audio.SAMPLE_RATE`."""

    name: str

    def __call__(
        self, mel: torch.Tensor, init_audio: torch.Tensor | None = None
    ) -> torch.Tensor: ...


def onnx_providers(device: str | torch.device, available: list[str]) -> list[Any]:
    """onnxruntime execution providers for a model on ``device``: CUDA first when the model is on
    a CUDA device and this onnxruntime has it (``onnxruntime-gpu``), always the CPU after it (the
    fallback onnxruntime takes for what CUDA cannot run, or when the CUDA libraries fail to load).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": dev.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxInverter:
    """The official SoundStream mel decoder (`melgan/model.onnx`), run with onnxruntime.

    Input ``input_features`` float32 [B, T, 128] unscaled log-mel; first output [B, T·320] at 16 kHz.
    """

    name = "soundstream-onnx"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InverterError(
                f"the SoundStream inverter needs onnxruntime: {pip_install('onnx')} "
                "(or use --inverter griffin-lim)"
            ) from None
        path = Path(path)
        if not path.is_file():
            raise InverterError(f"inverter file missing: {path}")
        self.providers = onnx_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), providers=self.providers)
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own zoo of errors
            raise InverterError(
                f"{path}: cannot load ONNX inverter ({str(e).splitlines()[0]})"
            ) from None

    def __call__(self, mel: torch.Tensor, init_audio: torch.Tensor | None = None) -> torch.Tensor:
        feats = mel.detach().float().cpu().numpy()[None]  # (1, T, 128)
        out = self.session.run(None, {"input_features": feats})[0]
        return torch.from_numpy(out.reshape(-1).copy()).to(mel.device)


class StreamingInverter:
    """Inverts a song segment by segment with click-free joins.

    Each chunk is inverted together with the last `context` frames of the previous chunk; the last
    `crossfade` frames of a chunk's audio are held back and crossfaded (equal power) with the same
    span re-synthesised by the next chunk. Emits exactly 320 samples per pushed frame in total.

    An inverter with a finite reach (``receptive_frames`` = R: its frame k depends on mel frames
    k−R…k+R only, as a convolutional vocoder that predicts phase) is streamed exactly instead:
    audio is emitted only once the R frames after it are known, computed with R + 1 frames of
    left context, so the streamed song equals the whole song inverted at once (no seam at all,
    up to float rounding) and the crossfade is not used.
    """

    def __init__(self, inverter: Inverter, context: int = 16, crossfade: int = 4):
        if not 0 < crossfade <= context:
            raise ValueError("need 0 < crossfade <= context")
        self.inverter = inverter
        reach = getattr(inverter, "receptive_frames", None)
        self.reach: int | None = int(reach) if reach is not None else None
        self._frames: torch.Tensor | None = None  # exact mode: mel frames still needed
        self._first = 0  # exact mode: song frame index of _frames[0]
        self._done = 0  # exact mode: 320-sample blocks emitted
        self.context = context
        self.crossfade = crossfade
        self._mel_tail: torch.Tensor | None = None  # (≤context, 128) previous frames
        self._audio_tail: torch.Tensor | None = None  # audio of those frames, as emitted/held
        self._held: torch.Tensor | None = None  # (crossfade·HOP,) not yet emitted

    def _exact(self, mel: torch.Tensor | None) -> torch.Tensor:
        """Exact mode: append ``mel`` (None = the song ended) and return the newly final blocks.
        Block j (samples 320j…320j+320) overlap-adds frames j−1 and j, which read mel frames
        j−1−R … j+R; it is final once frame j+R is known, or at the end of the song."""
        r = self.reach
        if mel is not None:
            self._frames = mel if self._frames is None else torch.cat([self._frames, mel])
        if self._frames is None:
            return torch.zeros(0)
        known = self._first + self._frames.shape[0]
        final = known if mel is None else known - r  # blocks [done, final) become final
        if final <= self._done:
            return self._frames.new_zeros(0)
        lo = max(self._first, self._done - 1 - r)  # first mel frame block `done` reads
        out = self.inverter(self._frames[lo - self._first :])
        ready = out[(self._done - lo) * audio.HOP : (final - lo) * audio.HOP]
        self._done = final
        keep = max(self._first, self._done - 1 - r)  # frames the next blocks will read
        self._frames, self._first = self._frames[keep - self._first :], keep
        if mel is None:
            self._frames, self._first, self._done = None, 0, 0
        return ready

    def push(self, mel: torch.Tensor) -> torch.Tensor:
        """mel [T, 128] → the audio that is final so far (1-D float32)."""
        if self.reach is not None:
            return self._exact(mel)
        hop, xf = audio.HOP, self.crossfade * audio.HOP
        if self._mel_tail is None:
            out = self.inverter(mel)
            ready = out[:-xf]
        else:
            c = self._mel_tail.shape[0]
            out = self.inverter(torch.cat([self._mel_tail, mel]), init_audio=self._audio_tail)
            start = c * hop - xf
            fade = torch.linspace(0, 1, xf, device=out.device)
            mixed = self._held * torch.cos(fade * math.pi / 2) + out[start : c * hop] * torch.sin(
                fade * math.pi / 2
            )
            ready = torch.cat([mixed, out[c * hop : -xf]])
            out = out[c * hop :]
        self._held = out[-xf:]
        frames = torch.cat([self._mel_tail, mel]) if self._mel_tail is not None else mel
        self._mel_tail = frames[-self.context :]
        tail_audio = (
            out if out.numel() >= self.context * hop else torch.cat([self._audio_tail, out])
        )
        self._audio_tail = tail_audio[-self.context * hop :]
        return ready

    def flush(self) -> torch.Tensor:
        """The held-back audio at the end of the song."""
        if self.reach is not None:
            return self._exact(None)
        held = self._held if self._held is not None else torch.zeros(0)
        self._mel_tail = self._audio_tail = self._held = None
        return held


def check_runtime(kind: str) -> None:
    """InverterError now (before any download or model load) if inverter ``kind`` cannot run."""
    import importlib.util

    if kind == "soundstream-onnx" and importlib.util.find_spec("onnxruntime") is None:
        raise InverterError(
            f"the SoundStream inverter needs onnxruntime: {pip_install('onnx')} "
            "(or use --inverter griffin-lim)"
        )


def load_inverter(spec: dict[str, Any] | str, device: str | torch.device = "cpu") -> Inverter:
    """Build an inverter from a model's config entry (``{"type": ..., "path": ...}``) or a name.

    Names: ``griffin-lim``; ``soundstream-onnx`` needs ``path``; ``vocoder`` (a neural inverter
    trained here, ``vocoder.py``) needs ``path``, its folder; ``auto``: the shipped trained inverter
    (``weights/vocoder-p``, which predicts phase) when present, else Griffin-Lim. A name that is
    none of these may be a vocoder folder: a path, or a folder of the repository's ``weights/``.
    """
    if isinstance(spec, str):
        spec = {"type": spec}
    kind = spec.get("type", "griffin-lim")
    if kind == "auto":  # the trained inverter shipped in weights/, else the dependency-free one
        shipped = (BUNDLED_DIR / DEFAULT_VOCODER / "vocoder.json").is_file()
        kind = DEFAULT_VOCODER if shipped else "griffin-lim"
    if kind not in ("griffin-lim", "soundstream-onnx", "vocoder"):
        for folder in (Path(kind), BUNDLED_DIR / kind):
            if (folder / "vocoder.json").is_file():
                spec, kind = {"type": "vocoder", "path": str(folder)}, "vocoder"
                break
    if kind == "vocoder":
        from .vocoder import NeuralInverter, load_vocoder

        if "path" not in spec:
            raise InverterError("a vocoder inverter needs the folder of its weights")
        return NeuralInverter(load_vocoder(spec["path"]), device=device)
    if kind == "griffin-lim":
        return GriffinLim(iters=int(spec.get("iters", 32)), device=device)
    if kind == "soundstream-onnx":
        if "path" not in spec:
            raise InverterError("this model has no SoundStream inverter file; use griffin-lim")
        return OnnxInverter(spec["path"], device=device)
    raise InverterError(
        f"unknown inverter {kind!r}; choose griffin-lim, soundstream-onnx or a vocoder folder"
    )


def read_mel_file(path: str | Path) -> torch.Tensor:
    """A ``--mel-out`` file → mel [frames, 128] float32 (unscaled natural-log mel).

    InverterError (one line) for anything else: not an .npy file, wrong shape or dtype, NaN/inf.
    """
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise InverterError(f"mel file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise InverterError(f"{path}: not a NumPy .npy file ({str(e).splitlines()[0]})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise InverterError(f"{path}: an .npz archive, not a single .npy array")
    if arr.dtype.kind != "f":
        raise InverterError(f"{path}: dtype {arr.dtype}, expected float (as --mel-out writes)")
    if arr.ndim != 2 or arr.shape[1] != audio.N_MELS or arr.shape[0] == 0:
        raise InverterError(
            f"{path}: shape {tuple(arr.shape)}, expected [frames, {audio.N_MELS}] "
            "(unscaled log-mel, as --mel-out writes)"
        )
    mel = torch.from_numpy(np.array(arr, dtype=np.float32))
    if not bool(torch.isfinite(mel).all()):
        raise InverterError(f"{path}: contains NaN or infinite values")
    return mel


def invert_file(
    mel_path: str | Path,
    dst: str | Path,
    inverter: dict[str, Any] | str = "auto",
    *,
    sample_rate: int = audio.SAMPLE_RATE,
    normalize: str = "loudness",
    gain_db: float = 0.0,
    chunk_frames: int = audio.SEGMENT_FRAMES,
) -> Path:
    """Invert a mel file to audio, streamed ``chunk_frames`` at a time (the render loop's segments,
    so a render's ``--mel-out`` inverts to the render's own audio up to its last, shorter chunk,
    given the inverter that render used: ``auto``, the default, is frame-s's).
    The output is written atomically (nothing is left at ``dst`` on failure)."""
    mel = read_mel_file(mel_path)
    inv = StreamingInverter(load_inverter(inverter))
    writer = audio.AudioFileWriter(dst, sample_rate, normalize=normalize, gain_db=gain_db)
    n = mel.shape[0] * audio.HOP
    done = 0
    try:
        for i in range(0, mel.shape[0], chunk_frames):
            out = inv.push(mel[i : i + chunk_frames])
            writer.write(out[: n - done])
            done += min(out.numel(), n - done)
        writer.write(inv.flush()[: max(0, n - done)])
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return Path(dst)
