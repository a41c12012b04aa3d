"""TrainConfig and one linear training loop for the spectrogram-diffusion model (spec §5.1).

    python -m midisynth.train --data CACHE --out weights/my-model --model cpu-small --steps 2000

Objective: L1 loss on the model's output at a continuous cosine noise time τ ~ U[0, 1) per example
— ε as in the original (``prediction_type="epsilon"``), or v = α·ε − σ·x0 (``"v_prediction"``,
the default for new models: at high noise v ≈ −x0, so sampling does not divide the model's error by
α ≈ 0; briefly trained CPU models sample in range with it, clipped noise without: held-out L1 2.0
vs 5.0, benchmarks/model_check.py) —
classifier-free-guidance dropout 0.1 (done by the data sampler), AdamW with linear warmup and a
cosine decay, gradient clipping, an exponential moving average (EMA) of the weights that is what
gets saved, bf16 autocast on CUDA (optional on CPUs with native bf16). A model trained from scratch
(``model_init``) starts with its decoder passing the noisy input through (``skip_init``: ε̂ ≈ z, the
exact answer at high noise), which a small, briefly trained model otherwise learns too slowly for
sampling to work.
The validation loss uses a fixed set of held-out examples, a fixed τ grid and fixed noise, so it is
comparable across runs.

A run writes a midisynth model folder (``weights.save_model``: EMA weights in safetensors shards,
config.json with codec, program map, inverter and provenance), plus, unless disabled, the raw
weights and AdamW moments in ``training_state-*.safetensors`` (not listed in ``files``, so
``load_model`` ignores them) and ``train_log.csv``. ``resume`` continues from such a folder — or from
any midisynth folder, e.g. the bundled model, without optimizer state — keeping its codec and
program map (the token layout must not change under a trained model).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from . import cache, data, diffusion, tokens, weights
from .data import CFG_DROP_PROB
from .model import SpectrogramDiffusion
from .model_init import build_model

STATE_PREFIX = "training_state"  # raw weights + optimizer moments; never matches model*.safetensors
VAL_TAUS = (0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95)  # fixed validation grid
LOG_FIELDS = ("step", "elapsed_s", "lr", "loss", "grad_norm", "examples_per_s", "val_loss")


@dataclass
class TrainConfig:
    """Everything a training run needs. Paths may be str or Path."""

    data: str = "cache"  # cache folder written by `python -m midisynth.cache`
    out: str = "runs/model"  # model folder to write (checkpoints overwrite it)
    name: str = "midisynth-model"  # model name recorded in config.json
    description: str = "midisynth model trained with midisynth.train"
    resume: str | None = None  # midisynth model folder to continue from (weights [+ optimizer])
    model: str = "cpu-wide"  # model_init.MODEL_PRESETS name (ignored when resuming)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"d_model": 192}
    dropout: float = 0.0  # model dropout while training (0.1 in the original; 0 for short runs)
    prediction_type: str = "v_prediction"  # "epsilon" (spec) | "v_prediction"; from scratch only
    # From scratch: shift-token embeddings start as the decoder's position code for the same
    # time (see model_init.init_time_codes).
    time_codes: bool = True
    skip_init: bool = True  # epsilon models: start the decoder as eps(z) = z (model_init.skip_init)
    loss_weighting: str = "eps"  # epsilon models: "eps" plain L1 on ε (spec); "v" see loss_weight
    num_velocity_bins: int = 8  # codec velocity resolution (ignored when resuming)
    program_map: str = "identity"  # program mapping (ignored when resuming)
    max_tokens: int = 1024  # examples needing more note tokens are redrawn
    length_buckets: int = 4  # batches drawn together and grouped by token count (less padding)
    data_workers: int = 1  # processes preparing batches (a GPU needs several; 1 = one thread)
    batch_size: int = 16
    lr: float = 1e-3  # peak AdamW learning rate
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.01
    steps: int = 2000  # optimizer steps in this run
    max_minutes: float | None = None  # stop (and save) after this much wall time
    ema_decay: float = 0.998
    grad_clip: float = 1.0  # max global gradient norm
    cfg_drop: float = CFG_DROP_PROB
    # Fraction of examples drawn at high noise, τ ~ U[0.7, 1) (the rest τ ~ U[0, 1)): where the
    # model learns what the notes sound like and when; what few-step sampling relies on.
    high_noise_fraction: float = 0.0
    val_every: int = 200  # steps between validation losses
    val_examples: int = 32
    log_every: int = 20
    checkpoint_minutes: float = 10.0  # save the folder at least this often
    save_optimizer: bool = True  # write training_state-*.safetensors (resumable)
    seed: int = 0
    threads: int | None = None  # torch CPU threads (None: torch's default)
    device: str = "auto"  # auto | cpu | cuda
    bf16: str = "auto"  # auto (CUDA only) | on | off


# --------------------------------------------------------------------------------------------
# Setup


def _use_bf16(setting: str, device: torch.device) -> bool:
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def hardware() -> str:
    """One line naming the machine (GPU name, else CPU model and cores)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA)"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {torch.get_num_threads()} threads"


