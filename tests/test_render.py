"""The segment loop end to end: lengths, determinism, batching, swaps, and parity with the diffusers
pipeline (same random weights in the official layout, same seed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from midisynth import audio
from midisynth.batch import FileTask, OutputOptions, plan_outputs, render_files
from midisynth.midi import read_midi
from midisynth.render import RenderOptions, apply_programs, render
from midisynth.weights import load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = RenderOptions(sampler="dpmpp-2m", steps=2)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random")


@pytest.mark.parametrize("tail", [0.0, 1.0, 3.7])
def test_length_is_midi_plus_tail(tiny, tail):
    path = EXAMPLES / "piano_pedal.mid"
    song = render(tiny, path, dataclasses.replace(FAST, tail=tail))
    expected = read_midi(path).total_time + tail
    assert song.sample_rate == 16000
    assert abs(song.audio.size - expected * 16000) <= audio.HOP
    assert song.mel.shape == (int(np.ceil(song.audio.size / audio.HOP)), 128)
    assert np.isfinite(song.audio).all()


def test_same_seed_same_audio_other_seed_differs(tiny):
    path = EXAMPLES / "melody_chords.mid"
    a = render(tiny, path, FAST).audio
    b = render(tiny, path, FAST).audio
    c = render(tiny, path, dataclasses.replace(FAST, seed=1)).audio
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_batched_files_render_as_alone(tiny, tmp_path):
    files = [EXAMPLES / "melody_chords.mid", EXAMPLES / "band.mid", EXAMPLES / "piano_pedal.mid"]
    tasks = [FileTask(f, tmp_path / "batch" / (f.stem + ".wav")) for f in files]
    out = OutputOptions()
    res = render_files(tiny, tasks, dataclasses.replace(FAST, batch_size=3), out)
    assert all(r.ok for r in res)
    for f, t in zip(files, tasks, strict=True):
        alone = render(tiny, f, FAST).audio
        got, sr = sf.read(t.dst, dtype="float32")
        assert sr == 16000 and got.size == alone.size
        # 16-bit files; the level was lowered identically only if the peaks agree, so compare shape
        corr = np.corrcoef(got, alone)[0, 1]
        assert corr > 0.999


def test_guidance_runs_and_changes_output(tiny):
    path = EXAMPLES / "melody_chords.mid"
    a = render(tiny, path, FAST).mel
    b = render(tiny, path, dataclasses.replace(FAST, guidance=2.0)).mel
    assert a.shape == b.shape and not np.allclose(a, b)


def test_program_swaps_tracks_and_drums():
    score = read_midi(EXAMPLES / "band.mid")
    base = RenderOptions()
    progs = {n.program for n in apply_programs(score, base) if not n.is_drum}
    assert progs == {4, 33, 48}
    swapped = apply_programs(score, dataclasses.replace(base, program_swaps=((4, 0), (33, 42))))
    assert {n.program for n in swapped if not n.is_drum} == {0, 42, 48}
    strings_track = next(i.track for i in score.instruments if i.program == 48 and not i.is_drum)
    by_track = apply_programs(
        score, dataclasses.replace(base, track_programs=((strings_track, 73),))
    )
    assert {n.program for n in by_track if not n.is_drum} == {4, 33, 73}
    assert any(n.is_drum for n in by_track)
    assert not any(n.is_drum for n in apply_programs(score, dataclasses.replace(base, drums=False)))


def test_plan_outputs_rules(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("a.mid", "sub/b.midi", "notes.txt"):
        (src / name).write_bytes(b"x")
    plan = plan_outputs(src, None, tmp_path / "out", "flac")
    assert [t.dst.relative_to(tmp_path / "out").as_posix() for t in plan.tasks] == [
        "a.flac",
        "sub/b.flac",
    ]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.flac").write_bytes(b"old")
    with pytest.raises(ValueError, match="exists; pass --overwrite or --skip-existing"):
        plan_outputs(src, None, tmp_path / "out", "flac")
    plan = plan_outputs(src, None, tmp_path / "out", "flac", skip_existing=True)
    assert len(plan.tasks) == 1 and len(plan.skipped) == 1
    single = plan_outputs(src / "a.mid", None, None, "wav")
    assert single.tasks[0].dst == src / "a.wav"
    with pytest.raises(ValueError, match="unsupported output extension"):
        plan_outputs(src / "a.mid", tmp_path / "x.mp3")
    with pytest.raises(FileNotFoundError, match="input not found"):
        plan_outputs(tmp_path / "missing.mid")


def _reference_pipeline(diffusers_sd, folder: Path):
    from diffusers import DDPMScheduler
    from diffusers.models.transformers.t5_film_transformer import T5FilmDecoder

    pipe = diffusers_sd.SpectrogramDiffusionPipeline(
        notes_encoder=diffusers_sd.SpectrogramNotesEncoder.from_pretrained(
            folder / "notes_encoder"
        ),
        continuous_encoder=diffusers_sd.SpectrogramContEncoder.from_pretrained(
            folder / "continuous_encoder"
        ),
        decoder=T5FilmDecoder.from_pretrained(folder / "decoder"),
        scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"),
        melgan=None,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_parity(diffusers_sd, folder: Path, tmp_path: Path, midi: Path, steps: int) -> None:
    pytest.importorskip("note_seq")
    pipe = _reference_pipeline(diffusers_sd, folder)
    tokens = diffusers_sd.MidiProcessor()(str(midi))
    assert len(tokens) == 2  # the example fits two 5.12 s segments
    ref = pipe(
        tokens,
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=steps,
        output_type="mel",
    ).audios[0]  # (512, 128)
    model = load_model(folder, dtype=torch.float32)
    opts = RenderOptions(sampler="ddpm", steps=steps, seed=0, tail=0.0)
    ours = render(model, midi, opts).mel
    n = ours.shape[0]
    assert n == 500  # 10.0 s of MIDI → 500 frames kept of the 512 rendered
    assert np.abs(ours - ref[:n]).max() <= 1e-4


def test_mel_matches_diffusers_pipeline_tiny(diffusers_sd, tmp_path, monkeypatch):
    from test_weights import make_official_layout

    monkeypatch.setenv("MIDISYNTH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "official"
    make_official_layout(folder)
    _pipeline_parity(diffusers_sd, folder, tmp_path, EXAMPLES / "melody_chords.mid", steps=2)


@pytest.mark.slow
def test_mel_matches_diffusers_pipeline_base(diffusers_sd, tmp_path, monkeypatch):
    """2 segments × 2 DDPM steps, random weights of the released size in the official layout."""
    import test_weights

    monkeypatch.setenv("MIDISYNTH_CACHE", str(tmp_path / "cache"))
    from midisynth.model import ModelConfig

    monkeypatch.setattr(test_weights, "TINY", ModelConfig.base())  # the released shape
    folder = tmp_path / "official"
    test_weights.make_official_layout(folder)
    _pipeline_parity(diffusers_sd, folder, tmp_path, EXAMPLES / "melody_chords.mid", steps=2)


def test_model_sampling_defaults(tiny):
    from midisynth.render import DEFAULT_SAMPLER, with_model_defaults

    own = dataclasses.replace(tiny, meta={"sampling": {"sampler": "ddim-cosine", "steps": 3}})
    base = RenderOptions()
    assert with_model_defaults(base, own).sampler == "ddim-cosine"
    assert with_model_defaults(base, own).n_steps() == 3
    assert with_model_defaults(dataclasses.replace(base, steps=5), own).n_steps() == 5
    explicit = dataclasses.replace(base, sampler="ddim")  # an explicit sampler keeps its defaults
    assert with_model_defaults(explicit, own) == explicit and explicit.n_steps() == 50
    plain = with_model_defaults(base, tiny)  # no "sampling" in config.json
    assert plain.sampler == DEFAULT_SAMPLER and plain.n_steps() == 20
    # render() applies them: same audio as asking for the model's settings explicitly
    path = EXAMPLES / "piano_pedal.mid"
    a = render(own, path, dataclasses.replace(base, tail=0.0)).audio
    b = render(
        tiny, path, dataclasses.replace(base, tail=0.0, sampler="ddim-cosine", steps=3)
    ).audio
    assert a.tobytes() == b.tobytes()
    bad = dataclasses.replace(tiny, meta={"sampling": {"sampler": "euler"}})
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        with_model_defaults(base, bad)


# ---- length limit and streaming segments (issue 23) ----------------------------------------------


def _claiming(tick: int):
    """The issue's hostile files, read: division 1 and tempo 0xFFFFFF make every tick 16.8 s; a
    second note starts at ``tick`` (9,999,990: 5.3 years; 20,000: 93 hours)."""
    import struct

    from mido.midifiles.meta import encode_variable_int

    delta = bytes(encode_variable_int(tick - 1))
    events = bytes.fromhex("00ff5103ffffff00903c6401803c00") + delta
    events += bytes.fromhex("903e6401803e0000ff2f00")
    data = b"MThd" + struct.pack(">LHHH", 6, 0, 1, 1) + b"MTrk" + struct.pack(">L", len(events))
    return read_midi(data + events)


def test_a_song_claiming_years_is_refused_before_any_work(tiny):
    import time
    import tracemalloc

    from midisynth.render import TooLongError, prepare_tokens

    score = _claiming(9_999_990)
    assert score.total_time > 5 * 365 * 86400
    tracemalloc.start()
    start = time.perf_counter()
    for attempt in (
        lambda: prepare_tokens(tiny, score, RenderOptions()),
        lambda: render(tiny, score),
    ):
        with pytest.raises(TooLongError) as info:
            attempt()
        assert str(info.value) == (
            "the render would last 5.32 years, longer than the 6 h limit (--max-duration)"
        )
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 50 * 2**20  # was 11 GB and a MemoryError after 177 s


def test_segments_are_made_as_they_are_read_whatever_the_length(tiny, tiny_frame):
    import time
    import tracemalloc

    from midisynth.render import prepare_grids, prepare_tokens

    score = _claiming(20_000)
    unlimited = RenderOptions(max_duration=None)
    tracemalloc.start()
    start = time.perf_counter()
    segs, n = prepare_tokens(tiny, score, unlimited)
    grids = prepare_grids(tiny_frame, score, unlimited, len(segs))
    first = [segs[0], segs[1], grids[0], grids[1]]
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == round(score.total_time * 16000) + 16000 and len(segs) == len(grids) > 60_000
    assert first[1][-1] == 1 and first[3].shape == (256, 32, 5)  # EOS-terminated; note slots
    assert seconds < 1.0 and peak < 20 * 2**20  # one segment at a time, not 65,000 of them


def test_streamed_segments_are_the_same_arrays(tiny, tiny_frame):
    from midisynth import notegrid, tokens
    from midisynth.programs import get_program_map
    from midisynth.render import prepare_grids, prepare_tokens

    score = read_midi(EXAMPLES / "band.mid")
    segs, n = prepare_tokens(tiny, score, FAST)
    want = tokens.notes_to_segments(
        score.notes,
        score.total_time + FAST.tail,
        codec=tokens.Codec.from_dict(tiny.codec),
        program_map=get_program_map(tiny.program_map),
    )
    assert len(segs) == len(want) == 3
    assert [s.tolist() for s in segs] == [w.tolist() for w in want]  # a pass
    for i in (1, 2, 0, -1, 1):  # in order, backwards (starts over), from the end
        assert segs[i].tolist() == want[i].tolist()
    assert [s.tolist() for s in segs[1:3]] == [w.tolist() for w in want[1:3]]
    with pytest.raises(IndexError):
        segs[len(want)]
    table = get_program_map(tiny_frame.program_map).table
    grids = prepare_grids(tiny_frame, score, FAST, len(segs))
    full = notegrid.segment_grids(notegrid.notes_array(score.notes, table), len(segs), 32)
    assert all(np.array_equal(g, f) for g, f in zip(grids, full, strict=True))


def test_streamed_render_is_byte_identical(tiny_frame, monkeypatch):
    from midisynth import render as R

    path, own = EXAMPLES / "band.mid", RenderOptions()  # the frame model's own sampling
    streamed = render(tiny_frame, path, own)
    stream_tokens, stream_grids = R.prepare_tokens, R.prepare_grids
    monkeypatch.setattr(  # everything built up front, as before
        R, "prepare_tokens", lambda *a: (lambda s, n: (list(s), n))(*stream_tokens(*a))
    )
    monkeypatch.setattr(R, "prepare_grids", lambda *a: list(stream_grids(*a)))
    listed = render(tiny_frame, path, own)
    assert streamed.audio.tobytes() == listed.audio.tobytes()
    assert streamed.mel.tobytes() == listed.mel.tobytes()


# --------------------------------------------------------------------------------------------
# Issue 20: batching, the automatic batch size, CUDA-graph steps (their bookkeeping, on a CPU)


def test_batched_folder_equals_batch_1(tiny_frame, tmp_path):
    """A folder in one batch against the same files one at a time. Not the same bytes on a CPU:
    the batched matmuls round differently (even three copies of one file differ from it alone).
    Tolerance, for a frame model (v-prediction, the bundled kind): 1e-4 in the mel (natural-log
    feature units; measured ≤ 1e-5) and 1e-3 in the raw audio (measured ≤ 1e-3 at worst, on a
    loud transient). An ε-prediction model amplifies the same rounding by 1/α at the first step
    (tiny-random, 2 dpmpp steps: up to 0.2 in the mel; see test_batched_files_render_as_alone)."""
    files = [EXAMPLES / "melody_chords.mid", EXAMPLES / "band.mid", EXAMPLES / "piano_pedal.mid"]
    raw = OutputOptions(normalize="none", subtype="FLOAT")
    got = {}
    for bs in (1, 3):
        tasks = [
            FileTask(
                f, tmp_path / f"b{bs}" / f"{f.stem}.wav", tmp_path / f"b{bs}" / f"{f.stem}.npy"
            )
            for f in files
        ]
        res = render_files(tiny_frame, tasks, RenderOptions(batch_size=bs), raw)
        assert all(r.ok for r in res)
        got[bs] = [(sf.read(t.dst, dtype="float32")[0], np.load(t.mel_out)) for t in tasks]
    for (wav1, mel1), (wav3, mel3) in zip(got[1], got[3], strict=True):
        assert wav1.shape == wav3.shape and mel1.shape == mel3.shape
        assert np.abs(mel1 - mel3).max() < 1e-4
        assert np.abs(wav1 - wav3).max() < 1e-3


def test_batch_size_default_is_auto(tiny, monkeypatch):
    """None = 8 on a CPU (as before); on CUDA the largest power of two ≤ 64 whose rows fit in half
    the free memory (faked here: no GPU is needed)."""
    from types import SimpleNamespace

    from midisynth import render as render_mod
    from midisynth.model import ModelConfig

    assert RenderOptions().batch_size is None
    assert render_mod.resolve_batch_size(RenderOptions(), tiny) == render_mod.DEFAULT_BATCH_SIZE
    assert render_mod.resolve_batch_size(RenderOptions(batch_size=3), tiny) == 3
    fake = SimpleNamespace(
        device=torch.device("cuda"), dtype=torch.bfloat16, config=ModelConfig.named("base")
    )
    row = render_mod.row_bytes(fake)
    assert 50e6 < row < 2e9  # base, bf16: a few hundred MB per file
    for free, want in ((140 * 2**30, 64), (20 * row, 8), (3 * row, 1), (0, 1)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d, f=free: (f, 141 * 2**30))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d: 0)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d: 0)
        assert render_mod.resolve_batch_size(RenderOptions(), fake) == want


def test_cuda_graph_steps_are_the_eager_steps(tiny, tiny_frame, monkeypatch):
    """The step graphs' bookkeeping (static inputs, a graph per shape, each segment's conditioning
    copied into the buffers of the graph for its shapes, reuse across segments and files) run with
    an eager "replay" on a CPU: the same bytes as the eager render. With guidance, the batched
    [cond; uncond] pass goes through the same graphs."""
    from midisynth import cudagraph
    from midisynth import render as render_mod

    files = [EXAMPLES / "band.mid", EXAMPLES / "melody_chords.mid"]
    for model, opts in (
        (tiny, FAST),
        (tiny, dataclasses.replace(FAST, guidance=2.0)),
        (tiny_frame, RenderOptions()),
    ):
        eager = [render(model, f, opts) for f in files]
        graphs = cudagraph.StepGraphs("emulate")
        monkeypatch.setattr(render_mod.cudagraph, "usable", lambda d: True)
        monkeypatch.setattr(render_mod.cudagraph, "step_graphs", lambda net, g=graphs: g)
        graphed = [render(model, f, dataclasses.replace(opts, cuda_graphs=True)) for f in files]
        monkeypatch.undo()
        for a, b in zip(eager, graphed, strict=True):
            assert a.audio.tobytes() == b.audio.tobytes() and a.mel.tobytes() == b.mel.tobytes()
        segments = sum(-(-a.mel.shape[0] // audio.SEGMENT_FRAMES) for a in eager)
        assert 0 < graphs.captures < segments  # shapes recur: graphs are replayed, not recaptured


def test_cuda_graphs_flag_is_a_no_op_on_cpu(tiny, monkeypatch):
    from midisynth import render as render_mod

    def never(net):
        raise AssertionError("no step graphs on a CPU")

    monkeypatch.setattr(render_mod.cudagraph, "step_graphs", never)
    path = EXAMPLES / "melody_chords.mid"
    a = render(tiny, path, FAST)
    b = render(tiny, path, dataclasses.replace(FAST, cuda_graphs=True))
    assert a.audio.tobytes() == b.audio.tobytes()


def test_bad_sampling_for_the_model_fails_once_before_any_work(tiny_frame, tmp_path):
    """ddpm on a frame model (its sampling starts part-way, τ < 1): one ValueError from the
    library before any segment, and in a folder the same one line for every file."""
    from midisynth.render import check_options

    with pytest.raises(ValueError, match="cosine-schedule"):
        check_options(RenderOptions(sampler="ddpm"), tiny_frame)
    check_options(RenderOptions(), tiny_frame)
    with pytest.raises(ValueError, match="cosine-schedule"):
        render(tiny_frame, EXAMPLES / "band.mid", RenderOptions(sampler="ddpm"))


@pytest.mark.gpu
def test_cuda_graphs_on_cuda_match_eager(tiny, tiny_frame):
    """On a GPU: the graphed render is the eager one (same kernels, same inputs)."""
    from midisynth.weights import load_model

    for name, opts in (("tiny-random", FAST), ("frame-s", RenderOptions())):
        model = load_model(name, device="cuda", dtype="float32")
        path = EXAMPLES / "band.mid"
        a = render(model, path, opts)
        b = render(model, path, dataclasses.replace(opts, cuda_graphs=True))
        assert np.abs(a.mel - b.mel).max() < 1e-5, name
        assert np.abs(a.audio - b.audio).max() < 1e-4, name
