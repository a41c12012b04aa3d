"""midisynth.evaluate: metric functions against hand-computed values, and evaluate() end to end.

The eval extra (basic-pitch, aisfx, mir_eval, matplotlib) may be absent (CI installs only the test
extra): tests that need a package skip, and the end-to-end run leaves out what is missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from midisynth import eval_tools, metrics
from midisynth import evaluate as ev
from midisynth.extras import pip_install
from midisynth.midi import MidiError, Note, truncate_score

FIXTURES = Path(__file__).parent / "fixtures"
REAL_MUSIC = FIXTURES / "real_music.flac"


def has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def write_fixture_midi(path: Path) -> Path:
    """The MIDI file that tests/fixtures/real_music.flac was rendered from (written with mido)."""
    spec = importlib.util.spec_from_file_location(
        "make_audio_fixture", FIXTURES / "make_audio_fixture.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_midi(path)
    return path


# ---- spectral distances ---------------------------------------------------------------------


def test_mel_l1_identical_is_zero_and_gain_is_log_gain():
    rng = np.random.default_rng(0)
    mel = rng.uniform(-5, 2, (40, 128)).astype(np.float32)
    assert metrics.mel_l1(mel, mel) == 0.0
    assert metrics.mel_l1(mel, mel + math.log(2)) == pytest.approx(math.log(2), abs=1e-6)


def test_mel_l1_trims_to_the_shorter():
    a = np.zeros((10, 128))
    b = np.concatenate([np.ones((4, 128)), np.full((20, 128), 7.0)])  # only 10 frames compared
    assert metrics.mel_l1(a, b) == pytest.approx((4 * 1 + 6 * 7) / 10)


def test_log_spectral_distance_of_a_gain_is_its_decibels():
    x = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    assert metrics.log_spectral_distance(x, x) == 0.0
    # Doubling the amplitude raises every bin's power by 20·log10(2) dB (all far above the floor).
    assert metrics.log_spectral_distance(x, 2 * x) == pytest.approx(20 * math.log10(2), abs=1e-6)
    assert metrics.log_spectral_distance(x, np.concatenate([2 * x, x])) == pytest.approx(
        20 * math.log10(2), abs=1e-6
    )


def test_log_spectral_distance_at_2048_points_and_over_sounding_frames():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(32000).astype(np.float32) * 0.1
    assert metrics.log_spectral_distance(x, 2 * x, 2048) == pytest.approx(20 * math.log10(2))
    # Half the song silent in the reference, a -80 dB hiss there in the estimate: the hiss
    # dominates the plain distance; over the sounding frames only the music counts.
    ref = np.concatenate([np.zeros(32000, np.float32), x])
    est = ref + np.concatenate([rng.standard_normal(32000).astype(np.float32) * 1e-4, 0 * x])
    assert metrics.log_spectral_distance(ref, est, 2048) > 20
    assert metrics.log_spectral_distance(ref, est, 2048, sounding_db=60.0) < 1.0


# ---- Fréchet distance -----------------------------------------------------------------------


def test_frechet_distance_identical_sets_is_zero():
    x = np.random.default_rng(2).standard_normal((300, 16))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    few = x[:5]  # fewer samples than dimensions: singular covariance, still ~0
    assert metrics.frechet_distance(few, few) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_hand_computed():
    # 1-D: (μx − μy)² + (σx − σy)², sample variance (ddof 1).
    assert metrics.frechet_distance([[0.0], [2.0]], [[3.0], [5.0]]) == pytest.approx(
        9.0
    )  # means 1, 4
    assert metrics.frechet_distance([[-1.0], [1.0]], [[-2.0], [2.0]]) == pytest.approx(
        2.0
    )  # var 2, 8
    # A translated set: only the mean term remains.
    x = np.random.default_rng(3).standard_normal((50, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert metrics.frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), abs=1e-8)
    # One embedding per set: zero covariances, squared distance of the points.
    assert metrics.frechet_distance([[0.0, 0.0]], [[3.0, 4.0]]) == pytest.approx(25.0)


def test_frechet_distance_rejects_mismatched_sets():
    with pytest.raises(ValueError):
        metrics.frechet_distance(np.zeros((3, 2)), np.zeros((3, 3)))


def test_mel_stats_embedding():
    mel = np.zeros((100, 128))
    mel[:50] = 1.0
    emb = metrics.mel_stats_embedding(mel)  # windows of 50 frames at 0, 25, 50
    assert emb.shape == (3, 256)
    np.testing.assert_allclose(emb[0, :128], 1.0)
    np.testing.assert_allclose(emb[0, 128:], 0.0)
    np.testing.assert_allclose(emb[1, :128], 0.5)
    np.testing.assert_allclose(emb[1, 128:], 0.5)
    assert metrics.mel_stats_embedding(np.zeros((7, 128))).shape == (
        1,
        256,
    )  # shorter than a window


# ---- transcription F1 -----------------------------------------------------------------------


def test_note_array_drops_drums():
    notes = [
        Note(0.0, 0.5, 60, 100, 0, False, 0),
        Note(0.0, 0.1, 36, 100, 0, True, 1),
        Note(0.5, 1.0, 64, 90, 0, False, 0),
    ]
    np.testing.assert_array_equal(metrics.note_array(notes), [[0.0, 0.5, 60], [0.5, 1.0, 64]])
    assert metrics.note_array([]).shape == (0, 3)


def test_note_f1_hand_computed():
    pytest.importorskip("mir_eval")
    ref = np.array([[0.0, 0.5, 60], [0.5, 1.0, 64], [1.0, 2.0, 67], [2.0, 2.5, 72]])
    assert metrics.note_f1(ref, ref)["f1"] == 1.0
    assert metrics.note_f1(ref, ref, offset=True)["f1"] == 1.0
    wrong = ref.copy()
    wrong[:2, 2] += 1  # two of four pitches a semitone off
    assert metrics.note_f1(ref, wrong) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    late = ref + [0.08, 0.08, 0]  # 80 ms late: outside 50 ms, inside 100 ms
    assert metrics.note_f1(ref, late, onset_tolerance=0.05)["f1"] == 0.0
    assert metrics.note_f1(ref, late, onset_tolerance=0.1)["f1"] == 1.0
    long = ref + [0.0, 1.0, 0]  # offsets 1 s late: onset-only matches, onset+offset does not
    assert metrics.note_f1(ref, long)["f1"] == 1.0
    assert metrics.note_f1(ref, long, offset=True)["f1"] == 0.0
    half = ref[:2]  # precision 1, recall 0.5 → F1 2/3
    assert metrics.note_f1(ref, half)["f1"] == pytest.approx(2 / 3)
    assert metrics.note_f1(ref, np.zeros((0, 3)))["f1"] == 0.0
    assert math.isnan(metrics.note_f1(np.zeros((0, 3)), ref)["f1"])
    zero_length = np.array([[1.0, 1.0, 60]])  # allowed in MIDI, not by mir_eval: widened
    assert metrics.note_f1(zero_length, zero_length)["f1"] == 1.0
    scores = metrics.transcription_scores(ref, late)
    assert scores == {
        "f1_onset_50": 0.0,
        "f1_onoff_50": 0.0,
        "f1_onset_100": 1.0,
        "f1_onoff_100": 1.0,
    }


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "mir_eval", None)  # makes `import mir_eval` fail
    monkeypatch.setitem(sys.modules, "mir_eval.transcription", None)
    with pytest.raises(ev.EvalDependencyError, match=re.escape(pip_install("eval"))):
        metrics.note_f1(np.zeros((1, 3)), np.zeros((1, 3)))
    with pytest.raises(ev.EvalDependencyError, match="basic-pitch==0.4.0"):
        ev.check_dependencies(transcription=True, embeddings=(), plots=False)


@pytest.mark.skipif(not has("basic_pitch"), reason="basic-pitch is not installed (eval extra)")
def test_basic_pitch_transcribes_the_fixture():
    from midisynth.audio import read_audio

    wav = read_audio(REAL_MUSIC).numpy()
    notes = eval_tools.BasicPitch()(wav)
    assert notes.shape[1] == 3 and len(notes) > 5
    assert np.all(np.diff(notes[:, 0]) >= 0) and np.all(notes[:, 1] > notes[:, 0])


@pytest.mark.skipif(not has("aisfx"), reason="aisfx is not installed (eval extra)")
def test_aisfx_embedding_shape_and_determinism():
    from midisynth.audio import read_audio

    wav = read_audio(REAL_MUSIC).numpy()
    embed = eval_tools.AisfxEmbedder()
    a = embed(np.concatenate([wav, wav]))  # 6 s: 2.3 s blocks, hop 1.16 s
    assert a.shape[1] == 512 and a.shape[0] >= 3
    np.testing.assert_array_equal(a, embed(np.concatenate([wav, wav])))
    assert embed(wav[:4000]).shape == (1, 512)  # a quarter second still gives one block


# ---- references -----------------------------------------------------------------------------


def test_fluidsynth_reference_errors_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(eval_tools.shutil, "which", lambda _name: None)
    with pytest.raises(ev.EvalError, match="apt-get install fluidsynth"):
        eval_tools.FluidSynthReference()
    monkeypatch.setattr(eval_tools.shutil, "which", lambda _name: "/usr/bin/fluidsynth")
    monkeypatch.setenv("MIDISYNTH_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(ev.EvalError, match="missing.sf2"):
        eval_tools.FluidSynthReference()


def test_find_reference_beside_the_midi(tmp_path):
    midi = tmp_path / "song.mid"
    assert eval_tools.find_reference(midi) is None
    (tmp_path / "song.flac").write_bytes(b"")
    assert eval_tools.find_reference(midi) == tmp_path / "song.flac"
    (tmp_path / "song.wav").write_bytes(b"")
    assert eval_tools.find_reference(midi) == tmp_path / "song.wav"


# ---- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from midisynth.weights import load_model

    return load_model("tiny-random")


def test_evaluate_end_to_end_on_tiny_random(tiny, tmp_path):
    from midisynth.render import RenderOptions

    midi = write_fixture_midi(tmp_path / "phrase.mid")
    missing = write_fixture_midi(tmp_path / "no_reference.mid")
    transcription = has("basic_pitch") and has("mir_eval")
    embeddings = ("mel-stats", "aisfx") if has("aisfx") else ("mel-stats",)
    out = tmp_path / "out"
    lines: list[str] = []
    report = ev.evaluate(
        tiny,
        [midi, missing],
        reference_audio={midi: REAL_MUSIC},
        options=RenderOptions(steps=2),
        out_dir=out,
        transcription=transcription,
        embeddings=embeddings,
        plots=has("matplotlib"),
        log=lines.append,
    )
    assert report["n_ok"] == 1 and report["n_failed"] == 1
    assert "no reference audio" in report["files"][1]["error"]
    assert len(lines) == 2 and "FAILED" in lines[1]
    f = report["files"][0]
    assert f["seconds"] == pytest.approx(3.0)  # the reference's 3 s; the rendering runs 4.5 s
    model, gt = f["scores"]["model"], f["scores"]["gt-encoded"]
    # The ground truth encoded is close to the reference; noise from random weights is not.
    assert gt["mel_l1"] < 0.3 < model["mel_l1"]
    assert gt["lsd"] < model["lsd"]
    fd = report["frechet"]
    assert set(fd) == set(embeddings)
    for e in embeddings:
        assert 0 <= fd[e]["gt-encoded"] < fd[e]["model"]
    if transcription:
        ref = f["scores"]["reference"]
        assert ref["midi_notes"] == 23  # pitched notes of the fixture (drums left out)
        assert ref["f1_onset_100"] >= ref["f1_onset_50"] > 0.3  # the transcriber's ceiling
        assert 0.0 <= model["f1_onset_50"] <= 1.0
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))  # the returned report is what was written
    assert (out / "audio" / "phrase.model.wav").is_file()
    assert (out / "audio" / "phrase.gt-encoded.wav").is_file()
    if has("matplotlib"):
        assert (out / "phrase.png").stat().st_size > 10_000


def test_encode_decode_keeps_the_length():
    from midisynth.audio import read_audio
    from midisynth.inverter import GriffinLim

    ref = read_audio(REAL_MUSIC)[:20_000]
    out = ev.encode_decode(ref, GriffinLim(iters=4))
    assert out.shape == ref.shape and out.dtype == torch.float32


def test_evaluate_command_usage_errors(tmp_path, capsys):
    assert ev.evaluate_command(tmp_path / "absent") == 2
    assert ev.evaluate_command(tmp_path) == 2  # no MIDI files
    assert "no MIDI files" in capsys.readouterr().err


def test_evaluate_inverter_choice_reaches_both_rows(tiny, tmp_path, monkeypatch, capsys):
    # --inverter: the model's rows and the ground-truth-encoded rows use the chosen inverter.
    from midisynth import inverter as inv
    from midisynth.render import RenderOptions

    used = []
    real = inv.load_inverter
    monkeypatch.setattr(
        inv, "load_inverter", lambda spec, device="cpu": used.append(spec) or real(spec, device)
    )
    midi = write_fixture_midi(tmp_path / "phrase.mid")
    report = ev.evaluate(
        tiny,
        [midi],
        reference_audio={midi: REAL_MUSIC},
        options=RenderOptions(steps=1, inverter="griffin-lim"),
        transcription=False,
        embeddings=(),
        plots=False,
    )
    assert report["n_ok"] == 1 and used and set(used) == {"griffin-lim"}
    code = ev.evaluate_command(
        midi, "tiny-random", steps=1, transcription=False, embeddings=(), inverter="nope"
    )
    assert code == 2 and "unknown inverter 'nope'" in capsys.readouterr().err


@pytest.mark.skipif(
    not all(has(m) for m in ("basic_pitch", "aisfx", "mir_eval", "matplotlib")),
    reason="needs the full eval extra",
)
def test_evaluate_command_on_a_folder(tmp_path, capsys):
    src = tmp_path / "midi"
    src.mkdir()
    write_fixture_midi(src / "phrase.mid")
    (src / "phrase.flac").write_bytes(REAL_MUSIC.read_bytes())
    code = ev.evaluate_command(src, "tiny-random", limit=1, out_dir=tmp_path / "out", steps=2)
    assert code == 0
    printed = capsys.readouterr().out
    assert "note F1, onset 100 ms" in printed and "Fréchet distance, aisfx" in printed
    assert (tmp_path / "out" / "report.json").is_file()


def test_truncate_score_and_max_seconds(tiny, tmp_path):
    from midisynth.midi import read_midi
    from midisynth.render import RenderOptions

    midi = write_fixture_midi(tmp_path / "phrase.mid")
    score = read_midi(midi)
    cut = truncate_score(score, 1.5)
    assert cut.total_time == 1.5 and 0 < len(cut.notes) < len(score.notes)
    assert all(n.start < 1.5 and n.end <= 1.5 for n in cut.notes)
    with pytest.raises(MidiError, match="no notes start"):
        truncate_score(score, 0.0)
    report = ev.evaluate(
        tiny,
        [midi],
        reference_audio={midi: REAL_MUSIC},
        options=RenderOptions(steps=2),
        transcription=False,
        embeddings=("mel-stats",),
        plots=False,
        max_seconds=1.5,
    )
    assert report["n_ok"] == 1 and report["settings"]["max_seconds"] == 1.5
    assert report["files"][0]["seconds"] == pytest.approx(1.5)


def test_chroma_accuracy_and_onset_f1_on_synthetic_tones():
    from midisynth import audio

    sr, notes = audio.SAMPLE_RATE, []
    wave = np.zeros(4 * sr, np.float32)
    for i, pitch in enumerate((60, 64, 67)):  # C4, E4, G4, one second each from 0.5 s
        t = np.arange(sr) / sr
        f = 440.0 * 2 ** ((pitch - 69) / 12)
        wave[sr // 2 + i * sr : sr // 2 + (i + 1) * sr] = (
            0.3 * np.sin(2 * np.pi * f * t) * np.exp(-3 * t)
        )
        notes.append(Note(0.5 + i, 1.5 + i, pitch, 100, 0, False, 0))
    acc, chance = metrics.chroma_accuracy(wave, notes)
    assert acc > 0.9 and chance == pytest.approx(1 / 12)
    shifted = [Note(n.start, n.end, n.pitch + 1, 100, 0, False, 0) for n in notes]
    assert metrics.chroma_accuracy(wave, shifted)[0] < 0.1  # a semitone off is wrong
    mel = audio.log_mel(torch.from_numpy(wave)).numpy()
    assert metrics.onset_f1(mel, notes) >= 0.8  # every onset found (a release may add a peak)
    late = [Note(n.start + 0.3, n.end, n.pitch, 100, 0, False, 0) for n in notes]
    assert metrics.onset_f1(mel, late) == 0.0


def test_evaluate_command_refuses_sampling_the_model_cannot_use(
    tiny_frame_folder, tmp_path, capsys
):
    """Issue 20: ddpm on a frame model (sampling from τ < 1) is one line and exit 2 before any
    file is rendered, not an error per file."""
    midi = write_fixture_midi(tmp_path / "phrase.mid")
    code = ev.evaluate_command(
        midi,
        str(tiny_frame_folder),
        sampler="ddpm",
        steps=2,
        transcription=False,
        embeddings=(),
        out_dir=tmp_path / "out",
    )
    err = capsys.readouterr().err
    assert code == 2 and "cosine-schedule" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1
    assert not (tmp_path / "out").exists()
