"""Model registry, conversion of the official diffusers layout, checksums, Hub code path (offline)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import diffusers_modules

from midisynth import weights
from midisynth.model import ModelConfig, SpectrogramDiffusion
from midisynth.weights import ModelError, load_model

REPO_ID = "google/music-spectrogram-diffusion"
TINY = ModelConfig(
    d_model=32, num_heads=2, d_kv=16, d_ff=48, num_encoder_layers=1, num_decoder_layers=1
)


def make_official_layout(root: Path, seed: int = 0) -> dict[str, torch.nn.Module]:
    """A folder in the exact official layout, written by diffusers itself (tiny, random weights)."""
    diffusers = pytest.importorskip("diffusers")

    torch.manual_seed(seed)
    mods = diffusers_modules(TINY)
    for name, m in mods.items():
        with torch.no_grad():  # position tables are random in the stand-in, as loaded ones would be
            m.position_encoding.weight.normal_()
        m.save_pretrained(root / name, safe_serialization=False)
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "SpectrogramDiffusionPipeline",
                "_diffusers_version": diffusers.__version__,
                "notes_encoder": ["spectrogram_diffusion", "SpectrogramNotesEncoder"],
                "continuous_encoder": ["spectrogram_diffusion", "SpectrogramContEncoder"],
                "decoder": ["diffusers", "T5FilmDecoder"],
                "scheduler": ["diffusers", "DDPMScheduler"],
                "melgan": ["diffusers", "OnnxRuntimeModel"],
            }
        )
    )
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(
            {
                "_class_name": "DDPMScheduler",
                "num_train_timesteps": 1000,
                "beta_schedule": "squaredcos_cap_v2",
                "clip_sample": True,
                "variance_type": "fixed_large",
            }
        )
    )
    return mods


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIDISYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_diffusers_folder_loads_with_identical_weights(tmp_path, cache):
    src = tmp_path / "official"
    mods = make_official_layout(src)
    loaded = load_model(src)
    assert loaded.config.d_model == 32 and loaded.config.max_decoder_noise_time == 20000.0
    for name, ref in mods.items():
        ours = getattr(loaded.model, name).state_dict()
        theirs = ref.state_dict()
        assert ours.keys() == theirs.keys()
        for k in theirs:
            assert torch.equal(ours[k], theirs[k]), k
    # Converted once into the cache (safetensors + config.json with provenance).
    meta = json.loads((loaded.path / "config.json").read_text())
    assert meta["format"] == "midisynth-1"
    assert set(meta["provenance"]["source_sha256"]) == {
        f"{m}/diffusion_pytorch_model.bin" for m in mods
    }
    again = load_model(src)  # second load reuses the conversion
    assert again.path == loaded.path


def test_truncated_weight_file_is_refused(tmp_path, cache):
    src = tmp_path / "official"
    make_official_layout(src)
    f = src / "decoder" / "diffusion_pytorch_model.bin"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ModelError, match="damaged or truncated") as e:
        load_model(src)
    assert "\n" not in str(e.value)


def test_wrong_shape_is_refused(tmp_path, cache):
    src = tmp_path / "official"
    make_official_layout(src)
    f = src / "decoder" / "diffusion_pytorch_model.bin"
    state = torch.load(f, weights_only=True)
    state["spec_out.weight"] = torch.zeros(64, 32)
    torch.save(state, f)
    with pytest.raises(ModelError, match=r"spec_out.weight has shape \(64, 32\)"):
        load_model(src)


def test_missing_key_is_refused(tmp_path, cache):
    src = tmp_path / "official"
    make_official_layout(src)
    f = src / "notes_encoder" / "diffusion_pytorch_model.bin"
    state = torch.load(f, weights_only=True)
    del state["layer_norm.weight"]
    torch.save(state, f)
    with pytest.raises(ModelError, match="1 missing"):
        load_model(src)


def test_saved_model_roundtrip_shards_and_checksums(tmp_path):
    model = SpectrogramDiffusion(ModelConfig.tiny())
    dst = weights.save_model(model, tmp_path / "m", name="m", shard_bytes=200_000)
    meta = json.loads((dst / "config.json").read_text())
    assert len(meta["files"]) > 1  # sharded
    from safetensors import safe_open

    for f in meta["files"]:  # within the limit, or one tensor that alone exceeds it
        with safe_open(str(dst / f), "pt") as sf:
            assert (dst / f).stat().st_size <= 200_000 + 1000 or len(list(sf.keys())) == 1
    loaded = load_model(dst)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    first = dst / next(iter(meta["files"]))
    data = bytearray(first.read_bytes())
    data[-1] ^= 0xFF  # flip one byte
    first.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum mismatch"):
        load_model(dst)


def test_unknown_name_lists_available():
    with pytest.raises(ModelError, match="available: .*tiny-random"):
        load_model("no-such-model")


def test_missing_folder():
    with pytest.raises(ModelError, match="model folder not found"):
        load_model("./does/not/exist")


def test_tiny_random_is_deterministic():
    a, b = load_model("tiny-random"), load_model("tiny-random")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert load_model("tiny-random", dtype=torch.bfloat16).dtype == torch.bfloat16


def _populate_hub_cache(hub_cache: Path, src: Path, revision: str = "main") -> None:
    """Lay out `src` as huggingface_hub's cache would after a download of REPO_ID."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = hub_cache / ("models--" + REPO_ID.replace("/", "--"))
    snap = repo / "snapshots" / commit
    shutil.copytree(src, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / revision).write_text(commit)


