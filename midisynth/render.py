"""RenderOptions and render(): the sequential segment loop.

Each 5.12 s segment is denoised conditioned on its note tokens and on the previous *generated*
segment (the first one gets an empty, masked context). Finished segments go straight to a streaming
inverter and out, so memory stays flat in song length. Several files render together by batching
segment i of every file into one denoising batch (each file keeps its own random generator, so a
file renders the same alone or in a batch).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import numpy as np
import torch

from . import audio, cudagraph, diffusion, notegrid, tokens
from .inverter import StreamingInverter, load_inverter
from .midi import (  # noqa: F401 - TooLongError and format_duration are re-exported
    Note,
    Score,
    TooLongError,
    check_length,
    format_duration,
    read_midi,
)
from .programs import get_program_map
from .weights import resolve_device, resolve_dtype  # noqa: F401 - render.resolve_* for callers

if TYPE_CHECKING:  # pragma: no cover
    from .weights import LoadedModel

ProgressFn = Callable[[float, float], None]  # (seconds rendered, seconds total)
DEFAULT_MAX_DURATION = 6 * 3600.0  # seconds of output; longer songs are refused (TooLongError)


@dataclass(frozen=True)
class RenderOptions:
    """How to render. Override fields with `dataclasses.replace`."""

    # ddpm (reference), ddpm-cosine (original), ddim(-cosine), dpmpp-2m(-cosine) (fast); None = the
    # model's own choice (config.json "sampling", see with_model_defaults), else DEFAULT_SAMPLER.
    sampler: str | None = None
    steps: int | None = None  # denoising steps per segment; None = the model's or sampler's default
    guidance: float = 1.0  # classifier-free guidance weight; 1 = off (as the diffusers pipeline)
    seed: int = 0  # random seed; same seed + device + dtype → identical output
    tail: float = 1.0  # seconds kept after the MIDI's last note-off (release/reverb)
    inverter: str | None = None  # None = the model's own; or griffin-lim | soundstream-onnx
    program_swaps: tuple[tuple[int, int], ...] = ()  # (from GM program, to GM program)
    track_programs: tuple[tuple[int, int], ...] = ()  # (MIDI track index, GM program)
    drums: bool = True  # False drops channel-10 notes
    # The reference (pretty_midi) obeys tempo events on track 0 only, so files whose tempo map sits
    # on another track play at 120 bpm there; midisynth obeys them unless this is True.
    reference_tempo: bool = False
    # files rendered together (segment i of each file in one batch); None = auto: DEFAULT_BATCH_SIZE
    # on a CPU, on CUDA as many as half the free GPU memory holds (resolve_batch_size)
    batch_size: int | None = None
    # Models with a regression prior (FrameNet): the sampler starts from the prior's mel noised
    # to this τ ∈ (0, 1] (1 = from pure noise); None = the model's config.json "sampling".
    start: float | None = None
    # Seconds of output (MIDI length + tail) beyond which a song is refused before any work, with
    # TooLongError; None = no limit. A 52-byte file can claim 5 years (tempo and ticks at maximum).
    max_duration: float | None = DEFAULT_MAX_DURATION
    # CUDA: each denoising step replayed as a CUDA graph (cudagraph.py: the same numbers, far fewer
    # kernel launches); ignored (eager steps) on other devices.
    cuda_graphs: bool = False
    # Timbre style of a model trained with several (FrameNet ``FrameConfig.styles``, e.g. the
    # SoundFonts of its training audio): a name, case-insensitive, or an unambiguous prefix of one
    # ("musescore"); None = the model's first.
    style: str | None = None
    # FrameNet: who sets each frame's loudness. "denoised": the sampler's output as it is;
    # "prior": the denoised mel shifted, frame by frame (smoothed over 50 ms), to the prior's log
    # energy, so the prior — whose velocity is a monotone gain — sets the level and the denoiser only
    # the texture (louder notes never come out quieter); None = the model's config.json "sampling".
    level: str | None = None
    # FrameNet: standard deviation (nats) of a seeded Gaussian dither added to every bin of every
    # frame of the rendered log-mel. A real short-time spectrum fluctuates from frame to frame
    # (noise, beating partials, reverb); the denoiser's output is closer to its expectation, and
    # the inverter then makes audio too steady. 0 = off; None = the model's config.json "sampling".
    texture: float | None = None

    def n_steps(self) -> int:
        return (
            self.steps
            if self.steps is not None
            else diffusion.get_sampler(self.sampler or DEFAULT_SAMPLER).default_steps
        )


DEFAULT_BATCH_SIZE = 8  # files per batch on a CPU (and where no GPU memory can be read)
MAX_AUTO_BATCH = 64  # the most files the automatic batch size puts together on a GPU
DEFAULT_SAMPLER = "dpmpp-2m"  # for models whose config.json names none (e.g. the official one)
# Frame models (FrameNet) are trained on the continuous cosine schedule and carry a prior to start
# from; these are their defaults when config.json names none (e.g. a run still training).
FRAME_SAMPLING = {"sampler": "ddim-cosine", "steps": 4, "start": 0.5}


def with_model_defaults(options: RenderOptions, model: LoadedModel) -> RenderOptions:
    """``options`` with sampler (and steps, when not given) filled from the model's config.json
    ``"sampling": {"sampler": ..., "steps": ...}`` — a trained model records the settings it was
    evaluated with — else ``DEFAULT_SAMPLER`` with that sampler's default steps. An explicit
    sampler is kept as given (with its own default steps)."""
    own = model.meta.get("sampling") or {}
    if model.config.frame is not None and not own:
        own = FRAME_SAMPLING
    if options.start is None and model.config.frame is not None:
        options = dataclasses.replace(options, start=float(own.get("start", 1.0)))
    if options.level is None and model.config.frame is not None:
        options = dataclasses.replace(options, level=str(own.get("level", "denoised")))
    if options.texture is None and model.config.frame is not None:
        options = dataclasses.replace(options, texture=float(own.get("texture", 0.0)))
    if options.sampler is not None:
        return options
    sampler = own.get("sampler", DEFAULT_SAMPLER)
    diffusion.get_sampler(sampler)  # a bad name in config.json fails here, clearly
    steps = options.steps if options.steps is not None else own.get("steps")
    return dataclasses.replace(options, sampler=sampler, steps=steps)


def style_index(model: LoadedModel, style: str | None) -> int:
    """Index of ``style`` among the model's styles (``RenderOptions.style``; None = 0)."""
    return match_style(list(model.config.frame.styles) if model.config.frame else [], style)


