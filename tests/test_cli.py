"""The `midisynth` command through Typer's CliRunner on tiny-random: outputs, errors, batches."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from midisynth.cli import app
from midisynth.extras import pip_install

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--model", "tiny-random", "--steps", "2", "--device", "cpu"]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MIDISYNTH_CACHE", str(tmp_path_factory.mktemp("cache")))


def run(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result) -> str:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_help_is_instant_and_lazy():
    # --help must not import torch (slow); check in a fresh interpreter.
    code = "import sys; from midisynth.cli import app; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = run("render", "--help")
    assert r.exit_code == 0 and "--program" in r.output


@pytest.mark.parametrize(("ext", "rate"), [("wav", 16000), ("flac", 44100), ("ogg", 22050)])
def test_render_file_formats_and_rates(tmp_path, ext, rate):
    out = tmp_path / f"song.{ext}"
    r = run(
        "render",
        str(EXAMPLES / "piano_pedal.mid"),
        str(out),
        "-r",
        str(rate),
        "--tail",
        "0.5",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    length = mido.MidiFile(EXAMPLES / "piano_pedal.mid").length
    assert info.samplerate == rate
    assert abs(info.frames / rate - (length + 0.5)) < 0.021  # ±1 frame (20 ms)
    assert list(tmp_path.iterdir()) == [out]  # no temporary files left


def test_mel_out_and_swaps(tmp_path):
    out, mel = tmp_path / "o.wav", tmp_path / "m.npy"
    r = run(
        "render",
        str(EXAMPLES / "band.mid"),
        str(out),
        "--mel-out",
        str(mel),
        "-p",
        "electric piano=cello",
        "--track",
        "2=violin",
        "--no-drums",
        *FAST,
    )
    assert r.exit_code == 0, r.output
    assert "Electric Piano 1 → 42 Cello" in r.output and "track 2 → 40 Violin" in r.output
    import numpy as np

    m = np.load(mel)
    assert m.shape == (int(np.ceil(sf.info(out).frames / 320)), 128)


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(out), *FAST)
    assert "exists" in one_line_error(r) and r.exit_code == 2
    assert out.read_bytes() == b"keep me"
    assert (
        run("render", str(EXAMPLES / "piano_pedal.mid"), str(out), "--overwrite", *FAST).exit_code
        == 0
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"hello, not midi", "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00", "truncated"),
    ],
)
def test_bad_midi_one_line_error_no_output(tmp_path, content, message):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(content)
    r = run("render", str(bad), str(tmp_path / "o.wav"), *FAST)
    assert message.lower() in one_line_error(r).lower()
    assert not (tmp_path / "o.wav").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mid"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--program", "piano=kazooo"], "unknown program"),
        (["--program", "piano"], "FROM=TO"),
        (["--track", "x=cello"], "N=PROGRAM"),
        (["--model", "nope"], "unknown model"),
        (["--model", "./no/such/folder"], "not found"),
        (["--dtype", "int8"], "unknown dtype"),
        (["--inverter", "wavenet"], "unknown inverter"),
    ],
)
def test_bad_flags_one_line_error(tmp_path, args, message):
    r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(tmp_path / "o.wav"), *FAST, *args)
    assert message in one_line_error(r)
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sampler", "ddpm", "--steps", "10"], "sampler ddpm runs on the discrete schedule"),
        (["--sampler", "dpmpp-2m"], "needs a cosine-schedule one: dpmpp-2m-cosine, "),
        (["--sampler", "ddim"], "τ = 0.5"),
        (["--guidance", "2"], "guidance ≠ 1 needs an unconditional mode"),
        (["--style", "musescore"], "--style musescore: this model has no styles to choose from"),
        (["--texture", "3"], "--texture 3 is outside 0 … 2 nats"),
    ],
)
def test_settings_a_model_cannot_use_fail_before_any_file_is_read(
    tmp_path, tiny_frame_folder, args, message
):
    # Issue 21: `--sampler ddpm` on a frame model failed per file, after loading, with exit 1.
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a MIDI file")  # reading it would fail differently: it is never read
    r = run("render", str(bad), str(tmp_path / "o.wav"), "-m", str(tiny_frame_folder), *args)
    assert r.exit_code == 2
    line = one_line_error(r)
    assert line.startswith("error: model tiny-frame: ") and message in line
    assert list(tmp_path.iterdir()) == [bad]


def test_settings_a_model_can_use_render(tmp_path, tiny_frame_folder):
    song = str(EXAMPLES / "piano_pedal.mid")
    r = run("render", song, str(tmp_path / "a.wav"), "-m", str(tiny_frame_folder), "--tail", "0",
            "--sampler", "ddpm-cosine", "--steps", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run("render", song, str(tmp_path / "b.wav"), *FAST, "--sampler", "ddpm", "--guidance", "2")
    assert r.exit_code == 0, r.output  # the token design has an unconditional mode


def test_bad_flag_values_rejected_by_parser(tmp_path):
    for args in (["--steps", "0"], ["--sampler", "magic"], ["--sample-rate", "12"]):
        r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(tmp_path / "o.wav"), *args)
        assert r.exit_code == 2 and "Traceback" not in r.output


def test_missing_input_and_unwritable_output(tmp_path):
    r = run("render", str(tmp_path / "missing.mid"), *FAST)
    assert "input not found" in one_line_error(r)
    # Paths no one can create, root included (chmod does not stop root): below a regular file,
    # and in /proc, whose permission bits say writable but which refuses new files (issue 13).
    (tmp_path / "a_file").write_text("x")
    for dst in (tmp_path / "a_file" / "o.wav", Path("/proc/midisynth-test.wav")):
        r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(dst), *FAST)
        assert r.exit_code != 0
        assert f"cannot write to {dst.parent}" in one_line_error(r)
        assert ".spool" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_mel_out_into_a_new_folder(tmp_path):
    mel = tmp_path / "mels" / "sub" / "m.npy"
    r = run(
        "render",
        str(EXAMPLES / "piano_pedal.mid"),
        str(tmp_path / "o.wav"),
        "--mel-out",
        str(mel),
        *FAST,
    )
    assert r.exit_code == 0, r.output
    assert np.load(mel).shape[1] == 128


def test_folder_keeps_going_past_bad_files(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "piano_pedal.mid", src / "good.mid")
    shutil.copy(EXAMPLES / "melody_chords.mid", src / "sub" / "good2.mid")
    (src / "broken.mid").write_bytes(b"garbage")
    r = run("render", str(src), "-o", str(tmp_path / "out"), *FAST, "--batch-size", "2")
    assert r.exit_code == 1
    assert "2 rendered" in r.output and "1 failed" in r.output and "broken.mid" in r.output
    assert (tmp_path / "out" / "good.wav").exists() and (
        tmp_path / "out" / "sub" / "good2.wav"
    ).exists()
    assert not (tmp_path / "out" / "broken.wav").exists()
    again = run("render", str(src), "-o", str(tmp_path / "out"), *FAST, "--skip-existing")
    assert "2 skipped" in again.output


def test_interrupt_leaves_no_partial_output(tmp_path, monkeypatch):
    from midisynth import audio

    calls = {"n": 0}
    real_write = audio.AudioFileWriter.write

    def write_then_interrupt(self, chunk):
        real_write(self, chunk)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(audio.AudioFileWriter, "write", write_then_interrupt)
    out = tmp_path / "o.wav"
    r = run("render", str(EXAMPLES / "melody_chords.mid"), str(out), *FAST)
    assert r.exit_code == 130 and calls["n"] == 1
    assert list(tmp_path.iterdir()) == []


def test_inspect_json_and_table():
    r = run("inspect", str(EXAMPLES / "band.mid"), "--json", "--reference")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert len(doc["segments"]) == 2 and doc["segments"][0][0] == 1134  # tie section end
    assert {i["mapped_program"] for i in doc["instruments"]} == {4, 33, 48, None}
    r = run("inspect", str(EXAMPLES / "band.mid"))
    assert r.exit_code == 0 and "Electric Bass" in r.output


def _tail_tie_midi(path: Path) -> Path:
    """A note held 0–12 s and a drum hit at 12 s held to 16 s: the segment from 15.36 s starts after
    the last event (drums have no offset event) and keeps the reference's stale tie section
    (issue 13: `inspect --reference` printed only the tie marker there)."""
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    tr.append(mido.Message("note_on", note=60, velocity=100, time=0))
    tr.append(mido.Message("note_off", note=60, velocity=0, time=11520))
    tr.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
    tr.append(mido.Message("note_off", channel=9, note=36, velocity=0, time=3840))
    mf.tracks.append(tr)
    mf.save(path)
    return path


def test_inspect_reference_equals_midiprocessor(tmp_path):
    sd = pytest.importorskip("diffusers.pipelines.deprecated.spectrogram_diffusion")
    pytest.importorskip("note_seq")
    files = [EXAMPLES / n for n in ("band.mid", "piano_pedal.mid", "melody_chords.mid")]
    for path in [*files, _tail_tie_midi(tmp_path / "tail.mid")]:
        r = run("inspect", str(path), "--json", "--reference")
        ours = json.loads(r.output)["segments"]
        ref = [[t for t in seg if t > 0][:-1] for seg in sd.MidiProcessor()(str(path))]
        assert ours == ref, path.name


def test_inspect_bad_file(tmp_path):
    bad = tmp_path / "x.mid"
    bad.write_bytes(b"RIFF....")
    assert "not a MIDI file" in one_line_error(run("inspect", str(bad)))


def test_models_and_programs():
    r = run("models")
    assert r.exit_code == 0 and "official" in r.output and "tiny-random" in r.output
    r = run("programs")
    assert r.exit_code == 0 and "Cello" in r.output


def test_evaluate_missing_input_is_a_usage_error(tmp_path):
    r = run("evaluate", str(tmp_path / "nope"), "--model", "tiny-random")
    assert r.exit_code == 2 and "not found" in r.output and "Traceback" not in r.output


def test_default_model_without_network_is_one_clear_line(tmp_path, monkeypatch):
    import huggingface_hub

    from midisynth import weights

    monkeypatch.setenv(weights.DEFAULT_MODEL_ENV, "official")  # the default made the Hub's

    def offline(*args, **kwargs):  # the transport only: what hf_hub_download raises offline
        raise huggingface_hub.errors.LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    out = tmp_path / "out.wav"
    line = one_line_error(run("render", str(EXAMPLES / "melody_chords.mid"), str(out)))
    assert "cannot download google/music-spectrogram-diffusion" in line
    assert "the default is the official model" in line and "--model /path/to" in line
    assert (
        "hf download google/music-spectrogram-diffusion" in line
    )  # today's CLI, not huggingface-cli
    assert f"try --model {weights.DEFAULT_MODEL}" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_sampler_choices_are_the_registry():
    from midisynth.cli import Sampler
    from midisynth.diffusion import SAMPLERS

    assert [s.value for s in Sampler] == list(SAMPLERS)


def test_changes_that_match_nothing_are_refused(tmp_path):
    # Issue 13: `--track 9=violin` on a 4-track file and `-p piano=cello` on a file without piano
    # were accepted silently; issue 21: then they warned, were listed as in effect, and exit 0.
    band, out = str(EXAMPLES / "band.mid"), str(tmp_path / "o.wav")
    r = run("render", band, out, "--track", "9=violin", "-p", "electric piano=cello", *FAST)
    assert r.exit_code == 2
    assert one_line_error(r) == (
        f"error: {band}: --track 9: no pitched track 9 in this file (its tracks: 1, 2, 3); "
        "nothing rendered"
    )
    r = run("render", band, out, "-p", "piano=cello", "-p", "electric piano=cello", *FAST)
    assert r.exit_code == 2
    assert one_line_error(r) == (
        f"error: {band}: --program 0 (Acoustic Grand Piano): no such instrument in this file "
        "('piano' means program 0 only); its instruments: 4 Electric Piano 1, "
        "33 Electric Bass (finger), 48 String Ensemble 1; nothing rendered"
    )
    assert list(tmp_path.iterdir()) == []
    r = run("render", band, out, "-p", "electric piano=cello", "--track", "2=violin", *FAST)
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    assert "program 4 Electric Piano 1 → 42 Cello" in r.output
    help_text = " ".join(run("render", "--help").output.split())
    assert "piano = 0 Acoustic Grand Piano, electric piano = 4" in help_text


def test_folder_render_reports_changes_that_matched_nothing(tmp_path):
    # A folder render keeps going (a swap may fit some files only), but a change that fits none of
    # them (a typo, or `piano` for a folder of electric pianos) is said once at the end.
    src = tmp_path / "in"
    src.mkdir()
    for name in ("band.mid", "melody_chords.mid"):
        shutil.copy(EXAMPLES / name, src / name)
    r = run(
        "render", str(src), "--output-dir", str(tmp_path / "out"), "-p", "flute=cello",
        "-p", "electric piano=cello", "--tail", "0", *FAST,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("warning:")]
    assert lines == [
        "warning: --program 73 (Flute) changed nothing in any of the 2 rendered files"
    ], r.output
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_version():
    import midisynth

    r = run("--version")
    assert (
        r.exit_code == 0
        and r.output == f"midisynth {midisynth.__version__} (midisynth-diffusion)\n"
    )
    toml = (EXAMPLES.parent / "pyproject.toml").read_text()
    assert f'\nversion = "{midisynth.__version__}"\n' in toml


def test_an_existing_output_is_a_usage_error_in_render_and_invert(tmp_path):
    # Issue 21: exit 1 in render, 2 in invert.
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(out), *FAST)
    assert r.exit_code == 2 and "exists; pass --overwrite" in one_line_error(r)
    np.save(tmp_path / "m.npy", np.full((30, 128), -5.0, np.float32))
    r = run("invert", str(tmp_path / "m.npy"), str(out))
    assert r.exit_code == 2 and "exists; pass --overwrite" in one_line_error(r)
    assert out.read_bytes() == b"keep me"


def test_a_failed_file_is_named_once(tmp_path, monkeypatch):
    # Issue 21: from Ray workers (absolute paths) a failure read "midi/x.mid: /abs/midi/x.mid: …".
    from midisynth.batch import FileResult, FileTask
    from midisynth.cli.rendering import _error_for

    monkeypatch.chdir(tmp_path)
    task = FileTask(Path("midi/x.mid"), Path("out/x.wav"))
    absolute = str((tmp_path / "midi" / "x.mid").resolve())
    for error in (f"{absolute}: empty file (0 bytes)", "midi/x.mid: empty file (0 bytes)"):
        assert _error_for(FileResult(task, error=error)) == "midi/x.mid: empty file (0 bytes)"
    assert _error_for(FileResult(task, error="worker died")) == "midi/x.mid: worker died"


def test_inspect_says_which_tokenization_it_shows():
    # Issue 21: `inspect --reference` looked the same as `inspect`.
    band = str(EXAMPLES / "band.mid")
    plain = " ".join(run("inspect", band, "-m", "tiny-random").output.split())
    assert "tokenization: model tiny-random's (as render feeds it)" in plain
    ref = " ".join(run("inspect", band, "--reference").output.split())
    assert "tokenization: the reference's (diffusers MidiProcessor" in ref
    assert json.loads(run("inspect", band, "--json", "--reference").output)["tokenization"] == (
        "reference"
    )
    assert json.loads(run("inspect", band, "--json", "-m", "tiny-random").output)[
        "tokenization"
    ] == ("tiny-random")


def test_a_missing_output_folder_is_created_and_said(tmp_path):
    song = str(EXAMPLES / "piano_pedal.mid")
    out = tmp_path / "new" / "deeper" / "o.wav"
    r = run("render", song, str(out), *FAST, "--tail", "0")
    assert r.exit_code == 0 and out.is_file(), r.output
    assert f"created folder {out.parent}" in " ".join(r.output.split())
    r = run("render", song, "-o", str(tmp_path / "quiet"), *FAST, "--tail", "0", "-q")
    assert (
        r.exit_code == 0 and r.output == "" and (tmp_path / "quiet" / "piano_pedal.wav").is_file()
    )
    assert "created if missing" in " ".join(run("render", "--help").output.split())


def test_swapped_program_reaches_the_tokens():
    from midisynth import render as R
    from midisynth import tokens
    from midisynth.midi import read_midi
    from midisynth.weights import build_tiny_random

    model = build_tiny_random()
    score = read_midi(EXAMPLES / "band.mid")
    codec = tokens.Codec.from_dict(model.codec)

    def programs(options):
        segs, _ = R.prepare_tokens(model, score, options)
        ids = np.concatenate(segs)
        lo = codec.first_id["program"]
        return set((ids[(ids >= lo) & (ids < lo + 128)] - lo).tolist())

    before = programs(R.RenderOptions())
    after = programs(R.RenderOptions(program_swaps=((4, 42),)))
    assert after != before


def test_install_hints_keep_their_brackets(monkeypatch, tmp_path):
    # Issue 13: rich read "[eval]" in the hint as markup and dropped it.
    monkeypatch.setitem(sys.modules, "mir_eval", None)  # import fails as if not installed
    r = run("evaluate", str(EXAMPLES / "band.mid"), "-m", "tiny-random", "-o", str(tmp_path))
    assert r.exit_code == 2
    assert f"{pip_install('eval')} && pip install --no-deps basic-pitch" in r.output


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("starlette", ["serve"], "web"),
        ("ray", ["render", str(EXAMPLES / "band.mid"), "--ray"], "ray"),
        ("matplotlib", ["render", str(EXAMPLES / "band.mid"), "--plot", "x.png"], "plot"),
    ],
)
def test_a_missing_extra_names_a_command_that_installs_ours(monkeypatch, module, args, extra):
    # Issue 21: `pip install 'midisynth[web]'` installs an unrelated PyPI project.
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    line = one_line_error(run(*args))
    assert pip_install(extra) in line and "'midisynth[" not in line


def _help_sources(command) -> list[str]:
    """A click command's own help texts: its docstring and every parameter's help."""
    return [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]


def test_help_text_keeps_every_bracket(monkeypatch):
    # Issue 21: rich markup ate every [...] of --help ("pip install 'midisynth'", "( float").
    import re

    import typer

    monkeypatch.setenv("COLUMNS", "100")
    group = typer.main.get_command(app)
    squash = lambda s: re.sub(r"\s+", "", s)  # noqa: E731 - wrapping moves the spaces
    checked = 0
    for name, command in group.commands.items():
        if name == "cache":  # its --help is cache.main's (argparse)
            continue
        r = run(name, "--help")
        assert r.exit_code == 0, r.output
        for text in _help_sources(command):
            for bracket in re.findall(r"\S*\[[^\]]*\]\S*", text):
                assert squash(bracket) in squash(r.output), (name, bracket)
                checked += 1
    assert checked >= 4  # --ray, serve, evaluate and invert quote brackets
    assert "[frames, 128]" in run("invert", "--help").output


def test_unavailable_device_is_one_warning_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = run(
        "render",
        str(EXAMPLES / "piano_pedal.mid"),
        str(tmp_path / "o.wav"),
        *FAST[:-2],
        "--device",
        "cuda",
    )
    assert r.exit_code == 0, r.output
    assert "warning: CUDA is not available; using the CPU" in r.output
    assert "UserWarning" not in r.output and "render.py" not in r.output


def test_models_table_never_cuts_names(monkeypatch):
    monkeypatch.setenv("COLUMNS", "60")
    r = run("models")
    assert r.exit_code == 0
    assert "…" not in r.output
    # a narrow column folds a long source over lines, whole
    cells = [ln.split("│") for ln in r.output.splitlines() if ln.startswith("│")]
    sources = "".join(c[3].strip() for c in cells if len(c) > 3)
    assert "google/music-spectrogram-diffusion" in sources


def test_official_without_onnxruntime_fails_before_any_download(monkeypatch, tmp_path):
    # Issue 13: the official model loaded, then failed on every file for want of onnxruntime.
    from midisynth import official

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    called = []
    monkeypatch.setattr(official, "download_official", lambda *a, **k: called.append(1))
    r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(tmp_path / "o.wav"), "-m", "official")
    assert pip_install("onnx") in one_line_error(r)
    assert not called and not (tmp_path / "o.wav").exists()


def _long_midi(path: Path, seconds: int = 120) -> Path:
    mf = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    for i in range(seconds):
        tr.append(mido.Message("note_on", note=60 + i % 12, velocity=90, time=0 if i == 0 else 480))
        tr.append(mido.Message("note_off", note=60 + i % 12, velocity=0, time=480))
    mf.tracks.append(tr)
    mf.save(path)
    return path


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_stopped_render_leaves_nothing(tmp_path, signame):
    # Issue 13: SIGTERM (timeout, Docker, systemd, Slurm, Ray) left the hidden spool file behind.
    import signal
    import time

    src = _long_midi(tmp_path / "long.mid")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [sys.executable, "-m", "midisynth", "render", str(src), str(out_dir / "x.wav"), *FAST]
    # A shell starts background jobs with SIGINT ignored, and children inherit that (`nohup … &`):
    # the render would never see Ctrl-C. The default disposition is what a user's terminal gives.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while not any(out_dir.glob(".x.wav.*.spool.wav")) and time.time() < deadline:
        time.sleep(0.05)
    assert any(out_dir.glob(".x.wav.*.spool.wav")), "the render never started writing"
    proc.send_signal(getattr(signal, signame))
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(out_dir.iterdir()) == []


def test_a_later_run_removes_what_a_killed_run_left(tmp_path):
    dst = tmp_path / "o.wav"
    stale = [tmp_path / ".o.wav.0badc0de.spool.wav", tmp_path / ".o.wav.12345.tmp.npy"]
    keep = tmp_path / ".other.wav.0badc0de.spool.wav"
    for p in [*stale, keep]:
        p.write_bytes(b"left by a SIGKILLed run")
    r = run("render", str(EXAMPLES / "piano_pedal.mid"), str(dst), *FAST)
    assert r.exit_code == 0, r.output
    assert dst.exists() and keep.exists() and not any(p.exists() for p in stale)


def test_loudness_normalisation_hits_its_target(tmp_path):
    # Issue 13: the start burst forced a scale-down, so `--normalize loudness --gain -3` gave
    # -31.5 LUFS instead of -19.
    import torch

    from midisynth import audio

    dst = tmp_path / "o.wav"
    r = run(
        "render",
        str(EXAMPLES / "band.mid"),
        str(dst),
        *FAST,
        "--normalize",
        "loudness",
        "--gain",
        "-3",
    )
    assert r.exit_code == 0, r.output
    x, sr = sf.read(dst, dtype="float32")
    assert audio.loudness_lufs(torch.from_numpy(x), sr) == pytest.approx(-19.0, abs=1.0)
    assert "turned down" not in r.output


def test_stems_sum_to_the_mix(tmp_path):
    dst = tmp_path / "band.wav"
    r = run("render", str(EXAMPLES / "band.mid"), str(dst), *FAST, "--stems", "--normalize", "peak")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "band.drums.wav",
        "band.track1-electric-piano-1.wav",
        "band.track2-electric-bass-finger.wav",
        "band.track3-string-ensemble-1.wav",
        "band.wav",
    ]
    mix, sr = sf.read(dst, dtype="float64")
    parts = [sf.read(tmp_path / n, dtype="float64")[0] for n in names if n != "band.wav"]
    assert all(len(p) == len(mix) for p in parts)
    assert np.abs(np.sum(parts, axis=0) - mix).max() <= 4 * 2**-15  # PCM_16 rounding, 5 files
    assert np.abs(mix).max() == pytest.approx(10 ** (-1 / 20), abs=2**-14)  # the mix is normalized


def test_loudness_is_the_default_and_none_keeps_the_raw_level(tmp_path):
    import torch

    from midisynth import audio

    levels = {}
    for mode in ("default", "none"):
        dst = tmp_path / f"{mode}.wav"
        extra = [] if mode == "default" else ["--normalize", "none"]
        r = run("render", str(EXAMPLES / "melody_chords.mid"), str(dst), "--device", "cpu", *extra)
        assert r.exit_code == 0, r.output
        wave, sr = sf.read(dst, dtype="float32")
        levels[mode] = audio.loudness_lufs(torch.from_numpy(wave), sr)
        if mode == "default":
            # -16 LUFS, unless a peak would pass the ceiling: then the whole file is turned down
            # to it (never clipped), and the run says so
            at_ceiling = np.abs(wave).max() > 0.99
            assert levels[mode] == pytest.approx(-16.0, abs=0.5) or (
                at_ceiling and levels[mode] < -16.0 and "turned down" in r.output
            ), (levels, r.output)
    assert levels["default"] > levels["none"] + 10  # the raw level is far quieter


def test_stems_sum_to_the_mix_at_the_default_loudness(tmp_path):
    dst = tmp_path / "band.wav"
    r = run("render", str(EXAMPLES / "band.mid"), str(dst), *FAST, "--stems")
    assert r.exit_code == 0, r.output
    mix, sr = sf.read(dst, dtype="float64")
    parts = [sf.read(p, dtype="float64")[0] for p in sorted(tmp_path.glob("band.*.wav"))]
    assert len(parts) == 4
    assert np.abs(np.sum(parts, axis=0) - mix).max() <= 4 * 2**-15


def test_stems_follow_swaps_and_refuse_folders(tmp_path):
    r = run(
        "render",
        str(EXAMPLES / "band.mid"),
        str(tmp_path / "o.wav"),
        *FAST,
        "--stems",
        "--track",
        "3=violin",
        "--no-drums",
    )
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "o.track3-violin.wav" in names and not any("drums" in n for n in names)
    r = run("render", str(EXAMPLES), "-o", str(tmp_path / "x"), *FAST, "--stems")
    assert "single MIDI file" in one_line_error(r)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "pics" / "band.png"
    r = run(
        "render", str(EXAMPLES / "band.mid"), str(tmp_path / "o.wav"), *FAST, "--plot", str(png)
    )
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav", "pics"]  # no temporary left
    r = run(
        "render", str(EXAMPLES / "band.mid"), str(tmp_path / "o2.wav"), *FAST, "--plot", "x.jpg"
    )
    assert ".png" in one_line_error(r)


def test_cache_subcommand_forwards_and_fails_cleanly(tmp_path):
    r = run("cache", "--help")
    assert r.exit_code == 0 and "--procedural" in r.output
    r = run(
        "cache", str(tmp_path / "c"), "--procedural", "1", "--soundfont", str(tmp_path / "no.sf2")
    )
    assert "SoundFont not found" in one_line_error(r)


# ---- hostile files (issue 23) -------------------------------------------------------------------


def _smf(events: bytes, tpb: int) -> bytes:
    """A format-0 file around one track's bytes (the issue's one-liners)."""
    import struct

    head = b"MThd" + struct.pack(">LHHH", 6, 0, 1, tpb)
    return head + b"MTrk" + struct.pack(">L", len(events)) + events


# Division 1, tempo 0xFFFFFF, a note at tick 9,999,990: 52 bytes that claim 5.3 years.
YEARS = _smf(bytes.fromhex("00ff5103ffffff00903c6401803c0084e2ac76903e6401803e0000ff2f00"), tpb=1)
VLQ = _smf(b"\xff" * 1_000_000 + bytes.fromhex("7f903c6400ff2f00"), tpb=480)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (YEARS, "the render would last 5.32 years, longer than the 6 h limit (--max-duration)"),
        (VLQ, "corrupt MIDI file (a variable-length number longer than 4 bytes at byte 22)"),
    ],
    ids=["five-years", "megabyte-number"],
)
def test_hostile_files_fail_at_once_in_one_line(tmp_path, data, message):
    import time

    import midisynth.batch  # noqa: F401 - torch imported before the clock starts

    src = tmp_path / "hostile.mid"
    src.write_bytes(data)
    start = time.perf_counter()
    r = run("render", str(src), str(tmp_path / "out.wav"), *FAST)
    assert time.perf_counter() - start < 1.0
    assert one_line_error(r) == f"error: {src}: {message}"
    assert r.exit_code == 1 and not list(tmp_path.glob("out*"))
    # The whole command, torch included, stays small: the length is checked before any work.
    # Its peak memory from /proc (VmHWM: this process only; ru_maxrss would count pytest's, as a
    # high-water mark it inherits through fork and exec).
    if not Path("/proc/self/status").exists():
        return
    report = (
        "import atexit, sys; atexit.register(lambda: print('peak', open('/proc/self/status')"
        ".read().split('VmHWM:')[1].split()[0], file=sys.stderr)); from midisynth.cli import main;"
        f" sys.argv = ['midisynth', 'render', {str(src)!r}, '-m', 'tiny-random']; main()"
    )
    child = subprocess.run([sys.executable, "-c", report], capture_output=True, text=True)
    assert child.returncode == 1 and message in child.stderr, child.stderr
    peak_kib = int(child.stderr.split("peak ")[1].split()[0])
    assert peak_kib < 500 * 1024, peak_kib


def test_inspect_refuses_a_file_claiming_years_at_once(tmp_path):
    # inspect builds every segment's tokens: 4.5 "years" took 1 min 48 s and 7.8 GB, then a
    # MemoryError traceback. Now the render's length limit is checked first.
    import time

    src = tmp_path / "hostile.mid"
    src.write_bytes(YEARS)
    start = time.perf_counter()
    r = run("inspect", str(src))
    assert time.perf_counter() - start < 1.0
    assert one_line_error(r) == (
        f"error: {src}: the render would last 5.32 years, longer than the 6 h limit "
        "(--max-duration)"
    )
    assert r.exit_code == 1
    r = run("inspect", str(EXAMPLES / "band.mid"), "--max-duration", "5s")
    assert r.exit_code == 1 and "longer than the 5 s limit" in one_line_error(r)
    assert run("inspect", str(EXAMPLES / "band.mid"), "--max-duration", "0").exit_code == 0
    r = run("inspect", str(EXAMPLES / "band.mid"), "--max-duration", "soon")
    assert r.exit_code == 2 and "--max-duration must look like 90s" in one_line_error(r)


def test_max_duration_flag(tmp_path):
    song = EXAMPLES / "melody_chords.mid"
    r = run("render", str(song), str(tmp_path / "a.wav"), "--max-duration", "5s", *FAST)
    assert "longer than the 5 s limit (--max-duration)" in one_line_error(r)
    r = run("render", str(song), str(tmp_path / "b.wav"), "--max-duration", "0", *FAST)
    assert r.exit_code == 0, r.output  # 0 = no limit
    r = run("render", str(song), str(tmp_path / "c.wav"), "--max-duration", "soon", *FAST)
    assert r.exit_code == 2 and "--max-duration must look like 90s" in one_line_error(r)
    # In a folder, a file over the limit fails alone; the others render.
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(song, folder / "short.mid")
    (folder / "long.mid").write_bytes(YEARS)
    r = run("render", str(folder), "-o", str(tmp_path / "out"), *FAST)
    assert r.exit_code == 1 and "longer than the 6 h limit" in r.output
    assert (tmp_path / "out" / "short.wav").exists()


def test_token_overflow_is_one_warning_line(tmp_path):
    # 1,500 onsets in one 5.12 s segment need ~4,000 tokens; the encoder takes 2,048.
    events = bytearray(b"\x00\xc0\x00")
    for i in range(1500):
        events += bytes([0, 0x90, 36 + i % 60, 100, 1, 0x80, 36 + i % 60, 0])
    src = tmp_path / "dense.mid"
    src.write_bytes(_smf(bytes(events) + b"\x00\xff\x2f\x00", tpb=480))
    r = run("render", str(src), str(tmp_path / "dense.wav"), *FAST)
    assert r.exit_code == 0, r.output
    warned = [ln for ln in r.output.splitlines() if "token limit" in ln or "-token limit" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: 1 segment(s) exceed"), r.output
    assert "TokenOverflowWarning" not in r.output and ".py:" not in r.output


def test_cuda_graphs_flag_on_a_cpu_is_a_note_and_the_same_audio(tmp_path):
    """Issue 20: --cuda-graphs off CUDA renders eagerly (the same bytes) after one note line;
    --help names the flag and the automatic batch size."""
    song = str(EXAMPLES / "piano_pedal.mid")
    a = run("render", song, str(tmp_path / "a.wav"), *FAST, "--tail", "0")
    b = run("render", song, str(tmp_path / "b.wav"), *FAST, "--tail", "0", "--cuda-graphs")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    notes = [ln for ln in b.output.splitlines() if "--cuda-graphs" in ln]
    assert notes == ["note: --cuda-graphs needs a CUDA device; eager steps on cpu"]
    assert (tmp_path / "a.wav").read_bytes() == (tmp_path / "b.wav").read_bytes()
    h = run("render", "--help")
    assert "--cuda-graphs" in h.output and "free GPU memory" in " ".join(h.output.split())


def test_texture_flag_reaches_a_frame_model_and_is_refused_elsewhere(tmp_path, tiny_frame_folder):
    # Issue 19: the dither of the bundled model is one flag away from off (or stronger).
    import soundfile as sf

    song = str(EXAMPLES / "piano_pedal.mid")
    model = ["-m", str(tiny_frame_folder), "--tail", "0", "--normalize", "none"]
    outs = []
    for i, extra in enumerate(([], ["--texture", "0.5"])):
        out = tmp_path / f"o{i}.wav"
        r = run("render", song, str(out), *model, *extra)
        assert r.exit_code == 0, r.output
        outs.append(sf.read(out)[0])
    assert outs[0].shape == outs[1].shape and not np.allclose(outs[0], outs[1])
    r = run("render", song, str(tmp_path / "x.wav"), *FAST, "--texture", "0.5")
    assert r.exit_code == 2
    assert "--texture applies to frame models (FrameNet) only" in one_line_error(r)
    assert not (tmp_path / "x.wav").exists()
