"""The released model as published: the diffusers layout, fetched from the Hugging Face Hub and
converted once into a midisynth folder.

A folder in that layout (``model_index.json`` + ``notes_encoder/`` ``continuous_encoder/``
``decoder/`` with ``diffusion_pytorch_model.bin``) becomes a midisynth folder (``weights.py``:
safetensors + config.json) with strict key and shape checks; the sha256 of every source file is
kept as provenance, and the conversion is cached while its sources are unchanged. ``load_model``
calls ``download_official`` and ``ensure_midisynth_folder``; nothing else needs this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import (
    CONFIG_FILE,
    FORMAT,
    ModelError,
    cache_dir,
    check_state_dict,
    read_json,
    sha256_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import ModelConfig

SUBMODULES = ("notes_encoder", "continuous_encoder", "decoder")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.bin"
# Files of the official diffusers layout that midisynth needs (nothing else is downloaded).
OFFICIAL_FILES = (
    "model_index.json",
    *(f"{m}/config.json" for m in SUBMODULES),
    *(f"{m}/{DIFFUSERS_WEIGHTS}" for m in SUBMODULES),
    "scheduler/scheduler_config.json",
    "melgan/model.onnx",
)


def model_config_from_diffusers(notes: dict, cont: dict, dec: dict) -> ModelConfig:
    """ModelConfig from the three diffusers config.json files (values checked for consistency)."""
    from .model import ModelConfig

    for key in ("d_model", "num_heads", "d_kv", "d_ff"):
        vals = {notes[key], cont[key], dec[key]}
        if len(vals) != 1:
            raise ModelError(f"diffusers configs disagree on {key}: {sorted(vals)}")
    if notes.get("feed_forward_proj", "gated-gelu") != "gated-gelu":
        raise ModelError(f"unsupported feed_forward_proj {notes['feed_forward_proj']!r}")
    if notes["num_layers"] != cont["num_layers"]:
        raise ModelError("notes and context encoders have different depths (not supported)")
    return ModelConfig(
        d_model=dec["d_model"],
        num_heads=dec["num_heads"],
        d_kv=dec["d_kv"],
        d_ff=dec["d_ff"],
        num_encoder_layers=notes["num_layers"],
        num_decoder_layers=dec["num_layers"],
        vocab_size=notes["vocab_size"],
        max_tokens=notes["max_length"],
        input_dims=dec["input_dims"],
        targets_length=dec["targets_length"],
        context_length=cont["targets_context_length"],
        max_decoder_noise_time=float(dec["max_decoder_noise_time"]),
        dropout=float(dec.get("dropout_rate", 0.1)),
    )


def is_diffusers_layout(path: Path) -> bool:
    return (path / "model_index.json").is_file() or all(
        (path / m / "config.json").is_file() for m in SUBMODULES
    )


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise ModelError(f"{path}: weight file missing")
    try:
        # weights_only: the diffusers files are pickles; never execute code from them.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure here means a damaged file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{path}: damaged or truncated weight file ({msg})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a state dict")
    return state


def convert_diffusers(src: Path, dst: Path, *, name: str = "official") -> Path:
    """Convert a diffusers-layout folder into a midisynth folder at `dst` (atomically).

    Keys and shapes are checked strictly against midisynth's modules; the sha256 of every source
    file is recorded in the new config.json as provenance.
    """
    import torch
    from safetensors.torch import save_file

    from .model import SpectrogramDiffusion

    cfgs = {m: read_json(src / m / "config.json") for m in SUBMODULES}
    config = model_config_from_diffusers(
        cfgs["notes_encoder"], cfgs["continuous_encoder"], cfgs["decoder"]
    )
    with torch.device("meta"):
        model = SpectrogramDiffusion(config)
    merged: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for m in SUBMODULES:
        f = src / m / DIFFUSERS_WEIGHTS
        state = _torch_load(f)
        check_state_dict(getattr(model, m), state, f"{src.name}/{m}")
        sources[f"{m}/{DIFFUSERS_WEIGHTS}"] = sha256_file(f)
        merged.update({f"{m}.{k}": v.contiguous() for k, v in state.items()})
    scheduler = {}
    if (src / "scheduler" / "scheduler_config.json").is_file():
        scheduler = read_json(src / "scheduler" / "scheduler_config.json")
    inverter: dict[str, Any] = {"type": "auto"}  # no ONNX file: our trained inverter, else GL
    onnx = src / "melgan" / "model.onnx"

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        save_file(merged, str(tmp / "model.safetensors"))
        if onnx.is_file():
            shutil.copyfile(onnx, tmp / "melgan.onnx")
            sources["melgan/model.onnx"] = sha256_file(onnx)
            inverter = {"type": "soundstream-onnx", "file": "melgan.onnx"}
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        meta = {
            "format": FORMAT,
            "name": name,
            "description": "converted from the diffusers layout",
            "model": asdict(config),
            "codec": {"num_velocity_bins": 1},
            "program_map": "slakh",
            "inverter": inverter,
            "scheduler": scheduler,
            "files": files,
            "provenance": {"converted_from": str(src), "source_sha256": sources},
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if dst.exists():
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def download_official(repo_id: str, revision: str = "main") -> Path:
    """Download the needed files of a Hub repository in the diffusers layout (honours HF_HOME,
    HF_HUB_CACHE, HF_HUB_OFFLINE). Returns the local snapshot folder."""
    from huggingface_hub import hf_hub_download

    folder: Path | None = None
    try:
        for f in OFFICIAL_FILES:
            local = hf_hub_download(repo_id, f, revision=revision)
            folder = Path(local).parents[len(Path(f).parts) - 1]
    except Exception as e:  # noqa: BLE001 - offline, DNS, HTTP, missing file: all mean "not here"
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"cannot download {repo_id} ({why}); without network, download the repository "
            f"elsewhere (hf download {repo_id}) and pass its folder: "
            f"--model /path/to/music-spectrogram-diffusion"
        ) from None
    assert folder is not None
    return folder


def is_downloaded(repo_id: str, revision: str = "main") -> bool:
    """Whether every file ``download_official`` needs is in the local Hugging Face cache (no
    network: ``try_to_load_from_cache`` only reads the cache folder)."""
    from huggingface_hub import try_to_load_from_cache

    for f in OFFICIAL_FILES:
        hit = try_to_load_from_cache(repo_id, f, revision=revision)
        if not isinstance(hit, str):
            return False
    return True


def _converted_path(src: Path) -> Path:
    key = hashlib.sha256(str(src.resolve()).encode()).hexdigest()[:12]
    return cache_dir() / "converted" / f"{src.name}-{key}"


def ensure_midisynth_folder(name: str, path: Path) -> Path:
    """A diffusers folder is converted once (cached); a midisynth folder is returned as is."""
    if (path / CONFIG_FILE).is_file() and not is_diffusers_layout(path):
        return path
    if not is_diffusers_layout(path):
        raise ModelError(
            f"{path}: neither a midisynth model (config.json) nor a diffusers folder (model_index.json)"
        )
    dst = _converted_path(path)
    stamp = {m: (path / m / DIFFUSERS_WEIGHTS) for m in SUBMODULES}
    if (dst / CONFIG_FILE).is_file():
        meta = read_json(dst / CONFIG_FILE)
        # Reuse the conversion only while the sources are the files it was made from (size+mtime
        # is a cheap proxy; the full sha256 was checked at conversion time).
        if meta.get("provenance", {}).get("source_stat") == _stat(stamp.values()):
            return dst
    convert_diffusers(path, dst, name=name)
    meta = read_json(dst / CONFIG_FILE)
    meta["provenance"]["source_stat"] = _stat(stamp.values())
    (dst / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def _stat(paths: Iterable[Path]) -> list[list[int]]:
    out = []
    for p in paths:
        st = p.stat()
        out.append([st.st_size, int(st.st_mtime)])
    return out