def match_style(styles: Sequence[str], style: str | None) -> int:
    """Index of ``style`` in ``styles``: the name, case-insensitive, or an unambiguous prefix;
    None = 0. ValueError (one line) for a name that matches none or several, or no styles."""
    if style is None:
        return 0
    if not styles:
        raise ValueError(f"--style {style}: this model has no styles to choose from")
    want = style.lower()
    exact = [i for i, s in enumerate(styles) if s.lower() == want]
    hits = exact or [i for i, s in enumerate(styles) if s.lower().startswith(want)]
    if len(hits) != 1:
        what = "matches several" if hits else "is not one"
        raise ValueError(f"--style {style} {what} of this model's styles: {', '.join(styles)}")
    return hits[0]


def check_options(options: RenderOptions, model: LoadedModel) -> None:
    """ValueError (one line) now for sampling settings ``model`` cannot use (e.g. ``ddpm`` on a
    frame model, which starts part-way from its prior) or a style it lacks, not once per file
    after the work began."""
    style_index(model, options.style)
    options = with_model_defaults(options, model)
    if options.level is not None and options.level not in LEVELS:
        raise ValueError(f"unknown level {options.level!r}; choose one of: {', '.join(LEVELS)}")
    if options.texture is not None:
        check_texture(options.texture)
    diffusion.check_settings(
        options.sampler or DEFAULT_SAMPLER,
        options.steps,
        start=options.start if options.start is not None else 1.0,
        guidance=options.guidance,
        unconditional=model.config.frame is None,
    )


def row_bytes(model: LoadedModel) -> int:
    """A generous estimate of the GPU memory one more file in a batch needs (bytes): the widest
    attention of the encoders (scores, heads × L × L, at most max_tokens keys), the cross-attention
    keys/values of every decoder layer, the decoder's activations and the sampler's fp32 state,
    doubled for classifier-free guidance's unconditional rows and for the step graphs' buffers."""
    cfg = model.config
    size = torch.finfo(model.dtype).bits // 8
    keys = cfg.max_tokens + cfg.context_length
    heads = cfg.num_heads
    attn = heads * cfg.max_tokens * cfg.max_tokens * size  # encoder scores (math fallback)
    kv = 2 * cfg.num_decoder_layers * keys * heads * cfg.d_kv * size
    act = 8 * cfg.targets_length * max(cfg.d_ff, 4 * cfg.d_model) * size
    state = 8 * cfg.targets_length * cfg.input_dims * 4
    return 2 * (attn + kv + act + state)


