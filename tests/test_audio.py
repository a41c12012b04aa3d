"""Tests for midisynth.audio: front-end parity with an independent numpy port of the TF formula (and
with TensorFlow itself when it is installed), constants, scaling, file I/O, resampling, gain."""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from midisynth import audio as A

FIXTURE = Path(__file__).parent / "fixtures" / "real_music.flac"
TOL = 1e-4  # max abs difference in natural-log mel units, float64 compute vs the reference
# float32 FFT rounding is relative to the whole frame, so mel bands ~80 dB below a frame's peak (the
# top bands of this 16 kHz render) move by up to ~5e-4; TensorFlow's own float32 features differ from
# the exact (float64) values by the same order (2.6e-4 measured on the fixture with TF 2.21).
TOL_FP32 = 1e-3


@pytest.fixture(scope="module")
def music() -> torch.Tensor:
    """3 s of FluidSynth-rendered music, 16 kHz mono float32 (see fixtures/make_audio_fixture.py)."""
    return A.read_audio(FIXTURE)


# ---- Independent numpy reference of the original TF front end (float64, explicit loops) ---------


@functools.cache
def ref_mel_matrix() -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0.0, 8000.0), written from its formula."""

    def hz_to_mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    bin_mel = hz_to_mel(np.linspace(0.0, 8000.0, 513))
    edges = np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 128 + 2)
    w = np.zeros((513, 128))
    for m in range(128):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(1, 513):  # row 0 (DC) stays zero
            up = (bin_mel[k] - lo) / (centre - lo)
            down = (hi - bin_mel[k]) / (hi - centre)
            w[k, m] = max(0.0, min(up, down))
    return w


def ref_log_mel(x: np.ndarray) -> np.ndarray:
    """tf.signal.stft(pad_end=True, hann periodic 640, fft 1024) → |.| → @W → clip → ln, in float64."""
    x = np.asarray(x, dtype=np.float64)
    n_frames = -(-len(x) // 320)
    padded = np.zeros((n_frames - 1) * 320 + 640)
    padded[: len(x)] = x
    frames = np.lib.stride_tricks.sliding_window_view(padded, 640)[::320]
    window = np.array([0.5 - 0.5 * math.cos(2.0 * math.pi * i / 640) for i in range(640)])
    magnitude = np.abs(np.fft.rfft(frames * window, n=1024, axis=-1))
    return np.log(np.clip(magnitude @ ref_mel_matrix(), 1e-5, 1e8))


# ---- Constants, filterbank ----------------------------------------------------------------------


def test_constants():
    assert (A.SAMPLE_RATE, A.HOP, A.WIN, A.N_FFT, A.N_FREQS, A.N_MELS) == (
        16000,
        320,
        640,
        1024,
        513,
        128,
    )
    assert A.FRAME_RATE == 50
    assert A.SEGMENT_FRAMES == 256 and A.SEGMENT_SAMPLES == 81920
    assert A.SEGMENT_SECONDS == pytest.approx(5.12)
    assert A.LOG_FLOOR == pytest.approx(-11.512925, abs=1e-6)
    assert (A.SCALE_MIN, A.SCALE_MAX) == (A.LOG_FLOOR, 4.0)
    assert (A.F_MIN, A.F_MAX, A.LOG_CEIL_CLIP) == (0.0, 8000.0, 1e8)
    assert A.ADDITIONAL_FRAMES_FOR_ENCODING == 16


def test_filterbank_properties():
    w = A.mel_filterbank()
    assert w.shape == (513, 128) and w.dtype == torch.float32
    assert torch.all(w[0] == 0)  # DC row
    sums = w.sum(0)
    assert torch.all(sums > 0)  # no all-zero channel
    assert sums[0].item() == pytest.approx(0.87, abs=0.005)
    assert sums[-1].item() == pytest.approx(10.66, abs=0.005)
    assert A.mel_filterbank() is w  # cached


def test_filterbank_matches_reference_formula():
    w64 = A.mel_filterbank(dtype=torch.float64).numpy()
    np.testing.assert_allclose(w64, ref_mel_matrix(), rtol=0, atol=1e-12)


# ---- log_mel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 319, 320, 321, 640, 12345, 48000])
def test_frame_count(n):
    assert A.log_mel(torch.zeros(n)).shape == (A.num_frames(n), 128) == (math.ceil(n / 320), 128)


def test_empty_and_batched_shapes():
    assert A.log_mel(torch.zeros(0)).shape == (0, 128)
    assert A.log_mel(torch.zeros(2, 3, 700)).shape == (2, 3, 3, 128)


def test_silence_is_floor():
    mel = A.log_mel(torch.zeros(1000))
    torch.testing.assert_close(mel, torch.full((4, 128), A.LOG_FLOOR))
    assert torch.all(A.scale(mel) == -1.0)


def test_frame_k_covers_samples_320k_to_320k_plus_640():
    x = torch.zeros(3200)
    x[1000] = 1.0  # inside frames 2 ([640, 1280)) and 3 ([960, 1600)) only
    touched = (A.log_mel(x) > A.LOG_FLOOR + 1e-3).any(-1)
    assert touched.nonzero().flatten().tolist() == [2, 3]


@pytest.mark.parametrize(
    ("compute_dtype", "tol"), [(None, TOL), (torch.float64, TOL), (torch.float32, TOL_FP32)]
)
def test_log_mel_matches_numpy_reference_on_real_audio(music, compute_dtype, tol):
    for clip in (music, music[16000:28345]):  # whole file; an odd length ending mid-frame
        ours = A.log_mel(clip, compute_dtype=compute_dtype)
        assert ours.dtype == torch.float32
        diff = np.abs(ours.numpy() - ref_log_mel(clip.numpy())).max()
        assert diff <= tol, diff


def test_log_mel_batched_equals_single(music):
    batch = torch.stack([music[:16000], music[16000:32000]])
    mel = A.log_mel(batch)
    torch.testing.assert_close(mel[1], A.log_mel(music[16000:32000]), rtol=0, atol=1e-5)


def test_log_mel_is_float32_whatever_the_input(music):
    clip = music[:8000]
    ref = A.log_mel(clip)
    assert A.log_mel(clip.double()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(A.log_mel(clip), ref, rtol=0, atol=1e-5)
    with pytest.raises(TypeError):
        A.log_mel(torch.zeros(10, dtype=torch.int16))


def test_log_mel_matches_tensorflow(music):
    tf = pytest.importorskip("tensorflow")
    for clip in (music, music[16000:28345]):  # whole file; an odd length ending mid-frame
        stft = tf.signal.stft(
            tf.constant(clip.numpy()),
            frame_length=640,
            frame_step=320,
            fft_length=1024,
            window_fn=tf.signal.hann_window,
            pad_end=True,
        )
        weights = tf.signal.linear_to_mel_weight_matrix(128, 513, 16000, 0.0, 8000.0)
        expected = tf.math.log(tf.clip_by_value(tf.matmul(tf.abs(stft), weights), 1e-5, 1e8))
        for compute_dtype in (torch.float32, torch.float64):
            diff = np.abs(A.log_mel(clip, compute_dtype=compute_dtype) - expected.numpy()).max()
            assert diff <= TOL_FP32, diff
    # TF evaluates the matrix in float32 (its log1p/linspace rounding moves weights by ~1.7e-5).
    np.testing.assert_allclose(A.mel_filterbank().numpy(), weights.numpy(), rtol=0, atol=5e-5)


# ---- scale / unscale ----------------------------------------------------------------------------


def test_scale_constants():
    assert A.scale(torch.tensor(A.LOG_FLOOR)).item() == -1.0
    assert A.scale(torch.tensor(0.0)).item() == pytest.approx(0.48430, abs=1e-5)
    assert A.scale(torch.tensor(4.0)).item() == 1.0
    assert A.scale(torch.tensor([-30.0, 9.0])).tolist() == [-1.0, 1.0]  # clipped


def test_unscale_inverts_scale_without_clipping():
    feats = torch.linspace(A.SCALE_MIN, A.SCALE_MAX, 101, dtype=torch.float64)
    torch.testing.assert_close(A.unscale(A.scale(feats)), feats)
    assert A.unscale(torch.tensor(1.5)).item() > A.SCALE_MAX


# ---- files, resampling --------------------------------------------------------------------------


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
def test_write_read_round_trip(tmp_path, music, ext):
    path = A.write_audio(tmp_path / f"out{ext}", music)
    back = A.read_audio(path)
    assert back.shape == music.shape and back.dtype == torch.float32
    if ext == ".ogg":  # lossy
        assert np.corrcoef(back.numpy(), music.numpy())[0, 1] > 0.98
    else:  # 16-bit PCM
        assert (back - music).abs().max().item() <= 1.5 / 32768
    assert [p.name for p in tmp_path.iterdir()] == [f"out{ext}"]  # no temp file left


def test_write_float_subtype_is_exact(tmp_path, music):
    path = A.write_audio(tmp_path / "x.wav", music, subtype="FLOAT")
    assert sf.info(path).subtype == "FLOAT"
    assert torch.equal(A.read_audio(path), music)


def test_write_rejects_bad_extension_and_subtype(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported audio extension '\.mp4'.*\.wav"):
        A.write_audio(tmp_path / "x.mp4", torch.zeros(10))
    with pytest.raises(ValueError, match="not valid for FLAC"):
        A.write_audio(tmp_path / "x.flac", torch.zeros(10), subtype="FLOAT")
    with pytest.raises(ValueError, match="NaN"):
        A.write_audio(tmp_path / "x.wav", torch.tensor([0.0, float("nan")]))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch, exc):
    old = tmp_path / "old.wav"
    A.write_audio(old, torch.full((100,), 0.25))
    real_write = sf.write

    def write_then_fail(file, data, *args, **kwargs):
        real_write(file, data[: len(data) // 2], *args, **kwargs)  # half the file is on disk
        raise exc("interrupted mid-write")

    monkeypatch.setattr(sf, "write", write_then_fail)
    with pytest.raises(exc):
        A.write_audio(tmp_path / "new.wav", torch.zeros(1000))
    with pytest.raises(exc):
        A.write_audio(old, torch.zeros(1000))  # overwriting: the old file must survive intact
    assert [p.name for p in tmp_path.iterdir()] == ["old.wav"]
    assert A.read_audio(old).eq(0.25).all()


def test_write_clip_strategies(tmp_path):
    loud = torch.tensor([0.0, 2.0, -1.0, 0.5])
    with pytest.warns(A.ClippingWarning, match=r"\+6\.02 dBFS"):
        back = A.read_audio(A.write_audio(tmp_path / "s.wav", loud, subtype="FLOAT"))
    assert back.tolist() == [0.0, 1.0, -0.5, 0.25]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = A.read_audio(
            A.write_audio(tmp_path / "c.wav", loud, subtype="FLOAT", on_clip="clip")
        )
    assert back.tolist() == [0.0, 1.0, -1.0, 0.5]
    with pytest.raises(ValueError, match="exceeds 0 dBFS"):
        A.write_audio(tmp_path / "e.wav", loud, on_clip="error")
    with pytest.raises(ValueError, match="on_clip"):
        A.write_audio(tmp_path / "e.wav", torch.zeros(4), on_clip="wrap")
    assert not (tmp_path / "e.wav").exists()


def test_read_downmixes_and_resamples(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1)
    sf.write(tmp_path / "st.wav", stereo, 44100, subtype="FLOAT")
    mono = A.read_audio(tmp_path / "st.wav")
    assert mono.shape == (16000,)
    assert mono[1000:-1000].abs().max().item() == pytest.approx(0.25, abs=0.005)  # (L + R) / 2


@pytest.mark.parametrize(("n", "src", "dst"), [(48000, 48000, 16000), (12345, 44100, 16000),
                                               (1000, 16000, 22050), (5, 16000, 16000)])  # fmt: skip
def test_resample_length(n, src, dst):
    x = torch.randn(2, n)
    y = A.resample(x, src, dst)
    assert y.shape == (2, round(n * dst / src)) and y.dtype == torch.float32


# ---- gain and loudness --------------------------------------------------------------------------


def test_gain_and_peak_helpers():
    x = torch.tensor([0.1, -0.5, 0.25])
    torch.testing.assert_close(A.apply_gain(x, 20 * math.log10(2)), 2 * x)
    assert A.peak_db(A.normalize_peak(x)) == pytest.approx(-1.0, abs=1e-5)
    assert A.peak_db(A.normalize_peak(x, peak_dbfs=-6.0)) == pytest.approx(-6.0, abs=1e-5)
    assert torch.equal(A.normalize_peak(torch.zeros(4)), torch.zeros(4))
    assert A.peak_db(torch.zeros(4)) == -math.inf
    y, scaled = A.prevent_clipping(torch.tensor([0.5, -4.0]))
    assert scaled and y.tolist() == [0.125, -1.0]
    y, scaled = A.prevent_clipping(x)
    assert not scaled and y is x


def _sine(freq: float, seconds: float, sr: int, amp: float = 1.0) -> torch.Tensor:
    return amp * torch.sin(
        2 * math.pi * freq * torch.arange(round(seconds * sr), dtype=torch.float64) / sr
    )


def test_k_weighting_reproduces_itu_48k_coefficients():
    # ITU-R BS.1770-4, Tables 1 and 2 (48 kHz).
    shelf = ([1.53512485958697, -2.69169618940638, 1.19839281085285],
             [1.0, -1.69065929318241, 0.73248077421585])  # fmt: skip
    highpass = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])
    n_fft = 4096
    z1 = np.exp(-2j * np.pi * np.arange(n_fft // 2 + 1) / n_fft)

    def response(b, a):
        return np.polyval(b[::-1], z1) / np.polyval(a[::-1], z1)

    expected = np.abs(response(*shelf) * response(*highpass))
    ours = A._k_weighting_response(n_fft, 48000).abs().numpy()
    np.testing.assert_allclose(
        ours[4:], expected[4:], rtol=1e-6
    )  # near-DC: the zero makes rtol moot


def test_loudness_of_reference_sine():
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS.
    assert A.loudness_lufs(_sine(997, 5, 48000), 48000) == pytest.approx(-3.01, abs=0.01)
    # At 16 kHz the bilinear warping of the shelf moves 1 kHz by a few hundredths of a dB.
    assert A.loudness_lufs(_sine(997, 5, 16000), 16000) == pytest.approx(-3.01, abs=0.05)


def test_loudness_gating_and_normalisation():
    tone = _sine(997, 3, 16000, amp=0.1)
    with_silence = torch.cat([tone, torch.zeros(3 * 16000)])
    # 27 full tone blocks + 3 partly-tone blocks (75/50/25 %) pass both gates; silent blocks don't.
    expected = A.loudness_lufs(tone) + 10 * math.log10(28.5 / 30)
    assert A.loudness_lufs(with_silence) == pytest.approx(expected, abs=0.01)
    assert A.loudness_lufs(torch.zeros(16000)) == -math.inf
    assert A.loudness_lufs(torch.stack([tone, tone])) == pytest.approx(
        A.loudness_lufs(tone) + 10 * math.log10(2), abs=1e-6
    )
    out = A.normalize_loudness(tone.float(), target_lufs=-23.0)
    assert A.loudness_lufs(out) == pytest.approx(-23.0, abs=1e-3)
    assert torch.equal(A.normalize_loudness(torch.zeros(100)), torch.zeros(100))


def test_loudness_matches_pyloudnorm():
    # Our BS.1770-4 stays (pyloudnorm would pull scipy into the render path); pyloudnorm is the
    # reference it must agree with.
    pyln = pytest.importorskip("pyloudnorm")
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    for sr, x in [
        (16000, 0.1 * np.sin(2 * np.pi * 440 * t)),
        (16000, 0.05 * rng.standard_normal(len(t)) * (t > 1)),  # gating: 1 s of silence first
    ]:
        want = pyln.Meter(sr).integrated_loudness(x)
        got = A.loudness_lufs(torch.from_numpy(x.astype(np.float32)), sr)
        # ≤ 0.2 LU: the two derive the K-weighting filters for 16 kHz slightly differently.
        assert got == pytest.approx(want, abs=0.2)