def _save_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, str]:
    """Raw weights + AdamW moments as ≤ 15 MiB safetensors shards; returns {file: sha256}."""
    names = {p: n for n, p in model.named_parameters()}
    state: dict[str, torch.Tensor] = {f"raw.{n}": p for n, p in model.named_parameters()}
    for p, s in opt.state.items():
        for k in ("exp_avg", "exp_avg_sq"):
            state[f"{k}.{names[p]}"] = s[k]
        state[f"step.{names[p]}"] = torch.as_tensor(s["step"]).reshape(1).float()
    files = weights.save_shards(state, folder, STATE_PREFIX)
    return {f: weights.sha256_file(folder / f) for f in files}


def _load_state(folder: Path, model: torch.nn.Module, opt: torch.optim.Optimizer | None) -> bool:
    """Restore raw weights (+ moments into ``opt``) from training_state shards; False if absent."""
    from safetensors.torch import load_file

    files = sorted(folder.glob(f"{STATE_PREFIX}-*.safetensors"))
    if not files:
        return False
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state[f"raw.{n}"])
    if opt is not None:
        for n, p in params.items():
            if f"exp_avg.{n}" in state and p.requires_grad:
                opt.state[p] = {
                    "step": torch.tensor(float(state[f"step.{n}"][0])),
                    "exp_avg": state[f"exp_avg.{n}"].to(p.device),
                    "exp_avg_sq": state[f"exp_avg_sq.{n}"].to(p.device),
                }
    return True


