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
