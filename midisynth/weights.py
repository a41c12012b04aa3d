"""Model registry, devices and dtypes, midisynth model folders (save, verify, load) and `load_model`.

midisynth's own checkpoint format is plain data: a folder with ``config.json`` (ModelConfig, codec,
program mapping, inverter, sha256 of every weight file, provenance) and one or more
``*.safetensors`` files (keys ``notes_encoder.*``, ``continuous_encoder.*``, ``decoder.*``, i.e. the
diffusers key names under a module prefix). A folder in the official diffusers layout
(``model_index.json`` + ``notes_encoder/`` ``continuous_encoder/`` ``decoder/`` with
``diffusion_pytorch_model.bin``) is accepted too and converted once, with strict key and shape checks;
that conversion and the Hub download are in ``official.py``.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import (
    BUNDLED_DIR,
    CONFIG_FILE,
    FORMAT,
    ModelError,
    check_state_dict,
    read_json,
    sha256_file,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import ModelConfig, SpectrogramDiffusion


@dataclass(frozen=True)
class RegistryEntry:
    """A model that `load_model` knows by name."""

    name: str
    description: str
    repo_id: str | None = None  # Hugging Face Hub repository (diffusers layout)
    # The Hub is unreachable from our build machines, so no commit hash could be read and checked;
    # "main" is pinned by name. Pass a commit hash with MIDISYNTH_OFFICIAL_REVISION to pin harder.
    revision: str = "main"
    local_dir: Path | None = None  # bundled folder in midisynth format
    builtin: str | None = None  # generated in-process (tests)
    # A bundled model that has not met its quality targets yet (config.json "preview": true):
    # labelled as such in `midisynth models`.
    preview: bool = False


REGISTRY: dict[str, RegistryEntry] = {
    "official": RegistryEntry(
        name="official",
        description="Released 'base with context' model (Hawthorne et al. 2022), 410 M params, "
        "downloaded from the Hugging Face Hub (1.7 GB)",
        repo_id="google/music-spectrogram-diffusion",
        revision=os.environ.get("MIDISYNTH_OFFICIAL_REVISION", "main"),
    ),
    "tiny-random": RegistryEntry(
        name="tiny-random",
        description="Tiny model with random weights, for tests and smoke runs (makes noise)",
        builtin="tiny",
    ),
}


def _register_bundled() -> None:
    """Every folder of `weights/` holding a midisynth config.json is a registered model."""
    if not BUNDLED_DIR.is_dir():
        return
    for d in sorted(BUNDLED_DIR.iterdir()):
        cfg = d / CONFIG_FILE
        if d.name == "official" or not cfg.is_file():
            continue
        preview = False
        try:
            meta = json.loads(cfg.read_text())
            desc, preview = meta.get("description", "bundled model"), bool(meta.get("preview"))
        except (OSError, ValueError):
            desc = "bundled model (unreadable config.json)"
        if preview:
            desc = f"PREVIEW (below its quality targets, see MODEL_CARD.md): {desc}"
        REGISTRY.setdefault(
            d.name, RegistryEntry(name=d.name, description=desc, local_dir=d, preview=preview)
        )


_register_bundled()


# The model used when none is named: bundled in `weights/`, so rendering needs no network. The
# released model stays one flag away (`--model official`); MIDISYNTH_MODEL names another default.
DEFAULT_MODEL = "frame-s"
DEFAULT_MODEL_ENV = "MIDISYNTH_MODEL"


def default_model_name() -> str:
    """The model used when none is given: ``$MIDISYNTH_MODEL`` (a name or a folder) if set, else
    the bundled ``DEFAULT_MODEL`` when its folder is present, else the official one."""
    env = os.environ.get(DEFAULT_MODEL_ENV, "").strip()
    if env:
        return env
    entry = REGISTRY.get(DEFAULT_MODEL)
    return DEFAULT_MODEL if entry is not None and entry.local_dir is not None else "official"


def availability(entry: RegistryEntry) -> str:
    """Where a registered model's weights are, without touching the network: "bundled",
    "built in", "downloaded" (in the Hugging Face cache) or "needs download"."""
    if entry.local_dir is not None:
        return "bundled"
    if entry.builtin is not None:
        return "built in"
    from .official import is_downloaded

    assert entry.repo_id is not None
    return "downloaded" if is_downloaded(entry.repo_id, entry.revision) else "needs download"


# --------------------------------------------------------------------------------------------
# Devices and dtypes (one place for render, train and evaluate)


def resolve_device(name: str) -> torch.device:
    """Device name → torch.device, for rendering, training and evaluation alike.

    'auto' → cuda, mps or cpu; an unavailable device falls back to the CPU with a warning.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        warnings.warn("CUDA is not available; using the CPU", stacklevel=2)
        return torch.device("cpu")
    if dev.type == "mps" and not (torch.backends.mps.is_available()):
        warnings.warn("MPS is not available; using the CPU", stacklevel=2)
        return torch.device("cpu")
    return dev


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with native bf16 matmuls (AVX512-BF16 / AMX), where bf16 is ~4× fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto | float32 | bfloat16 | float16 → torch dtype; auto = bf16 on CUDA and on CPUs fast at it."""
    import torch

    if name == "auto":
        if device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16()):
            return torch.bfloat16
        return torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; choose auto, float32 or bfloat16")
    return table[name]


# --------------------------------------------------------------------------------------------
# Checkpoint contents


@dataclass
class LoadedModel:
    """A model ready to render: the network plus everything needed to feed and invert it."""

    name: str
    model: SpectrogramDiffusion
    config: ModelConfig
    codec: dict[str, Any] = field(default_factory=dict)  # token codec settings (velocity bins…)
    program_map: str = "slakh"  # name of the program mapping in midisynth.programs
    inverter: dict[str, Any] = field(default_factory=lambda: {"type": "griffin-lim"})
    path: Path | None = None  # folder it came from (None for built-in models)
    meta: dict[str, Any] = field(default_factory=dict)  # the rest of config.json

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


def model_config_from_dict(d: dict[str, Any]) -> ModelConfig:
    from .model import ModelConfig

    known = {f for f in ModelConfig.__dataclass_fields__}
    unknown = set(d) - known
    if unknown:
        raise ModelError(f"config.json has unknown model settings: {', '.join(sorted(unknown))}")
    from .diffusion import PREDICTION_TYPES

    kind = d.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ModelError(
            f"config.json: unknown prediction_type {kind!r} ({' or '.join(PREDICTION_TYPES)})"
        )
    return ModelConfig(**d)


# --------------------------------------------------------------------------------------------
# Saving and loading midisynth folders


def save_shards(
    tensors: dict[str, torch.Tensor],
    folder: Path,
    prefix: str,
    *,
    shard_bytes: int = 15 * 2**20,
    single_file_name: bool = False,
) -> list[str]:
    """Write ``tensors`` into ``folder`` as safetensors shards of ≤ ``shard_bytes`` each (in order;
    a larger tensor gets a shard of its own), named ``PREFIX-00001-of-0000N.safetensors`` — or
    ``PREFIX.safetensors`` if ``single_file_name`` and one shard holds everything. The folder's
    old ``PREFIX*.safetensors`` files are deleted first. Returns the file names, in order.

    Shared by model weights (``save_model``) and training state (``train._save_state``); the
    15 MiB default keeps every file small enough to carry and to commit.
    """
    from safetensors.torch import save_file

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        n = v.numel() * v.element_size()
        if shards[-1] and size + n > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    for old in folder.glob(f"{prefix}*.safetensors"):
        old.unlink()
    if single_file_name and len(shards) == 1:
        names = [f"{prefix}.safetensors"]
    else:
        names = [
            f"{prefix}-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
        ]
    for fname, shard in zip(names, shards, strict=True):
        save_file(shard, str(folder / fname))
    return names


def save_model(
    model: SpectrogramDiffusion,
    dst: Path,
    *,
    name: str,
    description: str = "",
    codec: dict[str, Any] | None = None,
    program_map: str = "slakh",
    inverter: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    shard_bytes: int = 15 * 2**20,
) -> Path:
    """Write `model` as a midisynth folder: safetensors shards of ≤ `shard_bytes` + config.json."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    names = save_shards(
        model.state_dict(), dst, "model", shard_bytes=shard_bytes, single_file_name=True
    )
    meta = {
        "format": FORMAT,
        "name": name,
        "description": description,
        "model": asdict(model.config),
        "codec": codec or {"num_velocity_bins": 1},
        "program_map": program_map,
        "inverter": inverter or {"type": "griffin-lim"},
        "files": {f: sha256_file(dst / f) for f in names},
        **(extra or {}),
    }
    (dst / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def release_model(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    sampling: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
    preview: bool = False,
    inverter: dict[str, Any] | None = None,
) -> Path:
    """Copy a trained model folder to ``dst`` for shipping: the verified weight shards, config.json
    (minus the optimizer-state listing; plus ``sampling`` = {"sampler", "steps"}, the render defaults,
    and ``evaluation``) and train_log.csv. Training state (AdamW moments) is left behind: runs
    continue from shipped weights with fresh optimizer moments."""
    import shutil

    from .diffusion import check_steps, get_sampler

    src, dst = Path(src), Path(dst)
    meta, _ = _load_midisynth_folder(src, verify=True)
    meta.pop("training_state", None)
    if sampling is not None:
        get_sampler(sampling["sampler"])
        if sampling.get("steps") is not None:
            check_steps(sampling["steps"])
        meta["sampling"] = dict(sampling)
    if evaluation is not None:
        meta["evaluation"] = evaluation
    meta["preview"] = preview  # True: below its quality targets, labelled so in `midisynth models`
    if inverter is not None:  # e.g. {"type": "auto"}: the shipped trained inverter, else GL
        meta["inverter"] = dict(inverter)
    dst.mkdir(parents=True, exist_ok=True)
    for old in dst.glob("model*.safetensors"):
        old.unlink()
    for fname in meta["files"]:
        shutil.copy2(src / fname, dst / fname)
    if (src / "train_log.csv").is_file():
        shutil.copy2(src / "train_log.csv", dst / "train_log.csv")
    (dst / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return dst


def _load_midisynth_folder(
    path: Path, *, verify: bool = True, dtype: torch.dtype | None = None
) -> tuple[dict, dict]:
    from safetensors import safe_open

    meta = read_json(path / CONFIG_FILE)
    if meta.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not a midisynth model (config.json format={meta.get('format')!r})"
        )
    files = meta.get("files") or {}
    if not files:
        raise ModelError(f"{path}: config.json lists no weight files")
    state: dict[str, torch.Tensor] = {}
    for fname, digest in files.items():
        f = path / fname
        if not f.is_file():
            raise ModelError(f"{f}: weight file missing")
        if verify and sha256_file(f) != digest:
            raise ModelError(f"{f}: checksum mismatch (file altered or incomplete); re-download it")
        if fname.endswith(".safetensors"):
            try:
                # Tensor by tensor, cast on the way in: peak memory ≈ the model at `dtype`.
                with safe_open(str(f), "pt") as sf:
                    for k in sf.keys():
                        t = sf.get_tensor(k)
                        state[k] = t if dtype is None or not t.is_floating_point() else t.to(dtype)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"{f}: damaged weight file ({str(e).splitlines()[0]})") from None
    return meta, state