def resolve_batch_size(options: RenderOptions, model: LoadedModel) -> int:
    """``options.batch_size``, or when None: ``DEFAULT_BATCH_SIZE`` off CUDA; on CUDA the largest
    power of two ≤ ``MAX_AUTO_BATCH`` whose rows (``row_bytes``) fit in half the free memory."""
    if options.batch_size is not None:
        return max(1, options.batch_size)
    dev = model.device
    if dev.type != "cuda":
        return DEFAULT_BATCH_SIZE
    free, _total = torch.cuda.mem_get_info(dev)
    free += torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)  # torch's cache
    fits = int(0.5 * free // max(1, row_bytes(model)))
    n = 1
    while n * 2 <= min(fits, MAX_AUTO_BATCH):
        n *= 2
    return n


# --------------------------------------------------------------------------------------------
# Score preparation


def apply_programs(score: Score, options: RenderOptions) -> list[Note]:
    """Instrument swaps and drum removal on the notes (before the model's program mapping)."""
    track_of = {i.index: i.track for i in score.instruments}
    by_track = dict(options.track_programs)
    swaps = dict(options.program_swaps)
    out = []
    for n in score.notes:
        if n.is_drum:
            if options.drums:
                out.append(n)
            continue
        prog = by_track.get(track_of.get(n.instrument, -1), swaps.get(n.program, n.program))
        out.append(n if prog == n.program else dataclasses.replace(n, program=prog))
    return out


def unused_changes(score: Score, options: RenderOptions) -> list[str]:
    """One line per ``--track`` / ``--program`` change that would change nothing in ``score``."""
    from .programs import program_name

    tracks = sorted({i.track for i in score.instruments if not i.is_drum})
    programs = {i.program for i in score.instruments if not i.is_drum}
    out = []
    for t, _ in options.track_programs:
        if t not in tracks:
            have = ", ".join(map(str, tracks)) or "none"
            out.append(f"--track {t}: no pitched track {t} in this file (its tracks: {have})")
    for a, _ in options.program_swaps:
        if a not in programs:
            out.append(f"--program {a} ({program_name(a)}): no such instrument in this file")
    return out


def check_duration(score: Score, options: RenderOptions) -> float:
    """Seconds of audio a render of ``score`` makes (MIDI length + tail), known from the notes
    before any work; ``TooLongError`` (one line) beyond ``options.max_duration``."""
    return check_length(score, options.max_duration, options.tail)


class Segments(Sequence[np.ndarray]):
    """Per-segment arrays (token ids or note grids) made one at a time as they are read.

    Read in order, as the segment loop reads them, one is held at a time: memory stays flat in the
    song's length (building them all up front took 11 GB for a file claiming 5 years). Reading an
    earlier one again starts over from the first; iterating makes a fresh pass.
    """

    def __init__(self, n: int, make: Callable[[], Iterator[np.ndarray]]) -> None:
        self._n, self._make = n, make
        self._items: Iterator[np.ndarray] | None = None
        self._next = 0  # index of the item self._items gives next
        self._last: np.ndarray | None = None  # item self._next - 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._make()

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...
    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        k = i + self._n if i < 0 else i
        if not 0 <= k < self._n:
            raise IndexError(f"segment {i} of {self._n}")
        if self._items is None or k < self._next - 1:
            self._items, self._next = self._make(), 0
        while self._next <= k:
            self._last, self._next = next(self._items), self._next + 1
        assert self._last is not None
        return self._last


@dataclass
class Job:
    """One file being rendered: its token segments and where its output goes."""

    segments: Sequence[np.ndarray]  # token ids per segment, EOS-terminated, unpadded (Segments)
    n_samples: int  # output length at 16 kHz (MIDI length + tail)
    generator: torch.Generator
    sink: Callable[[torch.Tensor], None]  # receives audio chunks [n] float32 at 16 kHz
    mel_sink: Callable[[torch.Tensor], None] | None = None  # receives mel frames [T, 128]
    inverter: StreamingInverter | None = None
    context: torch.Tensor | None = None  # previous generated segment, feature units [256, 128]
    emitted: int = 0  # samples sent to sink so far
    mel_emitted: int = 0  # frames sent to mel_sink so far
    # frame models: note slots per segment [256, S, 5] (Segments)
    grids: Sequence[np.ndarray] | None = None


def prepare_tokens(
    model: LoadedModel, score: Score, options: RenderOptions
) -> tuple[Segments, int]:
    """Token segments covering the MIDI plus the tail, made as the loop reads them, and the output
    length in samples. ``TooLongError`` first, before any work, beyond ``options.max_duration``."""
    duration = check_duration(score, options)
    notes = apply_programs(score, options)
    codec = tokens.Codec.from_dict(model.codec)
    pmap = get_program_map(model.program_map)
    segs = Segments(
        tokens.count_segments(notes, duration),
        lambda: tokens.iter_segments(notes, duration, codec=codec, program_map=pmap),
    )
    return segs, int(round(duration * audio.SAMPLE_RATE))


def prepare_grids(model: LoadedModel, score: Score, options: RenderOptions, n: int) -> Segments:
    """Frame models: the note slots (``notegrid``) of each of the ``n`` segments, from the same
    notes as the tokens (swaps applied, programs through the model's map), made as they are read."""
    table = get_program_map(model.program_map).table
    arr = notegrid.notes_array(apply_programs(score, options), table)
    assert model.config.frame is not None
    slots, frames = model.config.frame.slots, audio.SEGMENT_FRAMES
    return Segments(
        n, lambda: (notegrid.note_grid(arr, i * frames, frames, slots) for i in range(n))
    )


# --------------------------------------------------------------------------------------------
# One segment


def sample_segment(
    model: LoadedModel,
    token_ids: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    options: RenderOptions,
    generators: Sequence[torch.Generator],
    grids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise one segment per batch row.

    Args:
        token_ids: [B, L] int64, PAD-padded.
        grids: [B, 256, S, 5] int16 note slots (frame models only; ``notegrid``).
        context: [B, 256, 128] previous mel in feature units (ignored where the mask is False).
        context_mask: [B] bool, whether row b has a context.
    Returns:
        mel [B, 256, 128] in log-mel feature units (fp32).
    """
    from .model import Encoded

    net, dev, dtype = model.model, model.device, model.dtype
    shape = (token_ids.shape[0], model.config.targets_length, model.config.input_dims)
    scaled_ctx = audio.scale(context.float()).to(dev, dtype)  # (B, 256, 128) in [-1, 1]
    mask = context_mask[:, None].expand(-1, model.config.context_length).to(dev)  # (B, 256)
    if model.config.frame is not None:
        assert grids is not None
        return _sample_frame_segment(model, grids, scaled_ctx, mask, options, generators)
    with torch.inference_mode():
        enc = net.encode(token_ids.to(dev), scaled_ctx, mask)
        guide = options.guidance != 1.0
        if guide:
            # Unconditional rows: every encoding and mask zeroed (spec §5.2), batched after the
            # conditional rows so one forward pass serves both.
            enc = Encoded(
                torch.cat([enc.encodings, torch.zeros_like(enc.encodings)]),
                torch.cat([enc.mask, torch.zeros_like(enc.mask)]),
            )
        kv = net.precompute(enc)  # cross-attention keys/values, reused by every step
        denoise = _step(net, kv, options, dev)
        x0 = diffusion.sample(
            denoise,  # with guidance: called on [cond; uncond] rows, see diffusion.guided
            shape,
            sampler=options.sampler,
            steps=options.n_steps(),
            generator=list(generators),
            device=dev,
            dtype=dtype,
            guidance=options.guidance,
            denoise_batched=denoise if guide else None,
            prediction_type=model.config.prediction_type,
        )
    return audio.unscale(x0.float())


def _sample_frame_segment(
    model: LoadedModel,
    grids: torch.Tensor,
    context: torch.Tensor,
    mask: torch.Tensor,
    options: RenderOptions,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """FrameNet: the prior's mel, noised to τ = ``options.start``, denoised in a few steps."""
    if options.guidance != 1.0:
        raise ValueError(f"{model.name} has no unconditional mode: use guidance 1")
    net, dev = model.model, model.device
    start = options.start if options.start is not None else 1.0
    style = torch.full((grids.shape[0],), style_index(model, options.style), device=dev)
    with torch.inference_mode():
        cond = net.encode(grids.to(dev), context, mask, style)
        noise = diffusion.initial_noise(tuple(cond.prior.shape), list(generators), dev)
        tau = torch.full((noise.shape[0],), start, device=dev)
        x_init = diffusion.q_sample(cond.prior.clamp(-1, 1), tau, noise)
        x0 = diffusion.sample(
            _step(net, cond, options, dev),
            tuple(noise.shape),
            sampler=options.sampler,
            steps=options.n_steps(),
            generator=list(generators),
            device=dev,
            dtype=model.dtype,
            x_init=x_init,
            start=start,
            prediction_type=model.config.prediction_type,
        )
        return finish_frame_mel(x0, cond.prior, options, generators)


def finish_frame_mel(
    x0: torch.Tensor,
    prior: torch.Tensor,
    options: RenderOptions,
    generators: Sequence[torch.Generator] | torch.Generator | None,
) -> torch.Tensor:
    """The sampler's x0 and the prior's mel (both (B, T, 128) scaled to [-1, 1]) → the rendered
    log-mel (B, T, 128), float32 feature units, after ``options.level`` and ``options.texture``."""
    mel = audio.unscale(x0.float())
    if options.level == "prior":
        mel = mel + level_shift(audio.unscale(prior.float().clamp(-1, 1)), mel)
    if options.texture:
        gens = list(generators) if isinstance(generators, Sequence) else generators
        noise = diffusion.initial_noise(tuple(mel.shape), gens, mel.device)
        mel = mel + options.texture * noise.float()
    return mel


LEVELS = ("denoised", "prior")
MAX_TEXTURE = 2.0  # nats; more is no longer a texture but a different sound


def check_texture(texture: float, name: str = "texture") -> None:
    """ValueError (one line, naming the setting ``name``) unless 0 ≤ ``texture`` ≤ MAX_TEXTURE."""
    if not 0.0 <= texture <= MAX_TEXTURE:
        raise ValueError(f"{name} {texture:g} is outside 0 … {MAX_TEXTURE:g} nats")


def level_shift(prior: torch.Tensor, mel: torch.Tensor, frames: int = 5) -> torch.Tensor:
    """(B, T, 1) nats that bring each frame of ``mel`` (B, T, 128) to the log energy
    (logsumexp over bins) of ``prior``, the difference smoothed over ``frames`` (a moving
    average, edges repeated): the level follows the prior while the denoiser's frame-to-frame
    texture is kept."""
    d = torch.logsumexp(prior, -1) - torch.logsumexp(mel, -1)  # (B, T)
    pad = frames // 2
    d = torch.nn.functional.pad(d.unsqueeze(1), (pad, pad), mode="replicate")
    return torch.nn.functional.avg_pool1d(d, frames, stride=1).transpose(1, 2)


def _step(
    net: torch.nn.Module, cond: object, options: RenderOptions, device: torch.device
) -> diffusion.Denoise:
    """``denoise(x, t)`` = ``net(x, t, cond)`` for one segment: replayed from CUDA graphs
    (``cudagraph``) with ``options.cuda_graphs`` on a CUDA device, else the eager step."""
    if options.cuda_graphs and cudagraph.usable(device):
        return cudagraph.step_graphs(net).bind(net, cond)
    return lambda x, t: net(x, t, cond)


def _run_batch(model: LoadedModel, jobs: list[Job], i: int, options: RenderOptions) -> None:
    """Render segment i of every job in `jobs` as one batch and hand the results on."""
    ids = tokens.pad_segments([j.segments[i] for j in jobs], length=None)
    silence = torch.zeros(model.config.context_length, model.config.input_dims, device=model.device)
    ctx = torch.stack([j.context if j.context is not None else silence for j in jobs])
    has_ctx = torch.tensor([j.context is not None for j in jobs])
    grids = None
    if model.config.frame is not None:
        grids = torch.from_numpy(np.stack([j.grids[i] for j in jobs]))  # type: ignore[index]
    mel = sample_segment(
        model, torch.from_numpy(ids), ctx, has_ctx, options, [j.generator for j in jobs], grids
    )
    # The mel stays on the model's device: the next segment's context and the inverter (on that
    # device too, see render_jobs) read it there; only the mel sink and the audio go to the CPU.
    for j, m in zip(jobs, mel, strict=True):
        j.context = m  # condition the next segment on this one
        _emit(j, m)


def _emit(job: Job, mel: torch.Tensor) -> None:
    """Send one segment's mel to the mel sink and its audio (trimmed to the song) to the sink."""
    if job.mel_sink is not None:
        want = math.ceil(job.n_samples / audio.HOP) - job.mel_emitted
        if want > 0:
            job.mel_sink(mel[:want].cpu())
            job.mel_emitted += min(want, mel.shape[0])
    assert job.inverter is not None
    _send(job, job.inverter.push(mel))


def _send(job: Job, chunk: torch.Tensor) -> None:
    room = job.n_samples - job.emitted
    if room > 0 and chunk.numel():
        chunk = chunk[:room]
        job.sink(chunk.float().cpu())
        job.emitted += chunk.numel()


def _finish(job: Job) -> None:
    assert job.inverter is not None
    _send(job, job.inverter.flush())
    if job.emitted < job.n_samples:  # only when the last segment was cut (never in practice)
        _send(job, torch.zeros(job.n_samples - job.emitted))


# --------------------------------------------------------------------------------------------
# Whole songs


def render_jobs(
    model: LoadedModel,
    jobs: list[Job],
    options: RenderOptions,
    progress: ProgressFn | None = None,
) -> None:
    """The segment loop over several files at once: segment i of each file in one batch."""
    options = with_model_defaults(options, model)
    check_options(options, model)  # once, before any work (not a failure per batch)
    size = resolve_batch_size(options, model)
    inverter = load_inverter(options.inverter or model.inverter, device=model.device)
    for j in jobs:  # stateless inverter shared; the streaming state is per file
        j.inverter = StreamingInverter(inverter)
    total = sum(len(j.segments) for j in jobs) * audio.SEGMENT_SECONDS
    done = 0.0
    for i in range(max((len(j.segments) for j in jobs), default=0)):
        active = [j for j in jobs if i < len(j.segments)]
        for start in range(0, len(active), size):
            batch = active[start : start + size]
            _run_batch(model, batch, i, options)
            done += len(batch) * audio.SEGMENT_SECONDS
            if progress is not None:
                progress(done, total)
        for j in active:
            if i == len(j.segments) - 1:
                _finish(j)


def make_job(
    model: LoadedModel,
    midi: str | os.PathLike | bytes | Score,
    options: RenderOptions,
    sink: Callable[[torch.Tensor], None],
    mel_sink: Callable[[torch.Tensor], None] | None = None,
) -> Job:
    score = (
        midi
        if isinstance(midi, Score)
        else read_midi(midi, all_track_tempos=not options.reference_tempo)
    )
    segs, n = prepare_tokens(model, score, options)
    grids = prepare_grids(model, score, options, len(segs)) if model.config.frame else None
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    return Job(segs, n, gen, sink, mel_sink=mel_sink, grids=grids)


@dataclass
class Rendered:
    """A rendered song held in memory (for the Python API)."""

    audio: np.ndarray  # [n] float32 mono
    sample_rate: int
    mel: np.ndarray  # [frames, 128] log-mel feature units


def render(
    model: LoadedModel,
    midi: str | os.PathLike | bytes | Score,
    options: RenderOptions | None = None,
    progress: ProgressFn | None = None,
) -> Rendered:
    """Render one MIDI file (path, bytes or Score) to 16 kHz mono audio held in memory.

    For long songs or many files, `batch.render_files` streams each file to disk instead.
    """
    options = options or RenderOptions()
    chunks: list[torch.Tensor] = []
    mels: list[torch.Tensor] = []
    job = make_job(model, midi, options, chunks.append, mels.append)
    render_jobs(model, [job], options, progress)
    wav = torch.cat(chunks).numpy() if chunks else np.zeros(0, np.float32)
    mel = torch.cat(mels).numpy() if mels else np.zeros((0, 128), np.float32)
    return Rendered(audio=wav.astype(np.float32), sample_rate=audio.SAMPLE_RATE, mel=mel)