def lr_at(step: int, config: TrainConfig, minutes: float | None = None) -> float:
    """Linear warmup, then cosine decay from lr to lr·min_lr_ratio at config.steps — or at
    config.max_minutes when that comes first (``minutes`` = wall time so far), so a run bounded
    by time (a GPU slice) still ends its schedule."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if minutes is not None and config.max_minutes:
        progress = max(progress, min(1.0, minutes / config.max_minutes))
    cos = 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * cos)


# --------------------------------------------------------------------------------------------
# Loss


def sample_tau(n: int, high_noise_fraction: float = 0.0, device: Any = "cpu") -> torch.Tensor:
    """Training noise times [n] in [0, 1): uniform, except that a ``high_noise_fraction`` of them
    is drawn from [0.7, 1) (log-SNR below −2.6)."""
    tau = torch.rand(n, device=device)
    high = torch.rand(n, device=device) < high_noise_fraction
    return torch.where(high, 0.7 + 0.3 * tau, tau)


def loss_weight(tau: torch.Tensor, kind: str, cap: float = 20.0) -> torch.Tensor:
    """Per-example weight of the L1 ε-loss: 1 ("eps", spec §5.1) or min(1/α(τ), cap) ("v").

    "v" makes the loss |ε̂ − ε|/α = |x̂0 − x0|/σ: the ε-loss at low noise, the x0-loss at high
    noise (v-prediction's weighting, Salimans & Ho 2022), still on the model's ε output.
    """
    if kind == "eps":
        return torch.ones_like(tau)
    if kind == "v":
        alpha, _ = diffusion.alpha_sigma(tau.float())
        return (1.0 / alpha).clamp(max=cap)
    raise ValueError(f"unknown loss weighting {kind!r}; choose eps or v")


def denoise_loss(
    model: SpectrogramDiffusion,
    batch: data.Batch,
    tau: torch.Tensor,
    noise: torch.Tensor,
    bf16: bool = False,
) -> torch.Tensor:
    """Mean L1 between the model's output and its target, per example: (B,) float32.

    The target is the noise ε (spec §5.1) or v = α·ε − σ·x0, by ``model.config.prediction_type``.
    """
    z = diffusion.q_sample(batch.target, tau, noise)  # (B, 256, 128)
    if model.config.prediction_type == "v_prediction":
        alpha, sigma = (s.view(-1, 1, 1) for s in diffusion.alpha_sigma(tau.float()))
        target = alpha * noise - sigma * batch.target
    else:
        target = noise
    dev = batch.target.device
    ctx = torch.autocast(dev.type, torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        kv = model.precompute(model.encode(batch.tokens, batch.context, batch.context_mask))
        out = model(z, tau, kv)  # (B, 256, 128) float32
    return (out.float() - target).abs().mean(dim=(1, 2))


@torch.no_grad()
def validation_loss(
    model: SpectrogramDiffusion,
    examples: Sequence[data.Example],
    device: torch.device,
    bf16: bool = False,
    batch_size: int = 16,
    taus: Sequence[float] = VAL_TAUS,
) -> float:
    """Mean L1 loss (``denoise_loss``) over fixed examples × a fixed τ grid with fixed noise (seed 0)."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(0)
    total, count = 0.0, 0
    for i in range(0, len(examples), batch_size):
        batch = data.collate(examples[i : i + batch_size]).to(device)
        for t in taus:
            tau = torch.full((batch.target.shape[0],), t, device=device)
            noise = torch.randn(batch.target.shape, generator=gen).to(device)
            total += float(denoise_loss(model, batch, tau, noise, bf16).sum())
            count += batch.target.shape[0]
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class _Run:
    """What one training run holds while it runs (the argument of the helpers below)."""

    config: TrainConfig
    out: Path
    device: torch.device
    bf16: bool
    model: SpectrogramDiffusion  # trained weights
    ema: SpectrogramDiffusion  # their moving average: what gets saved
    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # the trainable ones
    codec: tokens.Codec
    program_map: str
    history: dict[str, Any]  # config.json "training" of the resumed folder
    data_info: dict[str, Any]  # the cache's index.json
    t_start: float
    log_file: TextIO
    writer: csv.DictWriter
    val_table: list[dict[str, float]] = field(default_factory=list)

    @property
    def step0(self) -> int:
        """Steps taken before this run (by the runs it resumes)."""
        return int(self.history.get("steps", 0))

    @property
    def minutes(self) -> float:
        return (time.time() - self.t_start) / 60


def _model_to_train(config: TrainConfig) -> tuple[SpectrogramDiffusion, tokens.Codec, str, dict]:
    """Model, codec, program map and training history: from the resumed folder, else new."""
    if not config.resume:
        codec = tokens.Codec(num_velocity_bins=config.num_velocity_bins)
        return build_model(config, codec), codec, config.program_map, {"steps": 0, "runs": []}
    loaded = weights.load_model(config.resume, verify=True)
    model = SpectrogramDiffusion(dataclasses.replace(loaded.config, dropout=config.dropout))
    model.load_state_dict(loaded.model.state_dict())
    history = dict(loaded.meta.get("training") or {"steps": 0, "runs": []})
    history.setdefault("runs", [])
    codec = tokens.Codec.from_dict(loaded.meta.get("codec") or {})
    return model, codec, loaded.program_map, history


def _trainable(
    model: SpectrogramDiffusion, device: torch.device
) -> tuple[SpectrogramDiffusion, list[torch.nn.Parameter]]:
    """Put ``model`` in training mode on ``device`` (position tables fixed); returns its EMA copy
    (the saved weights: the EMA of resumed weights starts at them) and the trainable parameters."""
    model.to(device).train()
    model.requires_grad_(True)
    for m in (model.notes_encoder, model.continuous_encoder, model.decoder):
        m.position_encoding.weight.requires_grad_(False)  # fixed tables
    ema = SpectrogramDiffusion(model.config).to(device).eval()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    return ema, [p for p in model.parameters() if p.requires_grad]


def _optimizer(params: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only."""
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.99),
    )


def _examples(
    config: TrainConfig, codec: tokens.Codec, program_map: str
) -> tuple[data.ExampleSampler, list[data.Example], dict[str, Any], str]:
    """Training sampler, fixed validation examples, the cache's index.json and a summary line."""
    train_pieces = cache.load_cache(config.data, "train")
    val_pieces = cache.load_cache(config.data, "val")
    sampler_args = dict(codec=codec, program_map=program_map, max_tokens=config.max_tokens)
    sampler = data.ExampleSampler(train_pieces, cfg_drop=config.cfg_drop, **sampler_args)
    val_set = data.fixed_examples(val_pieces, config.val_examples, **sampler_args)
    index_file = Path(config.data) / "index.json"
    data_info = json.loads(index_file.read_text()) if index_file.is_file() else {}
    hours = sum(p.seconds for p in train_pieces) / 3600
    summary = f"{len(train_pieces)} train pieces ({hours:.2f} h), {len(val_pieces)} val pieces"
    return sampler, val_set, data_info, summary


def _open_log(path: Path, append: bool) -> tuple[TextIO, csv.DictWriter]:
    """The CSV training log: appended to when resuming into a folder that has one."""
    new = not path.exists() or not append
    log_file = open(path, "w" if new else "a", newline="")  # noqa: SIM115
    writer = csv.DictWriter(log_file, fieldnames=LOG_FIELDS)
    if new:
        writer.writeheader()
    return log_file, writer


def _train_step(run: _Run, batch: data.Batch, lr: float, weighting: str) -> tuple[float, float]:
    """One optimizer step of the weighted denoising loss; returns (loss, gradient norm)."""
    for g in run.opt.param_groups:
        g["lr"] = lr
    tau = sample_tau(batch.target.shape[0], run.config.high_noise_fraction, run.device)
    noise = torch.randn_like(batch.target)
    loss = denoise_loss(run.model, batch, tau, noise, run.bf16) * loss_weight(tau, weighting)
    loss = loss.mean()
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(run.params, run.config.grad_clip)
    run.opt.step()
    return float(loss.detach()), float(norm)


@torch.no_grad()
def _update_ema(run: _Run, step: int) -> None:
    """EMA ← lerp towards the weights, with a decay that warms up over the first steps."""
    d = min(run.config.ema_decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(run.ema.parameters()), list(run.model.parameters()), 1 - d)


def _record(run: _Run, step: int, **row: float) -> None:
    """One row of train_log.csv."""
    elapsed = round(time.time() - run.t_start, 1)
    run.writer.writerow({"step": run.step0 + step, "elapsed_s": elapsed, **row})
    run.log_file.flush()


def _log_progress(run: _Run, step: int, lr: float, losses: list, norms: list, rate: float, log):
    """Mean loss and gradient norm since the last report, in the CSV and the log."""
    row = dict(
        lr=lr,
        loss=float(np.mean(losses)),
        grad_norm=float(np.mean(norms)),
        examples_per_s=round(rate, 2),
    )
    _record(run, step, **row)
    log(
        f"[train] step {run.step0 + step} loss {row['loss']:.4f} lr {lr:.2e} "
        f"gnorm {row['grad_norm']:.2f} {rate:.1f} ex/s"
    )


def _validate(run: _Run, val_set: Sequence[data.Example], step: int) -> float:
    """EMA validation loss at ``step``, recorded in the CSV and the model card's table."""
    v = validation_loss(run.ema, val_set, run.device, run.bf16)
    row = {"step": run.step0 + step, "val_loss": round(v, 5), "minutes": round(run.minutes, 1)}
    run.val_table.append(row)
    _record(run, step, val_loss=round(v, 5))
    return v


def _run_record(run: _Run, step: int, final: bool) -> dict[str, Any]:
    """This run's entry in config.json's ``training.runs``."""
    config, kind = run.config, run.model.config.prediction_type
    weighting = f", weighting {config.loss_weighting}" if kind == "epsilon" else ""
    info = {k: run.data_info.get(k) for k in ("pieces", "hours", "hours_by_source", "settings")}
    return {
        "steps": step,
        "wall_minutes": round(run.minutes, 2),
        "hardware": hardware(),
        "device": str(run.device),
        "bf16": run.bf16,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "warmup_steps": config.warmup_steps,
        "ema_decay": config.ema_decay,
        "dropout": config.dropout,
        "loss": f"L1 on {kind}, continuous cosine tau{weighting}",
        "skip_init": config.skip_init and not config.resume and kind == "epsilon",
        "max_tokens": config.max_tokens,
        "examples_seen": step * config.batch_size,
        "data": {"cache": str(config.data), **info},
        "resumed_from": config.resume,
        "finished": final,
    }


def _save(run: _Run, step: int, final: bool, log) -> None:
    """The EMA model folder (+ training state), with the history of every run so far."""
    training = {
        "steps": run.step0 + step,
        "runs": [*run.history.get("runs", []), _run_record(run, step, final)],
        "val_loss": run.val_table,
        "parameters": sum(p.numel() for p in run.params),
    }
    extra: dict[str, Any] = {"training": training}
    if run.config.save_optimizer:
        extra["training_state"] = _save_state(run.out, run.model, run.opt)
    weights.save_model(
        run.ema,
        run.out,
        name=run.config.name,
        description=run.config.description,
        codec=run.codec.to_dict(),
        program_map=run.program_map,
        inverter={"type": "griffin-lim"},
        extra=extra,
    )
    run.log_file.flush()
    log(f"[train] saved {run.out} at step {run.step0 + step} ({run.minutes:.1f} min)")


def _start_run(
    config: TrainConfig, t_start: float, log
) -> tuple[_Run, data.ExampleSampler, list[data.Example]]:
    """Everything before the first step: model, EMA and optimizer (resumed or new), training and
    validation examples, the CSV log."""
    device = weights.resolve_device(config.device)
    bf16 = _use_bf16(config.bf16, device)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    model, codec, program_map, history = _model_to_train(config)
    ema, params = _trainable(model, device)
    opt = _optimizer(params, config)
    resumed_opt = bool(config.resume) and _load_state(Path(config.resume), model, opt)
    sampler, val_set, data_info, summary = _examples(config, codec, program_map)
    n_params = sum(p.numel() for p in params)
    log(
        f"[train] {n_params / 1e6:.2f} M trainable params, device {device}, bf16 {bf16}, "
        f"{summary}, resumed optimizer: {resumed_opt}"
    )
    log_file, writer = _open_log(out / "train_log.csv", append=bool(config.resume))
    run = _Run(
        config=config,
        out=out,
        device=device,
        bf16=bf16,
        model=model,
        ema=ema,
        opt=opt,
        params=params,
        codec=codec,
        program_map=program_map,
        history=history,
        data_info=data_info,
        t_start=t_start,
        log_file=log_file,
        writer=writer,
        val_table=list(history.get("val_loss", [])) if config.resume else [],
    )
    return run, sampler, val_set


def train(config: TrainConfig, log=print) -> Path:
    """Run one training run; returns the model folder (``config.out``)."""
    cache.check_cache(config.data)  # before anything is written
    t_start = time.time()
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    run, sampler, val_set = _start_run(config, t_start, log)
    # The ε-loss weighting applies to ε models only (v-prediction already weighs x0 at high noise).
    weighting = config.loss_weighting if run.model.config.prediction_type == "epsilon" else "eps"
    stream = data.BatchStream(
        sampler, config.seed, config.batch_size, config.length_buckets, config.data_workers
    )
    batches = iter(stream)
    last_save, t_log, seen, losses, norms = time.time(), time.time(), 0, [], []
    step = 0
    try:
        while step < config.steps:
            if config.max_minutes is not None and run.minutes > config.max_minutes:
                log(f"[train] time limit of {config.max_minutes} min reached")
                break
            batch = next(batches).to(run.device)
            lr = lr_at(step, config, run.minutes)
            loss, norm = _train_step(run, batch, lr, weighting)
            step += 1
            _update_ema(run, step)
            seen += batch.target.shape[0]
            losses.append(loss)
            norms.append(norm)
            if step % config.log_every == 0:
                _log_progress(run, step, lr, losses, norms, seen / (time.time() - t_log), log)
                t_log, seen, losses, norms = time.time(), 0, [], []
            if step % config.val_every == 0 or step == config.steps:
                v = _validate(run, val_set, step)
                log(f"[train] step {run.step0 + step} val_loss {v:.4f} (EMA)")
                t_log = time.time()
            if time.time() - last_save > config.checkpoint_minutes * 60:
                _save(run, step, final=False, log=log)
                last_save = time.time()
    finally:
        stream.close()
    if not run.val_table or run.val_table[-1]["step"] != run.step0 + step:
        _validate(run, val_set, step)
    _save(run, step, final=True, log=log)
    run.log_file.close()
    log(f"[train] redrawn examples over {config.max_tokens} tokens: {stream.rejected}")
    return run.out


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One --option per TrainConfig field (for `midisynth train` and `python -m midisynth.train`)."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name == "model_overrides":
            parser.add_argument(flag, default=None, help="JSON dict, e.g. '{\"d_model\": 192}'")
        elif f.type in ("bool",):
            parser.add_argument(flag, default=default, action=argparse.BooleanOptionalAction)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" ")[0], str)
            parser.add_argument(flag, default=default, type=kind, help=f"default: {default}")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    values["model_overrides"] = (
        json.loads(values["model_overrides"]) if values["model_overrides"] else {}
    )
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m midisynth.train", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    config = config_from_args(parser.parse_args(argv))
    out = train(config)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
