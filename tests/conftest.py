"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared exists beside the project on our machines and in CI, not in a user's clone.
SHARED = REPO.parent / "shared"
SHARED_MIDI = SHARED / "midi"


@pytest.fixture(scope="session")
def shared_midi() -> Path:
    if not SHARED_MIDI.is_dir():
        pytest.skip("../shared/midi is absent (only on project machines and in CI)")
    return SHARED_MIDI


@pytest.fixture(scope="session")
def paired(tmp_path_factory) -> Path:
    """A paired folder: sub/song.mid + sub/song.wav (helpers.additive), and a MIDI file alone."""
    import soundfile as sf
    from helpers import SONG, additive, make_midi

    from midisynth import audio

    root = tmp_path_factory.mktemp("paired")
    (root / "sub").mkdir()
    make_midi(root / "sub" / "song.mid", SONG)
    sf.write(root / "sub" / "song.wav", additive(SONG, 10.0), audio.SAMPLE_RATE)
    make_midi(root / "lonely.mid", SONG)  # no audio beside it: not a pair
    return root


@pytest.fixture(scope="session")
def piece(paired):
    """The paired song as a cached piece (``cache.Piece``: whole log-mel + notes)."""
    from midisynth import cache

    [(mid, wav)] = cache.paired_files(paired)
    return cache.synthesize_piece(cache.Job("paired/sub/song.mid", "paired", str(mid), str(wav)))


def _extended_attention_mask(self, attention_mask, input_shape=None, dtype=None):
    """transformers 4's ModuleUtilsMixin.get_extended_attention_mask (encoder case), removed in
    transformers 5 but still called by diffusers' spectrogram-diffusion encoders."""
    import torch

    dtype = self.dtype if dtype is None else dtype
    ext = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - ext) * torch.finfo(dtype).min


@pytest.fixture(scope="session")
def diffusers_sd():
    """diffusers' spectrogram_diffusion package, with the transformers-5 shim applied (tests only)."""
    sd = pytest.importorskip("diffusers.pipelines.deprecated.spectrogram_diffusion")
    with pytest.MonkeyPatch.context() as mp:
        for cls in (sd.SpectrogramNotesEncoder, sd.SpectrogramContEncoder):
            if not hasattr(cls, "get_extended_attention_mask"):
                mp.setattr(
                    cls, "get_extended_attention_mask", _extended_attention_mask, raising=False
                )
        yield sd


@pytest.fixture(scope="session")
def tiny_frame_folder(tmp_path_factory) -> Path:
    """A tiny FrameNet with random weights, saved as a midisynth folder (as a trained one is)."""
    import torch

    from midisynth import weights
    from midisynth.framenet import build_model
    from midisynth.model import FrameConfig, ModelConfig

    cfg = FrameConfig(d_model=32, prior_layers=2, denoise_layers=2, context_layers=1, note_dim=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(ModelConfig(prediction_type="v_prediction", frame=cfg))
        # Untrained output layers are zero; give them weights so outputs depend on the inputs.
        for p in model.parameters():
            if p.dim() >= 2 and not p.any():
                torch.nn.init.normal_(p, std=0.05)
    sampling = {"sampler": "ddim-cosine", "steps": 3, "start": 0.5}
    dst = tmp_path_factory.mktemp("models") / "tiny-frame"
    weights.save_model(
        model, dst, name="tiny-frame", program_map="identity", extra={"sampling": sampling}
    )
    return dst


@pytest.fixture(scope="session")
def tiny_frame(tiny_frame_folder):
    from midisynth import weights

    return weights.load_model(tiny_frame_folder)
