"""Training the neural inverter (``vocoder.py``) on the CPU.

    python -m midisynth.train_vocoder build AUDIO_DIR --procedural 200 [--midi NAME=DIR[:MAX]] \\
        --soundfont A.sf2 --soundfont B.sf2
    python -m midisynth.train_vocoder train AUDIO_DIR --out runs/vocoder [--resume DIR] \\
        [--max-minutes 60] [--vocoder '{"mag_base": true}']
    python -m midisynth.train_vocoder release runs/vocoder weights/vocoder-p

``build`` synthesizes pieces with FluidSynth (as the model's cache, ``cache.py``) and keeps the
audio (16 kHz mono, float16, ≤ 60 s per piece) in ``audio-*.npz`` shards; a stable 4 % of the
pieces (by name) go to ``val-*.npz``. ``train`` draws random 1.28 s crops, computes their log-mel
with the front end (``audio.log_mel``), inverts it and scores the audio against the crop: L1 of log
magnitudes and spectral convergence at three STFT resolutions, plus L1 between the output's
log-mel and the input's. AdamW with EMA weights, checkpoints every few minutes (the EMA model;
``train_state.safetensors`` with raw weights + optimizer moments beside it, never committed).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import audio, cache, synth
from .metrics import log_spectral_distance
from .midi import read_midi
from .vocoder import Vocoder, VocoderConfig, load_vocoder, save_vocoder

CROP_FRAMES = 64  # 1.28 s
RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop) of the STFT losses
MAX_PIECE_SECONDS = 60.0


# ---- Audio set ----------------------------------------------------------------------------------


def _synth_piece(job: cache.Job, model: str | None = None) -> tuple[str, np.ndarray, Any]:
    """(name, audio, the ``model``'s own log-mel of the same notes or None) for one piece."""
    torch.set_num_threads(1)
    seed = int(hashlib.sha1(job.name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([job.seed, seed])
    if job.midi is not None:
        notes = synth.randomize_programs(read_midi(job.midi).notes, rng, job.keep_programs)
        notes = [n for n in notes if n.start < MAX_PIECE_SECONDS]
    else:
        notes = synth.procedural_piece(rng, float(rng.uniform(15, 45)))
    duration = min(max(n.end for n in notes), MAX_PIECE_SECONDS) + cache.TAIL_SECONDS
    wave, played = synth.synthesize(notes, duration, job.soundfont, reverb=job.reverb)
    mel = _model_mel(model, played, len(wave), job.soundfont) if model else None
    return job.name, wave, mel


_MODELS: dict[str, Any] = {}  # one loaded model per worker process


def _model_mel(model: str, notes: Sequence[Any], samples: int, soundfont: str | None) -> np.ndarray:
    """The model's rendered log-mel (frames of ``samples``, 128) float16 of ``notes``, in the
    style of ``soundfont`` where the model has one by that name: the input a vocoder fine-tuned
    on generated mels ("ground-truth aligned", frame by frame with the audio) learns from."""
    from .midi import Score
    from .render import RenderOptions, render

    if model not in _MODELS:
        from . import weights

        _MODELS[model] = weights.load_model(model, device="cpu", dtype="float32")
    loaded = _MODELS[model]
    styles = [s.lower() for s in (loaded.config.frame.styles if loaded.config.frame else [])]
    stem = Path(soundfont).stem.lower() if soundfont else ""
    style = stem if stem in styles else None
    end = max((n.end for n in notes), default=0.0)
    score = Score(list(notes), end, [], [], [], [], 1, 220, [])
    tail = max(0.0, samples / audio.SAMPLE_RATE - end)
    rendered = render(loaded, score, RenderOptions(inverter="vocoder-p", tail=tail, style=style))
    frames = audio.num_frames(samples)
    mel = np.full((frames, audio.N_MELS), audio.LOG_FLOOR, np.float32)
    k = min(frames, len(rendered.mel))
    mel[:k] = rendered.mel[:k]
    return mel.astype(np.float16)


def build_audio_set(
    jobs: Sequence[cache.Job], out: Path, workers: int = 2, log=print, model: str | None = None
) -> dict:
    """Synthesize ``jobs`` into ``out``/audio-00000.npz and val-00000.npz; returns the index.
    With ``model``, each piece also keeps that model's rendered log-mel of the same notes
    (``m<i>`` beside ``a<i>``), for ``train --gta``."""
    from concurrent.futures import ProcessPoolExecutor

    out.mkdir(parents=True, exist_ok=True)
    split: dict[str, list[tuple[str, np.ndarray, Any]]] = {"audio": [], "val": []}
    failed = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for job, fut in [(j, pool.submit(_synth_piece, j, model)) for j in jobs]:
            try:
                name, wave, mel = fut.result()
            except Exception as e:  # noqa: BLE001 - a bad piece must not stop the set
                failed.append(f"{job.name}: {str(e).splitlines()[0] if str(e) else e}")
                continue
            key = "val" if cache.is_validation(name, 0.04) else "audio"
            split[key].append((name, wave, mel))
    if not split["val"] and len(split["audio"]) > 1:
        split["val"].append(split["audio"].pop())
    for key, items in split.items():
        np.savez(
            out / f"{key}-00000.npz",
            **{f"a{i}": w.astype(np.float16) for i, (_, w, _) in enumerate(items)},
            **{f"m{i}": m for i, (_, _, m) in enumerate(items) if m is not None},
            names=np.array([n for n, _, _ in items]),
        )
    index = {
        "pieces": {k: len(v) for k, v in split.items()},
        "hours": {
            k: sum(len(w) for _, w, _ in v) / audio.SAMPLE_RATE / 3600 for k, v in split.items()
        },
        "failed": failed,
        "model_mels": model,
    }
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    log(f"[vocoder data] {index['pieces']} pieces, {index['hours']} h, {len(failed)} failed")
    return index


def load_audio_set(folder: Path, split: str = "audio") -> list[np.ndarray]:
    with np.load(folder / f"{split}-00000.npz") as z:
        return [z[k].astype(np.float32) for k in z.files if k.startswith("a")]


def load_model_mels(folder: Path, split: str = "audio") -> list[np.ndarray] | None:
    """The generated log-mels (frames, 128) float32 kept by ``build --model``, piece by piece as
    ``load_audio_set``; None when the set has none."""
    with np.load(folder / f"{split}-00000.npz") as z:
        keys = [k for k in z.files if k.startswith("a")]
        if not keys or f"m{keys[0][1:]}" not in z.files:
            return None
        return [z[f"m{k[1:]}"].astype(np.float32) for k in keys]


# ---- Loss ---------------------------------------------------------------------------------------


def stft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT loss (log-magnitude L1 + spectral convergence), averaged: scalar."""
    total = pred.new_zeros(())
    for n_fft, hop in RESOLUTIONS:
        win = torch.hann_window(n_fft, device=pred.device)
        sp = torch.stft(pred, n_fft, hop, window=win, return_complex=True).abs()
        st = torch.stft(target, n_fft, hop, window=win, return_complex=True).abs()
        total = total + (torch.log(sp + 1e-5) - torch.log(st + 1e-5)).abs().mean()
        total = total + torch.linalg.norm(st - sp) / torch.linalg.norm(st).clamp_min(1e-5)
    return total / len(RESOLUTIONS)


def phase_loss(spec: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
    """Phase-derivative loss of a predicted complex STFT ``spec`` (B, T, 513) against the crops
    ``wave`` (B, T·320) at the front end's framing: 1 − cos of the error in the instantaneous
    frequency (phase step from frame to frame) and in the group delay (phase step from bin to bin),
    each weighted by the target's magnitude. Derivatives, not the phase itself: a mel does not fix
    a sound's absolute phase, but it does fix how each partial's phase advances. Scalar."""
    from .griffinlim import stft

    target = stft(wave)[:, : spec.shape[1]]  # (B, T, 513)
    mag_t = target.abs()
    unit_t = target / mag_t.clamp_min(1e-7)
    unit_p = spec / spec.abs().clamp_min(1e-7)
    total = wave.new_zeros(())
    for dim in (1, 2):  # time (instantaneous frequency), frequency (group delay)
        n = spec.shape[dim] - 1
        step_p = unit_p.narrow(dim, 1, n) * unit_p.narrow(dim, 0, n).conj()
        step_t = unit_t.narrow(dim, 1, n) * unit_t.narrow(dim, 0, n).conj()
        w = torch.sqrt(mag_t.narrow(dim, 1, n) * mag_t.narrow(dim, 0, n))
        agree = (step_p * step_t.conj()).real  # cos of the error
        total = total + (w * (1 - agree)).sum() / w.sum().clamp_min(1e-7)
    return total


def mel_loss(pred: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
    """L1 between the output's log-mel and the input log-mel (B, T, 128)."""
    return (audio.log_mel(pred, compute_dtype=torch.float32)[:, : mel.shape[1]] - mel).abs().mean()


# ---- Training -----------------------------------------------------------------------------------


@dataclass
class VocoderTrainConfig:
    data: str = "vocoder-audio"
    out: str = "runs/vocoder"
    resume: str | None = None
    batch_size: int = 16
    lr: float = 1e-3
    steps: int = 1_000_000
    max_minutes: float | None = 60.0
    ema_decay: float = 0.999
    mel_weight: float = 1.0
    checkpoint_minutes: float = 5.0
    log_every: int = 25
    seed: int = 0
    threads: int | None = None
    device: str = "cpu"  # "cuda" on a GPU machine: crops are cut on the CPU, the rest runs there
    vocoder: dict = field(default_factory=dict)  # VocoderConfig fields of a new model
    # griffin-lim mode: also score the audio after this many (differentiable) Griffin-Lim
    # iterations, so the magnitudes learn what Griffin-Lim rebuilds well (0 = magnitudes only)
    through_gl: int = 0
    # predicted mode: weight of ``phase_loss`` (instantaneous frequency + group delay; 0 = off)
    phase_weight: float = 0.0
    # Fraction of crops whose input is the generating model's own mel of the same frames (a set
    # built with ``build --model``), not the audio's: the vocoder learns to turn that model's
    # smoother mels into the real sound ("ground-truth aligned" fine-tuning). 0 = off.
    gta: float = 0.0


def magnitude_loss(log_mag: torch.Tensor, wave: torch.Tensor) -> torch.Tensor:
    """griffin-lim mode: L1 of log magnitudes + spectral convergence against the crops' own STFT
    (front-end framing, ``griffinlim.stft``); log_mag (B, T, 513), wave (B, T·320). Scalar."""
    from .griffinlim import stft

    target = stft(wave).abs()[:, : log_mag.shape[1]]  # (B, T, 513)
    pred = log_mag.clamp(max=12.0).exp()
    l1 = (log_mag - torch.log(target + 1e-5)).abs().mean()
    sc = torch.linalg.norm(target - pred) / torch.linalg.norm(target).clamp_min(1e-5)
    return l1 + sc


def _crops(
    pieces: list[np.ndarray],
    rng: np.random.Generator,
    n: int,
    mels: list[np.ndarray] | None = None,
    gta: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, CROP_FRAMES·320) audio crops, each starting on a frame, and with ``mels`` the input
    log-mel (B, CROP_FRAMES, 128): the generated mel of the same frames for a fraction ``gta``
    of the crops, else None (the input is then the crops' own log-mel, ``crop_mels``)."""
    size = CROP_FRAMES * audio.HOP
    out = np.zeros((n, size), np.float32)
    gen = np.full((n, CROP_FRAMES, audio.N_MELS), np.nan, np.float32) if mels else None
    lengths = np.array([len(p) for p in pieces], np.float64)
    for i, k in enumerate(rng.choice(len(pieces), n, p=lengths / lengths.sum())):
        p = pieces[k]
        start = int(rng.integers(0, max(1, (len(p) - size) // audio.HOP))) * audio.HOP
        seg = p[start : start + size]
        out[i, : len(seg)] = seg
        if gen is not None and rng.random() < gta:
            f = start // audio.HOP
            m = mels[k][f : f + CROP_FRAMES]
            gen[i] = audio.LOG_FLOOR
            gen[i, : len(m)] = m
    return torch.from_numpy(out), None if gen is None else torch.from_numpy(gen)


def input_mels(wave: torch.Tensor, gen: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input log-mel, the crops' own log-mel), each (B, CROP_FRAMES, 128): the input is the
    generated mel where ``gen`` has one (rows not NaN), else the crop's own."""
    real = crop_mels(wave)
    if gen is None:
        return real, real
    have = ~torch.isnan(gen[:, :1, :1])
    return torch.where(have, gen.to(real.device), real), real


def crop_mels(wave: torch.Tensor) -> torch.Tensor:
    """Log-mel (B, CROP_FRAMES, 128) of crops (B, CROP_FRAMES·320), as the model would make."""
    return audio.log_mel(wave, compute_dtype=torch.float32)[:, :CROP_FRAMES]


def _load_train_state(folder: Path, model: Vocoder, opt: torch.optim.Optimizer) -> None:
    """Raw weights and AdamW moments from ``train_state.safetensors`` (written by ``_save``)."""
    from safetensors.torch import load_file

    st = load_file(str(folder / "train_state.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(st[f"raw.{n}"])
    for n, p in params.items():
        opt.state[p] = {
            "step": st[f"step.{n}"][0],
            "exp_avg": st[f"m.{n}"].to(p.device),
            "exp_avg_sq": st[f"v.{n}"].to(p.device),
        }


def _save(out: Path, ema: Vocoder, model: Vocoder, opt, meta: dict) -> None:
    """The EMA vocoder (+ ``meta``) and, beside it, raw weights + optimizer moments (never
    committed: ``train_state.safetensors``)."""
    from safetensors.torch import save_file

    save_vocoder(ema, out, meta)
    names = {p: n for n, p in model.named_parameters()}
    st = {f"raw.{n}": p.detach().cpu().contiguous() for n, p in model.named_parameters()}
    for p, s in opt.state.items():
        st[f"m.{names[p]}"], st[f"v.{names[p]}"] = s["exp_avg"].cpu(), s["exp_avg_sq"].cpu()
        st[f"step.{names[p]}"] = torch.as_tensor(s["step"], dtype=torch.float32).reshape(1)
    save_file(st, str(out / "train_state.safetensors"))


def _loss(
    model: Vocoder,
    cfg: VocoderTrainConfig,
    wave: Tensor,
    mel: Tensor,
    step: int,
    target_mel: Tensor | None = None,
) -> Tensor:
    """The training loss for input ``mel``; the mel term compares the output's log-mel with
    ``target_mel`` (the crops' own; default ``mel``, the same when the input is not generated)."""
    if model.config.phase == "griffin-lim":  # magnitudes only: no phase, no iSTFT to learn
        log_mag = model.log_magnitude(mel)
        loss = magnitude_loss(log_mag, wave)
        if cfg.through_gl:
            from .griffinlim import griffin_lim

            mags = log_mag.clamp(max=12.0).exp()
            pred = torch.stack([griffin_lim(m, cfg.through_gl, seed=step) for m in mags])
            loss = loss + stft_loss(pred, wave)
        return loss
    from .vocoder import istft_batch

    spec = model.spectrum(mel)
    pred = istft_batch(spec)
    target_mel = mel if target_mel is None else target_mel
    loss = stft_loss(pred, wave) + cfg.mel_weight * mel_loss(pred, target_mel)
    if cfg.phase_weight:
        loss = loss + cfg.phase_weight * phase_loss(spec, wave)
    return loss


def _lr(cfg: VocoderTrainConfig, step: int, minutes: float) -> float:
    """200-step warmup, then cosine decay to 10 % at ``max_minutes``."""
    frac = min(1.0, minutes / cfg.max_minutes) if cfg.max_minutes else 0.0
    return cfg.lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))


def train(cfg: VocoderTrainConfig, log=print) -> Path:
    """One training run (new, or continued from ``cfg.resume``); returns the folder ``cfg.out``."""
    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    folder, out = Path(cfg.data), Path(cfg.out)
    pieces, val = load_audio_set(folder), load_audio_set(folder, "val")
    gen = load_model_mels(folder) if cfg.gta else None
    if cfg.gta and gen is None:
        raise ValueError(f"--gta needs a set built with --model; {folder} has no generated mels")
    val_gen = load_model_mels(folder, "val") if gen is not None else None
    dev = torch.device(cfg.device)
    model = load_vocoder(cfg.resume) if cfg.resume else Vocoder(VocoderConfig(**cfg.vocoder))
    model.to(dev)
    model.train().requires_grad_(True)
    ema = Vocoder(model.config)
    ema.load_state_dict(model.state_dict())
    ema.to(dev).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.01)
    meta = json.loads((Path(cfg.resume) / "vocoder.json").read_text()) if cfg.resume else {}
    if cfg.resume and (Path(cfg.resume) / "train_state.safetensors").is_file():
        _load_train_state(Path(cfg.resume), model, opt)
    step0, history = int(meta.get("steps", 0)), list(meta.get("val", []))
    rng = np.random.default_rng(cfg.seed + step0)
    val_wave, val_g = _crops(val, np.random.default_rng(1234), 16, val_gen, 1.0)
    val_wave = val_wave.to(dev)
    val_mel = crop_mels(val_wave)
    val_in = input_mels(val_wave, val_g)[0] if val_g is not None else None
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[vocoder] {n_params / 1e6:.2f} M params, {len(pieces)} pieces, resumed from {cfg.resume}")
    ema_p, model_p = list(ema.parameters()), list(model.parameters())
    last, step, acc = time.time(), 0, []
    while True:
        minutes = (time.time() - t0) / 60
        done = step >= cfg.steps or (cfg.max_minutes is not None and minutes > cfg.max_minutes)
        if done or time.time() - last > cfg.checkpoint_minutes * 60:
            with torch.no_grad():
                pred = ema(val_mel)
            cpu_pairs = zip(val_wave.cpu(), pred.cpu(), strict=True)
            v = {"stft": float(stft_loss(pred, val_wave)), "mel": float(mel_loss(pred, val_mel))}
            v["lsd2048"] = float(np.mean([log_spectral_distance(a, b, 2048) for a, b in cpu_pairs]))
            if val_in is not None:  # from the generated mels of the same crops
                with torch.no_grad():
                    pg = ema(val_in)
                v["gta_stft"] = float(stft_loss(pg, val_wave))
                v["gta_mel"] = float(mel_loss(pg, val_mel))
            history.append({"step": step0 + step, "minutes": round(minutes, 1), **v})
            _save(
                out, ema, model, opt, {"steps": step0 + step, "val": history, "train": asdict(cfg)}
            )
            log(f"[vocoder] saved at step {step0 + step}: val {v}")
            last = time.time()
        if done:
            return out
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, minutes)
        wave, g = _crops(pieces, rng, cfg.batch_size, gen, cfg.gta)
        wave = wave.to(dev)
        mel_in, mel_real = input_mels(wave, g)
        loss = _loss(model, cfg, wave, mel_in, step, mel_real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            torch._foreach_lerp_(ema_p, model_p, 1 - min(cfg.ema_decay, (1 + step) / (10 + step)))
        acc.append(loss.item())
        if step % cfg.log_every == 0:
            log(f"[vocoder] step {step0 + step} loss {np.mean(acc):.4f}")
            acc = []


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m midisynth.train_vocoder")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="synthesize the training audio")
    b.add_argument("out", type=Path)
    b.add_argument("--midi", action="append", default=[], metavar="NAME=DIR[:MAX]")
    b.add_argument("--procedural", type=int, default=0)
    b.add_argument("--soundfont", action="append", default=[])
    b.add_argument("--workers", type=int, default=2)
    b.add_argument(
        "--model",
        default=None,
        help="also keep this model's rendered log-mel of each piece (for train --gta)",
    )
    b.add_argument(
        "--reverb",
        action="store_true",
        help="FluidSynth's default reverb and chorus on (as plain"
        " FluidSynth renders and the evaluation references); default dry",
    )
    t = sub.add_parser("train", help="train (or continue) a vocoder")
    t.add_argument("data")
    for name in ("out", "resume"):
        t.add_argument(f"--{name}", default=getattr(VocoderTrainConfig, name, None))
    t.add_argument("--max-minutes", type=float, default=60.0)
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    t.add_argument("--lr", type=float, default=VocoderTrainConfig.lr)
    t.add_argument(
        "--through-gl", type=int, default=0, help="griffin-lim mode: GL iterations in the loss"
    )
    t.add_argument(
        "--phase-weight", type=float, default=0.0, help="predicted mode: phase-derivative loss"
    )
    t.add_argument(
        "--gta",
        type=float,
        default=0.0,
        help="fraction of crops fed the model's generated mel (a set built with --model)",
    )
    t.add_argument(
        "--vocoder",
        default="{}",
        help='VocoderConfig of a new model, JSON: {"phase": "griffin-lim"}',
    )
    r = sub.add_parser("release", help="copy a trained vocoder for shipping (no optimizer state)")
    r.add_argument("src", type=Path)
    r.add_argument("dst", type=Path)
    r.add_argument("--evaluation", default=None, help="JSON recorded in vocoder.json")
    args = ap.parse_args(argv)
    if args.cmd == "release":
        from .vocoder import release_vocoder

        evaluation = json.loads(args.evaluation) if args.evaluation else None
        print(release_vocoder(args.src, args.dst, evaluation))
        return 0
    if args.cmd == "build":
        fonts = [str(synth.find_soundfont(f)) for f in (args.soundfont or [None])]
        jobs: list[cache.Job] = []
        for spec in args.midi:
            name, _, rest = spec.partition("=")
            folder, _, limit = rest.partition(":")
            jobs += cache.midi_jobs(name, folder, max_files=int(limit) if limit else None)
        jobs += [
            cache.Job(f"procedural/{i:05d}", "procedural", seed=i) for i in range(args.procedural)
        ]
        jobs = [
            dataclasses.replace(
                j, soundfont=synth.pick_soundfont(j.name, fonts), reverb=args.reverb
            )
            for j in jobs
        ]
        build_audio_set(jobs, args.out, args.workers, model=args.model)
        return 0
    cfg = VocoderTrainConfig(
        data=args.data,
        out=args.out,
        resume=args.resume,
        max_minutes=args.max_minutes,
        threads=args.threads,
        batch_size=args.batch_size,
        lr=args.lr,
        vocoder=json.loads(args.vocoder),
        through_gl=args.through_gl,
        phase_weight=args.phase_weight,
        gta=args.gta,
        device=args.device,
    )
    print(train(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