def build_tiny_random(seed: int = 0) -> LoadedModel:
    """The `tiny-random` model: deterministic random weights, generated in-process."""
    import torch

    from .model import ModelConfig, SpectrogramDiffusion

    config = ModelConfig.tiny()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SpectrogramDiffusion(config)
    return LoadedModel(name="tiny-random", model=model.eval(), config=config)


def resolve(
    name_or_path: str | os.PathLike | None,
) -> tuple[str, Path | None, RegistryEntry | None]:
    """Name or path → (display name, local folder or None, registry entry or None)."""
    if name_or_path is None:
        name_or_path = default_model_name()
    s = str(name_or_path)
    if s in REGISTRY:
        e = REGISTRY[s]
        return s, e.local_dir, e
    p = Path(s).expanduser()
    if p.exists() or os.sep in s or s.startswith("."):
        if not p.is_dir():
            raise ModelError(f"model folder not found: {p}")
        return p.name, p, None
    raise ModelError(f"unknown model {s!r}; available: {', '.join(REGISTRY)} (or a folder path)")


RELEASED_SETTINGS: dict[str, Any] = {"codec": {"num_velocity_bins": 1}, "program_map": "slakh"}


def model_settings(name_or_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a model expects, read from its config.json only (no weights, no download): the token
    ``codec`` and ``program_map``; ``frame``, whether it is a FrameNet (no unconditional mode,
    sampled part-way from its prior); its ``styles`` ([] if none); its own ``sampling`` defaults
    ({} if none). The released
    model's settings for the official entry, built-in models and diffusers-layout folders."""
    from .official import is_diffusers_layout

    name, path, entry = resolve(name_or_path)
    if path is None or is_diffusers_layout(path) or not (path / CONFIG_FILE).is_file():
        return {**RELEASED_SETTINGS, "frame": False, "styles": [], "sampling": {}}
    meta = read_json(path / CONFIG_FILE)
    frame = (meta.get("model") or {}).get("frame")
    return {
        "codec": meta.get("codec") or RELEASED_SETTINGS["codec"],
        "program_map": meta.get("program_map", "slakh"),
        "frame": bool(frame),
        "styles": list((frame or {}).get("styles") or []),
        "sampling": dict(meta.get("sampling") or {}),
    }


def load_model(
    name_or_path: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    verify: bool = True,
) -> LoadedModel:
    """Load a model by registered name or folder path, ready for inference.

    Args:
        name_or_path: a registry name (``midisynth models``), a midisynth folder or a folder in
            the official diffusers layout; None = the default model.
        device: torch device or name (``resolve_device``: "auto", "cpu", "cuda"…; default CPU).
        dtype: parameter dtype or name (``resolve_dtype``: "auto", "float32", "bfloat16"; default
            float32); bf16 halves memory and is faster on CPUs with AMX/AVX512-BF16 and on GPUs.
        verify: check each weight file's sha256 against config.json.
    Raises:
        ModelError: unknown name, missing/damaged/altered files, or an unreachable Hub.
    """
    import torch

    from . import official
    from .framenet import build_model

    if isinstance(device, str):
        device = resolve_device(device)
    if isinstance(dtype, str):
        dtype = resolve_dtype(dtype, torch.device(device or "cpu"))
    name, path, entry = resolve(name_or_path)
    if entry is not None and entry.builtin == "tiny":
        loaded = build_tiny_random()
    else:
        if path is None:
            assert entry is not None and entry.repo_id is not None
            path = official.download_official(entry.repo_id, entry.revision)
        folder = official.ensure_midisynth_folder(name, path)
        meta, state = _load_midisynth_folder(folder, verify=verify, dtype=dtype or torch.float32)
        config = model_config_from_dict(meta["model"])
        with torch.device("meta"):
            model = build_model(config)
        check_state_dict(model, state, str(folder))
        model.load_state_dict(state, strict=True, assign=True)
        inverter = dict(meta.get("inverter") or {"type": "griffin-lim"})
        if inverter == {"type": "griffin-lim"} and "converted_from" in meta.get("provenance", {}):
            # Official folders converted before a trained inverter shipped said "griffin-lim"
            # for "no ONNX file": they get the shipped one too (load_inverter falls back to GL).
            inverter = {"type": "auto"}
        if "file" in inverter:
            inverter["path"] = str(folder / inverter["file"])
        loaded = LoadedModel(
            name=name,
            model=model.eval(),
            config=config,
            codec=meta.get("codec") or {},
            program_map=meta.get("program_map", "slakh"),
            inverter=inverter,
            path=folder,
            meta=meta,
        )
    loaded.model.requires_grad_(False)
    loaded.model.to(device=device or "cpu", dtype=dtype or torch.float32)
    return loaded
