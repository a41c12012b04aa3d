"""Training loop: a CPU smoke run that saves a loadable, renderable model; resume; schedule."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import safetensors.torch
import torch
from helpers import SONG, additive, make_midi

from midisynth import audio, data, model_init, train, weights
from midisynth.cache import Piece, load_cache, mel_of, notes_to_array, save_shard
from midisynth.midi import Note
from midisynth.model import ModelConfig
from midisynth.render import RenderOptions, render


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    notes = notes_to_array([Note(s, e, p, 100, 0, False, 0) for s, e, p in SONG])
    piece = Piece("paired/song.mid", "paired", mel_of(additive(SONG, 10.0)), notes)
    save_shard(root / "train-00000.npz", [piece])
    save_shard(root / "val-00000.npz", [piece])
    (root / "index.json").write_text(json.dumps({"pieces": {"train": 1, "val": 1}}))
    make_midi(root / "song.mid", SONG)
    return root


def tiny_config(cache, out, **kw) -> train.TrainConfig:
    args = dict(
        data=str(cache),
        out=str(out),
        name="test-model",
        model="tiny",
        steps=4,
        batch_size=2,
        warmup_steps=2,
        val_every=2,
        val_examples=1,
        log_every=2,
        threads=1,
        seed=0,
    )
    return train.TrainConfig(**{**args, **kw})


def test_smoke_train_save_load_render(cache, tmp_path):
    logs = []
    out = train.train(tiny_config(cache, tmp_path / "m"), log=logs.append)
    meta = json.loads((out / "config.json").read_text())
    assert meta["codec"]["num_velocity_bins"] == 8 and meta["program_map"] == "identity"
    assert meta["inverter"] == {"type": "griffin-lim"}
    assert meta["model"]["prediction_type"] == "v_prediction"  # the default for new models
    assert meta["training"]["steps"] == 4 and meta["training"]["runs"][0]["finished"]
    assert [r["step"] for r in meta["training"]["val_loss"]] == [2, 4]
    files = list(out.iterdir())
    assert all(f.stat().st_size <= 15 * 2**20 for f in files) and len(files) <= 8
    assert (out / "train_log.csv").read_text().startswith("step,")
    model = weights.load_model(out)
    assert model.codec["num_velocity_bins"] == 8
    res = render(model, cache / "song.mid", RenderOptions(steps=2, tail=0.5))
    assert res.mel.shape[1] == audio.N_MELS and np.isfinite(res.audio).all()
    assert len(res.audio) == round((max(e for _, e, _ in SONG) + 0.5) * audio.SAMPLE_RATE)

    # Resume: weights and AdamW state come back, the step count and val table continue.
    out2 = train.train(
        tiny_config(cache, tmp_path / "m2", resume=str(out), steps=2), log=logs.append
    )
    meta2 = json.loads((out2 / "config.json").read_text())
    assert meta2["training"]["steps"] == 6 and len(meta2["training"]["runs"]) == 2
    assert meta2["codec"] == meta["codec"]
    assert any("resumed optimizer: True" in line for line in logs)

    # Release: weights + config (+ render defaults), no optimizer state; training continues from it.
    rel = weights.release_model(
        out2, tmp_path / "rel", sampling={"sampler": "ddim-cosine", "steps": 3}
    )
    assert sorted(f.name for f in rel.iterdir()) == sorted(
        [*meta2["files"], "config.json", "train_log.csv"]
    )
    shipped = weights.load_model(rel)
    assert shipped.meta["sampling"] == {"sampler": "ddim-cosine", "steps": 3}
    assert "training_state" not in shipped.meta
    reloaded = weights.load_model(out2).model.parameters()
    for a, b in zip(shipped.model.parameters(), reloaded, strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown sampler"):
        weights.release_model(out2, tmp_path / "bad", sampling={"sampler": "euler"})
    logs.clear()
    out3 = train.train(
        tiny_config(cache, tmp_path / "m3", resume=str(rel), steps=1), log=logs.append
    )
    assert json.loads((out3 / "config.json").read_text())["training"]["steps"] == 7
    assert any("resumed optimizer: False" in line for line in logs)


def test_state_round_trip(cache, tmp_path):
    cfg = tiny_config(cache, tmp_path)
    from midisynth.tokens import Codec

    model = model_init.build_model(cfg, Codec(num_velocity_bins=8))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    loss = sum(p.sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    train._save_state(tmp_path, model, opt)
    model2 = model_init.build_model(cfg, Codec(num_velocity_bins=8))
    opt2 = torch.optim.AdamW([p for p in model2.parameters() if p.requires_grad])
    assert train._load_state(tmp_path, model2, opt2)
    for (n, a), b in zip(model.named_parameters(), model2.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=n)
    p, p2 = next(iter(opt.state)), next(iter(opt2.state))
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])


def test_validation_loss_is_deterministic(cache):
    from midisynth.tokens import Codec

    cfg = tiny_config(cache, "unused")
    model = model_init.build_model(cfg, Codec(num_velocity_bins=8))
    exs = data.fixed_examples(load_cache(cache, "val"), 3, codec=Codec(num_velocity_bins=8))
    a = train.validation_loss(model, exs, torch.device("cpu"))
    b = train.validation_loss(model, exs, torch.device("cpu"))
    assert a == b and 0.3 < a < 2.0


def test_lr_schedule():
    cfg = train.TrainConfig(lr=1e-3, warmup_steps=10, steps=110, min_lr_ratio=0.1)
    assert train.lr_at(0, cfg) == pytest.approx(1e-4)
    assert train.lr_at(9, cfg) == pytest.approx(1e-3)
    assert train.lr_at(60, cfg) == pytest.approx(0.55e-3)
    assert train.lr_at(110, cfg) == pytest.approx(1e-4)
    timed = train.TrainConfig(lr=1e-3, warmup_steps=10, steps=10**6, max_minutes=8.0)
    assert train.lr_at(20, timed, minutes=4.0) == pytest.approx(
        0.55e-3, rel=1e-3
    )  # half-way in time
    assert train.lr_at(20, timed, minutes=8.0) == pytest.approx(1e-4)
    assert train.lr_at(20, cfg, minutes=100.0) == train.lr_at(20, cfg)  # no time limit: steps only


def test_command_line_arguments(cache, tmp_path):
    import argparse

    p = argparse.ArgumentParser()
    train.add_arguments(p)
    args = p.parse_args(
        [
            "--data",
            str(cache),
            "--steps",
            "7",
            "--model-overrides",
            '{"d_model": 32}',
            "--no-save-optimizer",
            "--max-minutes",
            "1.5",
        ]
    )
    cfg = train.config_from_args(args)
    assert cfg.steps == 7 and cfg.model_overrides == {"d_model": 32} and cfg.save_optimizer is False
    assert cfg.max_minutes == 1.5 and cfg.resume is None


@pytest.mark.parametrize("d_model", [128, 160])  # shared channels / positions moved aside
def test_skip_init_starts_at_the_high_noise_answer(d_model):
    from midisynth import diffusion
    from midisynth.tokens import Codec

    torch.manual_seed(0)
    cfg = train.TrainConfig(
        model="tiny", model_overrides={"d_model": d_model}, prediction_type="epsilon"
    )
    model = model_init.build_model(cfg, Codec(num_velocity_bins=8)).eval()
    plain = model_init.build_model(
        dataclasses.replace(cfg, skip_init=False), Codec(num_velocity_bins=8)
    )
    ids = torch.randint(3, 1300, (2, 40))
    ctx, mask = torch.zeros(2, 256, 128), torch.zeros(2, 256, dtype=torch.bool)
    x0, noise = torch.rand(2, 256, 128) * 2 - 1, torch.randn(2, 256, 128)
    tau = torch.full((2,), 0.99)
    z = diffusion.q_sample(x0, tau, noise)
    with torch.no_grad():
        errs = [
            float((m(z, tau, m.precompute(m.encode(ids, ctx, mask))) - noise).abs().mean())
            for m in (model, plain.eval())
        ]
    assert errs[0] < (0.15 if d_model == 128 else 0.03) and errs[1] > 0.3


def test_loss_weighting():
    tau = torch.tensor([0.0, 0.5, 0.99, 1.0])
    torch.testing.assert_close(train.loss_weight(tau, "eps"), torch.ones(4))
    w = train.loss_weight(tau, "v")
    assert w[0] == pytest.approx(1.0, abs=1e-6) and w[1] == pytest.approx(2**0.5, rel=1e-3)
    assert w[2] == w[3] == 20.0
    with pytest.raises(ValueError):
        train.loss_weight(tau, "x0")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction"])
def test_denoise_loss_target(kind):
    # A stand-in model that outputs the exact target scores zero; one that outputs the other
    # parameterization's target does not.
    from midisynth import diffusion

    x0, noise = torch.rand(3, 256, 128) * 2 - 1, torch.randn(3, 256, 128)
    tau = torch.tensor([0.1, 0.5, 0.9])
    a, s = (v.view(-1, 1, 1) for v in diffusion.alpha_sigma(tau))
    targets = {"epsilon": noise, "v_prediction": a * noise - s * x0}

    class Stand:
        config = dataclasses.replace(ModelConfig.tiny(), prediction_type=kind)

        def __init__(self, answer):
            self.answer = answer

        def encode(self, *args):
            return None

        def precompute(self, enc):
            return None

        def __call__(self, z, t, kv):
            torch.testing.assert_close(z, a * x0 + s * noise)
            return targets[self.answer]

    batch = data.Batch(
        torch.zeros(3, 8, dtype=torch.long),
        torch.zeros(3, 256, 128),
        torch.ones(3, 256, dtype=torch.bool),
        x0,
    )
    assert train.denoise_loss(Stand(kind), batch, tau, noise).abs().max() < 1e-6
    other = "epsilon" if kind == "v_prediction" else "v_prediction"
    assert train.denoise_loss(Stand(other), batch, tau, noise).min() > 0.05


def test_time_codes_align_shift_tokens_with_decoder_frames():
    from midisynth.tokens import Codec

    codec = Codec(num_velocity_bins=8)
    model = model_init.build_model(train.TrainConfig(model="tiny"), codec)
    dec = model.decoder.position_encoding.weight.detach()  # (256, 64)
    emb = model.notes_encoder.token_embedder.weight.detach()
    d = model.config.d_model
    # sinusoid rows (random phases): squared norm d/2 on average, values in [-1, 1]
    assert abs(float(dec.pow(2).sum(1).mean()) / (d / 2) - 1) < 0.2 and dec.abs().max() <= 1
    for v in (0, 2, 100, 510):  # shift v (10 ms steps) is the decoder's code at frame v/2
        torch.testing.assert_close(emb[codec.token_id("shift", v)], dec[v // 2])
    sims = emb[codec.token_id("shift", 101)] @ dec.T  # between frames 50 and 51
    assert int(sims.argmax()) in (50, 51)
    # neighbouring frames look alike, far ones less so
    cos = torch.nn.functional.cosine_similarity
    assert cos(dec[100], dec[101], dim=0) > 0.8 > 0.5 > cos(dec[100], dec[200], dim=0)
    other = model.notes_encoder.position_encoding.weight
    assert not torch.allclose(other[:256], dec)  # each table has its own phases / permutation
    plain = model_init.build_model(train.TrainConfig(model="tiny", time_codes=False), codec)
    shift = plain.notes_encoder.token_embedder.weight[codec.token_id("shift", 100)].detach()
    assert abs(float(cos(shift, plain.decoder.position_encoding.weight[50], dim=0))) < 0.5


def test_sample_tau_high_noise_fraction():
    torch.manual_seed(0)
    plain = train.sample_tau(20000)
    assert (
        0 <= plain.min()
        and plain.max() < 1
        and abs(float((plain >= 0.7).float().mean()) - 0.3) < 0.02
    )
    tilted = train.sample_tau(20000, 0.8)
    assert abs(float((tilted >= 0.7).float().mean()) - (0.8 + 0.2 * 0.3)) < 0.02


def test_frame_model_trains_resumes_and_renders(cache, tmp_path):
    from midisynth import train_frame

    cfg = train_frame.FrameTrainConfig(
        data=str(cache),
        out=str(tmp_path / "f"),
        frame={"d_model": 32, "prior_layers": 1, "denoise_layers": 1, "context_layers": 1},
        steps=4,
        batch_size=2,
        warmup_steps=2,
        val_every=2,
        val_examples=2,
        log_every=2,
        max_minutes=None,
        threads=1,
    )
    logs: list[str] = []
    out = train_frame.train(cfg, log=logs.append)
    meta = json.loads((out / "config.json").read_text())
    assert meta["model"]["frame"]["d_model"] == 32 and meta["training"]["steps"] == 4
    assert [r["step"] for r in meta["training"]["val"]] == [2, 4]
    assert {"prior_l1", "prior_corr", "v_l1"} <= set(meta["training"]["val"][0])
    again = train_frame.train(
        dataclasses.replace(cfg, out=str(tmp_path / "f2"), resume=str(out), steps=2),
        log=logs.append,
    )
    meta2 = json.loads((again / "config.json").read_text())
    assert meta2["training"]["steps"] == 6 and len(meta2["training"]["runs"]) == 2
    assert any("resumed optimizer: True" in line for line in logs)
    assert any("saved" in line and "at step 6" in line for line in logs)
    res = render(weights.load_model(again), cache / "song.mid", RenderOptions(tail=0.5))
    assert np.isfinite(res.audio).all()
    # An architecture change on resume keeps the weights that still fit, not the optimizer state.
    logs.clear()
    old = train_frame._setup(dataclasses.replace(cfg, resume=str(out)), logs.append)[0]
    changed = train_frame.train(
        dataclasses.replace(
            cfg, out=str(tmp_path / "f3"), resume=str(out), steps=2, frame={"velocity": "embedding"}
        ),
        log=logs.append,
    )
    assert any("architecture changed" in line and "notes.velocity.weight" in line for line in logs)
    assert any("resumed optimizer: False" in line for line in logs)
    loaded = weights.load_model(changed)
    assert loaded.config.frame.velocity == "embedding" and loaded.config.frame.d_model == 32
    a, b = (
        loaded.model.notes.pitch.weight.detach().flatten(),
        old.notes.pitch.weight.detach().flatten(),
    )
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.9  # kept, not a fresh init


def test_cli_train_saves_and_resumes(cache, tmp_path):
    # Issue 13: `midisynth train` crashed after saving (its --out parameter hid the console).
    from typer.testing import CliRunner

    from midisynth.cli import app

    runner = CliRunner()
    args = ["train", str(cache), "--out", str(tmp_path / "m"), "--steps", "2", "--batch-size", "2"]
    res = runner.invoke(app, [*args, "--model", "tiny", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "model saved to" in res.output
    res = runner.invoke(
        app,
        [
            "train",
            str(cache),
            "--out",
            str(tmp_path / "m2"),
            "--resume",
            str(tmp_path / "m"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["training"]["steps"] == 4


def test_bad_cache_fails_before_writing(cache, tmp_path):
    from midisynth import train_frame

    bad = tmp_path / "cache"
    bad.mkdir()
    (bad / "train-00000.npz").write_bytes((cache / "train-00000.npz").read_bytes())
    for run in (
        lambda: train.train(tiny_config(bad, tmp_path / "m")),
        lambda: train_frame.train(
            train_frame.FrameTrainConfig(data=str(bad), out=str(tmp_path / "f"))
        ),
    ):
        with pytest.raises(FileNotFoundError, match="no val"):
            run()
    assert not (tmp_path / "m").exists() and not (tmp_path / "f").exists()


def test_velocity_hinge_trains_and_penalises_a_quieter_louder_note(cache, tmp_path):
    from midisynth import train_frame

    cfg = train_frame.FrameTrainConfig(
        data=str(cache),
        out=str(tmp_path / "m"),
        frame={"d_model": 32, "prior_layers": 1, "denoise_layers": 1, "context_layers": 1},
        steps=2,
        batch_size=2,
        val_every=2,
        val_examples=2,
        max_minutes=None,
        threads=1,
        monotone_weight=1.0,
    )
    out = train_frame.train(cfg, log=lambda *_: None)
    meta = json.loads((out / "config.json").read_text())
    assert "velocity hinge" in meta["training"]["runs"][-1]["loss"]
    model = weights.load_model(out).model
    grid = torch.zeros(1, 256, 32, 5, dtype=torch.int16)
    grid[0, 10:100, 0] = torch.tensor([60, 0, 64, 5, 100], dtype=torch.int16)
    ctx, mask = torch.full((1, 256, 128), -1.0), torch.zeros(1, 256, dtype=torch.bool)
    b = train_frame.FrameBatch(
        grid, ctx, mask, torch.zeros(1, 256, 128), torch.zeros(1, dtype=torch.long)
    )
    gen = torch.Generator().manual_seed(0)
    cond = model.encode(grid, ctx, mask)
    quiet = train_frame.velocity_hinge(model, b, cond, torch.Generator().manual_seed(0))
    assert torch.isfinite(quiet) and quiet >= 0
    # A "prior" far louder than what the raised velocities give must be penalised.
    loud = dataclasses.replace(cond, prior=cond.prior + 0.5)
    assert train_frame.velocity_hinge(model, b, loud, torch.Generator().manual_seed(0)) > quiet
    # With ``refine`` the denoiser's x0 from the noised prior is held to it as well: its terms add.
    refine = (torch.full((1,), 0.15), torch.randn(1, 256, 128, generator=gen))
    both = train_frame.velocity_hinge(model, b, cond, torch.Generator().manual_seed(0), refine)
    assert torch.isfinite(both) and both >= quiet
    # A louder prior also makes the denoised x0 louder: the refine term adds to the penalty.
    prior_only = train_frame.velocity_hinge(model, b, loud, torch.Generator().manual_seed(0))
    with_x0 = train_frame.velocity_hinge(model, b, loud, torch.Generator().manual_seed(0), refine)
    assert with_x0 > prior_only


def test_frame_styles_train_on_each_pieces_soundfont_and_render_by_name(tmp_path):
    # Issue 19: a model trained on two SoundFonts is told which one each piece used, so it can
    # render one of them (the first by default) rather than their average.
    from midisynth import train_frame
    from midisynth.render import style_index
    from midisynth.synth import pick_soundfont

    root = tmp_path / "cache"
    root.mkdir()
    notes = notes_to_array([Note(s, e, p, 100, 0, False, 0) for s, e, p in SONG])
    fonts = ["/fonts/Bright.sf2", "/fonts/Dark.sf2"]
    names = [f"procedural/{i:05d}" for i in range(6)]
    pieces = [Piece(n, "procedural", mel_of(additive(SONG, 10.0)), notes) for n in names]
    save_shard(root / "train-00000.npz", pieces)
    save_shard(root / "val-00000.npz", pieces[:2])
    index = {
        "pieces": {"train": 6, "val": 2},
        "settings": {"soundfonts": ["Bright.sf2", "Dark.sf2"]},
    }
    (root / "index.json").write_text(json.dumps(index))
    want = [["Bright", "Dark"].index(pick_soundfont(n, fonts).split("/")[-1][:-4]) for n in names]
    assert sorted(set(want)) == [0, 1]  # both fonts occur among these names
    assert train_frame.piece_styles(pieces, index, ["Bright", "Dark"]) == want
    assert train_frame.piece_styles(pieces, {}, []) is None  # a model without styles
    with pytest.raises(ValueError, match="not among the model's styles"):
        train_frame.piece_styles(pieces, index, ["Bright"])

    cfg = train_frame.FrameTrainConfig(
        data=str(root),
        out=str(tmp_path / "f"),
        frame={"d_model": 32, "prior_layers": 1, "denoise_layers": 1, "context_layers": 1,
               "styles": ["Bright", "Dark"]},
        steps=3, batch_size=4, warmup_steps=1, val_every=3, val_examples=4, log_every=3,
        max_minutes=None, threads=1, sharp_weight=0.5, refine_weight=1.0, texture_weight=2.0,
        monotone_weight=1.0, swd_weight=3.0, adv_weight=0.1,
    )  # fmt: skip
    out = train_frame.train(cfg, log=lambda *_: None)
    loaded = weights.load_model(out)
    training = json.loads((out / "config.json").read_text())["training"]
    assert "sharpness L1" in training["runs"][0]["loss"]
    assert "2.0 x texture L1" in training["runs"][0]["loss"]
    assert "3.0 x sliced Wasserstein distance" in training["runs"][0]["loss"]
    assert "0.1 x (critic hinge + 2.0 x feature matching)" in training["runs"][0]["loss"]
    assert not any("critic" in k for k in safetensors.torch.load_file(out / "model.safetensors"))
    assert {"refine_l1", "refine_texture", "refine_swd"} <= set(training["val"][-1])
    assert loaded.config.frame.styles == ["Bright", "Dark"]
    assert loaded.model.style.weight.abs().sum() > 0  # the codes were trained
    assert [style_index(loaded, s) for s in (None, "bright", "DARK", "d")] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="piano is not one of this model's styles: Bright, Dark"):
        style_index(loaded, "piano")
    assert loaded.model.notes.style.weight.abs().sum() > 0  # per-note codes trained too
    midi = tmp_path / "song.mid"
    make_midi(midi, SONG)
    a, b = (render(loaded, midi, RenderOptions(tail=0.5, style=s)).mel for s in ("Bright", "Dark"))
    assert not np.allclose(a, b)  # the style changes the sound
    np.testing.assert_array_equal(a, render(loaded, midi, RenderOptions(tail=0.5)).mel)
    # A model without styles refuses --style in one line, before any work.
    plain = weights.load_model("tiny-random")
    with pytest.raises(ValueError, match="this model has no styles"):
        style_index(plain, "Dark")


def test_sharpness_loss_prefers_the_real_texture_to_its_blur():
    # Issue 19: the L1 regression's blurred mel scores as well as real texture on L1 of levels;
    # the differences along time and along mel bins tell them apart.
    from midisynth.train_frame import sharpness_l1

    gen = torch.Generator().manual_seed(0)
    target = torch.randn(2, 256, 128, generator=gen).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool1d(
        target.transpose(1, 2), 5, stride=1, padding=2, count_include_pad=False
    ).transpose(1, 2)
    assert torch.equal(sharpness_l1(target, target), torch.zeros(2))
    assert (sharpness_l1(blurred, target) > 0.5).all()
    assert (sharpness_l1(target + 0.3, target).abs() < 1e-6).all()  # a level shift is not blur


def test_texture_loss_asks_for_movement_not_its_place():
    # Issue 19: the denoiser may invent texture it cannot know: the local spread of the target
    # counts, not where its peaks fall. A blur loses it; the same texture moved by one frame keeps
    # it (while L1 would call that as far off as it can be).
    from midisynth.train_frame import texture_l1

    t, f = torch.arange(256).view(1, -1, 1), torch.arange(128).view(1, 1, -1)
    pattern = 0.2 * (-1.0) ** (t + f)  # (1, 256, 128) a checkerboard of ±0.2
    target = torch.tensor([-0.5, 0.1]).view(2, 1, 1) + pattern
    blurred = torch.nn.functional.avg_pool1d(
        target.transpose(1, 2), 5, stride=1, padding=2, count_include_pad=False
    ).transpose(1, 2)
    moved = target.roll(1, dims=1)
    assert torch.equal(texture_l1(target, target), torch.zeros(2))
    assert (texture_l1(blurred, target) > 0.1).all()
    assert (texture_l1(moved, target).abs() < 1e-6).all()
    assert ((moved - target).abs().mean(dim=(1, 2)) > 0.39).all()
    assert (texture_l1(target + 0.3, target).abs() < 1e-6).all()  # a level shift is not texture


def test_patch_distribution_loss_compares_patches_not_their_places():
    # Issue 19: an unpaired term. Real patches in other places (the batch's examples swapped,
    # the texture shifted by whole patches) score 0; a blur, a level-free but flattened texture,
    # or white noise where the target is smooth score more; a level shift is not texture.
    from midisynth.train_frame import patch_swd

    gen = torch.Generator().manual_seed(0)
    target = 0.3 * torch.randn(4, 64, 128, generator=gen)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731 - same projections each call
    assert patch_swd(target, target, generator=g()) < 1e-6
    assert patch_swd(target.flip(0), target, generator=g()) < 1e-6  # examples swapped
    assert patch_swd(target.roll(16, dims=1), target, generator=g()) < 1e-6  # whole patches
    assert patch_swd(target + 0.5, target, generator=g()) < 1e-6
    blurred = torch.nn.functional.avg_pool1d(
        target.transpose(1, 2), 5, stride=1, padding=2, count_include_pad=False
    ).transpose(1, 2)
    assert patch_swd(blurred, target, generator=g()) > 0.05
    smooth = torch.zeros(4, 64, 128)
    assert patch_swd(smooth + 0.3 * torch.randn(4, 64, 128, generator=gen), smooth) > 0.05
    x = blurred.clone().requires_grad_(True)
    patch_swd(x, target, generator=g()).backward()
    assert x.grad.abs().sum() > 0  # it trains


def test_source_weights_draw_a_source_more_often():
    # Issue 19: a cache that is 82 % piano songs teaches other timbres little; --source-weights
    # draws the named sources' segments that many times more often, refused in one line if wrong.
    from midisynth.train_frame import FrameSampler, parse_source_weights

    mel = np.zeros((1000, 128), np.float16)
    pieces = [
        Piece(f"{s}/{i}", s, mel, np.zeros((0, 6))) for s in ("pop", "game") for i in range(2)
    ]
    plain = FrameSampler(pieces, "identity")
    np.testing.assert_allclose(plain.weights, 0.25)
    weights = parse_source_weights("game=3", {"pop", "game"})
    assert weights == {"game": 3.0}
    heavy = FrameSampler(pieces, "identity", source_weights=weights)
    np.testing.assert_allclose(heavy.weights, [0.125, 0.125, 0.375, 0.375])
    for bad, msg in [("rock=2", "no source 'rock' in the cache"), ("game=-1", "positive weight")]:
        with pytest.raises(ValueError, match=msg):
            parse_source_weights(bad, {"pop", "game"})


def test_the_critic_learns_to_tell_real_texture_from_blur_and_teaches_the_denoiser():
    # Issue 19: the adversarial term. A few critic steps separate textured targets from their
    # blur; the generator terms then push the blur toward the target (gradients reach x0 only).
    from midisynth.train_frame import MelCritic, adversarial_terms, critic_step

    torch.manual_seed(0)
    target = (0.3 * torch.randn(4, 64, 128)).clamp(-1, 1)
    blurred = torch.nn.functional.avg_pool1d(
        target.transpose(1, 2), 5, stride=1, padding=2, count_include_pad=False
    ).transpose(1, 2)
    prior = blurred.clone()
    critic = MelCritic()
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    losses = [critic_step(critic, opt, blurred, target, prior) for _ in range(30)]
    assert losses[-1] < losses[0] - 0.5
    x0 = blurred.clone().requires_grad_(True)
    critic.zero_grad(set_to_none=True)
    critic.requires_grad_(False)
    adv, fm = adversarial_terms(critic, x0, target, prior)
    (adv + fm).backward()
    assert x0.grad.abs().sum() > 0 and all(p.grad is None for p in critic.parameters())
    real_score = critic(target, prior)[0].mean()
    assert real_score > -adv  # the critic scores the real texture above the blur