def test_official_entry_goes_through_huggingface_hub(tmp_path, cache, monkeypatch):
    # The real hf_hub_download code path, pointed at a local cache, offline: no network in tests.
    from huggingface_hub import constants

    src = tmp_path / "official"
    mods = make_official_layout(src)
    (src / "melgan").mkdir()
    (src / "melgan" / "model.onnx").write_bytes(b"stand-in")  # only copied, never run here
    hub = tmp_path / "hub"
    _populate_hub_cache(hub, src)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    loaded = load_model("official")
    assert loaded.inverter["type"] == "soundstream-onnx"
    ref = mods["decoder"].state_dict()["spec_out.weight"]
    assert torch.equal(loaded.model.decoder.spec_out.weight, ref)


def test_official_without_onnx_gets_the_shipped_inverter(tmp_path, cache):
    # Issue 11: without the SoundStream file, the official model uses our trained inverter.
    from midisynth.inverter import DEFAULT_VOCODER, load_inverter
    from midisynth.weights import BUNDLED_DIR

    src = tmp_path / "official"
    make_official_layout(src)
    loaded = load_model(str(src))
    assert loaded.inverter == {"type": "auto"}
    shipped = (BUNDLED_DIR / DEFAULT_VOCODER / "vocoder.json").is_file()
    inv = load_inverter(loaded.inverter)
    assert type(inv).__name__ == ("NeuralInverter" if shipped else "GriffinLim")


def test_unreachable_hub_says_how_to_get_the_weights(tmp_path, cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="download the repository elsewhere") as e:
        load_model("official")
    assert "--model /path/to" in str(e.value) and "\n" not in str(e.value)


def test_default_is_the_bundled_model_else_official(tmp_path, monkeypatch):
    import torch

    from midisynth import weights as W
    from midisynth.framenet import build_model
    from midisynth.model import FrameConfig, ModelConfig

    model = build_model(
        ModelConfig(
            prediction_type="v_prediction",
            frame=FrameConfig(
                d_model=16, prior_layers=1, denoise_layers=1, context_layers=1, note_dim=8
            ),
        )
    )
    src = W.save_model(model, tmp_path / "run", name="x", program_map="identity")
    root = tmp_path / "weights"
    W.release_model(
        src,
        root / "aa-preview",
        preview=True,
        sampling={"sampler": "ddim-cosine", "steps": 4, "start": 0.5},
    )
    W.release_model(src, root / W.DEFAULT_MODEL)
    monkeypatch.delenv(W.DEFAULT_MODEL_ENV, raising=False)
    monkeypatch.setattr(W, "BUNDLED_DIR", root)
    monkeypatch.setattr(W, "REGISTRY", {k: v for k, v in W.REGISTRY.items() if v.local_dir is None})
    W._register_bundled()
    assert W.REGISTRY["aa-preview"].preview and "PREVIEW" in W.REGISTRY["aa-preview"].description
    assert W.default_model_name() == W.DEFAULT_MODEL  # bundled: offline
    assert W.availability(W.REGISTRY[W.DEFAULT_MODEL]) == "bundled"
    monkeypatch.setenv(W.DEFAULT_MODEL_ENV, "aa-preview")
    assert W.default_model_name() == "aa-preview"
    monkeypatch.delenv(W.DEFAULT_MODEL_ENV)
    del W.REGISTRY[W.DEFAULT_MODEL]
    assert W.default_model_name() == "official"  # a clone without weights/
    assert isinstance(W.load_model("aa-preview").model, torch.nn.Module)


def test_availability_reads_the_hub_cache_without_network(tmp_path, monkeypatch):
    """The official entry is "downloaded" once every file is in the Hugging Face cache."""
    import huggingface_hub

    from midisynth import official
    from midisynth import weights as W

    def no_network(*args, **kwargs):
        raise AssertionError("availability() touched the network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    entry = W.REGISTRY["official"]
    assert W.availability(entry) == "needs download"
    snap = tmp_path / "models--google--music-spectrogram-diffusion" / "snapshots" / ("a" * 40)
    for f in official.OFFICIAL_FILES:
        (snap / f).parent.mkdir(parents=True, exist_ok=True)
        (snap / f).write_bytes(b"x")
    refs = tmp_path / "models--google--music-spectrogram-diffusion" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    assert W.availability(entry) == "downloaded"
    assert W.availability(W.REGISTRY["tiny-random"]) == "built in"
