"""The outside tools evaluation relies on, each behind a small class: FluidSynth for reference
audio, basic-pitch to transcribe notes, aisfx to embed audio (``evaluate.py`` describes the metrics
they serve).

Their packages (the ``eval`` extra, plus two wheels installed without their pinned dependencies) and
programs are looked up when a tool is made, with an error that says how to install them.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

from . import audio
from .metrics import _quiet, _require

REFERENCE_EXTS = (".wav", ".flac")
DEBIAN_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")  # fluid-soundfont-gm, MIT


class EvalError(RuntimeError):
    """A file or set-up that cannot be evaluated; the message is one line for users."""


# --------------------------------------------------------------------------------------------
# Transcription and embedding


class BasicPitch:
    """Audio → notes with basic-pitch 0.4.0's ONNX model (in its wheel), run with onnxruntime.

    Default thresholds (onset 0.5, frame 0.3, minimum note 127.7 ms, melodia trick). The input is
    resampled with soxr to 22 050 Hz and fed as an array (no file round-trip, no resampy).
    """

    def __init__(self) -> None:
        _require("onnxruntime", "the basic-pitch transcriber")
        bp = _require("basic_pitch", "transcription F1")
        with _quiet():
            self._inference = importlib.import_module("basic_pitch.inference")
            self._notes = importlib.import_module("basic_pitch.note_creation")
            self._c = importlib.import_module("basic_pitch.constants")
            path = bp.build_icassp_2022_model_path(bp.FilenameSuffix.onnx)
            self.model = self._inference.Model(path)

    def __call__(self, wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
        """Mono audio [n] → notes [k, 3] (onset s, offset s, MIDI pitch), sorted by onset."""
        c, inf = self._c, self._inference
        x = audio.resample(
            torch.as_tensor(wav, dtype=torch.float32), sample_rate, c.AUDIO_SAMPLE_RATE
        )
        x = x.numpy()
        n_overlap = 30  # frames, as basic_pitch.inference.run_inference
        overlap_len = n_overlap * c.FFT_HOP
        hop = c.AUDIO_N_SAMPLES - overlap_len
        padded = np.concatenate([np.zeros(overlap_len // 2, np.float32), x])
        out: dict[str, list] = {"note": [], "onset": [], "contour": []}
        with _quiet():
            for window, _ in inf.window_audio_file(padded, hop):
                for k, v in self.model.predict(window[None]).items():
                    out[k].append(v)
            unwrapped = {
                k: inf.unwrap_output(np.concatenate(v), len(x), n_overlap) for k, v in out.items()
            }
            _, events = self._notes.model_output_to_notes(
                unwrapped,
                onset_thresh=0.5,
                frame_thresh=0.3,
                min_note_len=int(np.round(127.70 / 1000 * (c.AUDIO_SAMPLE_RATE / c.FFT_HOP))),
                melodia_trick=True,
            )
        notes = np.asarray([(s, e, p) for s, e, p, *_ in events], np.float64).reshape(-1, 3)
        return notes[np.argsort(notes[:, 0], kind="stable")]


class AisfxEmbedder:
    """512-d embeddings of the aisfx CNN (Ma & Lerch, ISMIR 2022: "X-Sequential-CE", trained on
    sound-effects libraries; weights in the wheel, CC-BY-4.0), one per 100-frame block.

    Front end: the package's librosa path (44.1 kHz, peak-normalised, 96 HTK mel bands with unit-sum
    filters, power, log10(1e4·x + 1), min-max scaled by the paper's 9.4578), made time-major as the
    network expects; blocks of 100 frames (2.3 s) with 50 % overlap, a partial last block dropped.
    """

    name = "aisfx"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        aisfx_inference = _require("aisfx.inference", "the aisfx embedding")
        self._librosa = _require("librosa", "the aisfx embedding")
        from aisfx.models.cnn2d import EmbeddingNet

        self.c = aisfx_inference
        # The checkpoint is a pickled (state_dict, datasets) tuple: load it without executing code,
        # allowing only the numpy scalars its dataset table holds.
        np_core = getattr(np, "_core", None) or np.core
        allowed = [(np_core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype]
        allowed += [type(np.dtype(t)) for t in (np.int64, np.int32, np.float64)]
        with torch.serialization.safe_globals(allowed):
            state, _ = torch.load(
                aisfx_inference.get_path_modelWeights(), map_location="cpu", weights_only=True
            )
        prefix = "embedding_net."
        net = EmbeddingNet("max", 3, 1, 64)
        net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        self.net = net.eval().to(device)
        self.device = torch.device(device)

    def spectrogram(self, wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
        c, lr = self.c, self._librosa
        sr = int(c.SAMPLE_RATE)
        y = audio.resample(torch.as_tensor(wav, dtype=torch.float32), sample_rate, sr).numpy()
        y = y / (np.abs(y).max() or 1.0)
        spec = lr.feature.melspectrogram(
            y=y,
            sr=sr,
            n_fft=c.SPEC_BLOCK_LENGTH,
            hop_length=c.SPEC_HOP_LENGTH,
            win_length=c.SPEC_BLOCK_LENGTH,
            n_mels=c.MEL_BINS,
            fmin=c.F_MIN,
            fmax=c.F_MAX,
            htk=True,
            norm=1.0,
            power=2.0,
        )
        spec = np.log10(spec * 10000.0 + 1)
        return (spec / 9.457798957824707).T.astype(np.float32)  # (T, 96)

    def __call__(self, wav: np.ndarray, sample_rate: int = audio.SAMPLE_RATE) -> np.ndarray:
        """Mono audio [n] → embeddings [blocks, 512]."""
        from aisfx.preprocessing import blocking

        spec = self.spectrogram(wav, sample_rate)
        block = self.c.EMB_BLOCK_LENGTH
        blocks = blocking(spec, block, block // 2, drop_partial_block=True)
        with torch.inference_mode():
            emb = self.net(torch.as_tensor(blocks, dtype=torch.float32, device=self.device))
        return emb.cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# Reference audio


class FluidSynthReference:
    """Synthesize reference audio with the FluidSynth CLI and a General-MIDI SoundFont.

    The SoundFont is ``soundfont``, else $MIDISYNTH_SOUNDFONT, else Debian's FluidR3_GM
    (``apt-get install fluidsynth fluid-soundfont-gm``). Renders 16 kHz (stereo, read as mono).
    """

    def __init__(self, soundfont: str | os.PathLike | None = None, gain: float = 0.5):
        exe = shutil.which("fluidsynth")
        font = Path(soundfont or os.environ.get("MIDISYNTH_SOUNDFONT") or DEBIAN_SOUNDFONT)
        if exe is None:
            raise EvalError(
                "no reference audio and no FluidSynth to make it: put <name>.wav/.flac beside each "
                "MIDI file, or apt-get install fluidsynth fluid-soundfont-gm"
            )
        if not font.is_file():
            raise EvalError(
                f"SoundFont not found: {font}; set MIDISYNTH_SOUNDFONT=/path/to/font.sf2 "
                "or apt-get install fluid-soundfont-gm"
            )
        self.exe, self.soundfont, self.gain = exe, font, gain

    def __call__(self, midi: Path, dst: Path) -> Path:
        dst.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.exe, "-ni", "-q", "-g", str(self.gain), "-r", str(audio.SAMPLE_RATE)]
        cmd += ["-F", str(dst), str(self.soundfont), str(midi)]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            raise EvalError(f"FluidSynth failed on {midi.name}: {e}") from None
        if not dst.is_file():
            raise EvalError(f"FluidSynth wrote nothing for {midi.name}")
        return dst

    def __repr__(self) -> str:
        return f"FluidSynth ({self.soundfont.name})"


def find_reference(midi: Path) -> Path | None:
    """Audio with the MIDI file's stem beside it (.wav, then .flac), or None."""
    for ext in REFERENCE_EXTS:
        p = midi.with_suffix(ext)
        if p.is_file():
            return p
    return None
