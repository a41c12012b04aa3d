"""Inverter quality on real songs: log-spectral distance to the real audio from its own log-mel.

    python benchmarks/inverter_quality.py SONG.mid [SONG.mid ...] [--seconds 30] \\
        [--inverter griffin-lim --inverter vocoder-s --inverter vocoder-p ...]

Each MIDI file is rendered by FluidSynth (FluidR3_GM, or $MIDISYNTH_SOUNDFONT; its default reverb
and chorus, as `midisynth evaluate` makes references), cut to ``--seconds``, and turned into the
front end's log-mel; every inverter turns that mel back into audio the way ``midisynth invert``
does (``inverter.invert_file``: 256-frame chunks through ``StreamingInverter``, ``--normalize
none`` so no gain enters the distance). Columns: log-spectral distance in dB at 2048 points (hop
512; where phase that does not line up from frame to frame shows; also over the frames within
60 dB of the song's loudest only, so silence does not dominate) and at the front end's own
framing (1024 points, 640-sample window), each the mean over songs, and the inverter's RTF here.
``--plot PNG`` draws the first song's first ``--plot-seconds`` at 2048 points: the real audio on
top, then each inverter's (matplotlib, the ``eval`` extra).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, print_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("songs", nargs="+", type=Path)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--inverter", action="append", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--plot-seconds", type=float, default=6.0)
    args = ap.parse_args(argv)

    import soundfile as sf
    import torch

    from midisynth import audio
    from midisynth.eval_tools import FluidSynthReference
    from midisynth.inverter import invert_file
    from midisynth.metrics import log_spectral_distance

    torch.set_num_threads(args.threads)
    inverters = args.inverter or ["griffin-lim", "vocoder-s"]
    synth = FluidSynthReference()
    rows: dict[str, dict[str, list[float]]] = {
        k: {"2048": [], "sounding": [], "1024": [], "rtf": []} for k in inverters
    }
    pictures: dict[str, np.ndarray] = {}  # the first song: real audio, then each inverter
    with tempfile.TemporaryDirectory(prefix="inverter-quality-") as tmp:
        work = Path(tmp)
        for song in args.songs:
            ref_path = synth(song, work / f"{song.stem}.wav")
            ref, sr = sf.read(ref_path, dtype="float32", always_2d=True)
            ref = ref.mean(axis=1)[: int(args.seconds * sr)]
            mel = audio.log_mel(torch.from_numpy(ref)).numpy()
            np.save(work / "mel.npy", mel)
            if not pictures:
                pictures[f"real audio ({song.stem})"] = ref
            for name in inverters:
                dst = work / f"{song.stem}-{Path(name).name}.wav"
                t0 = time.perf_counter()
                invert_file(work / "mel.npy", dst, name, normalize="none")
                rows[name]["rtf"].append((time.perf_counter() - t0) / (len(ref) / sr))
                est, _ = sf.read(dst, dtype="float32")
                if song == args.songs[0]:
                    pictures[name] = est
                rows[name]["2048"].append(log_spectral_distance(ref, est, 2048))
                rows[name]["1024"].append(log_spectral_distance(ref, est))
                rows[name]["sounding"].append(log_spectral_distance(ref, est, 2048, 60.0))
                print(
                    f"{song.name:24s} {name:22s} LSD@2048 {rows[name]['2048'][-1]:.2f} dB"
                    f"  (sounding {rows[name]['sounding'][-1]:.2f})"
                    f"  LSD@1024 {rows[name]['1024'][-1]:.2f} dB",
                    flush=True,
                )
    print(f"\n# {machine()}; {len(args.songs)} songs, first {args.seconds:g} s, {synth!r}")
    print_table(
        [
            "inverter",
            "LSD @2048 (dB)",
            "@2048, sounding frames",
            "LSD @1024 (dB)",
            f"RTF ({args.threads} thread)",
        ],
        [
            [
                k,
                f"{np.mean(v['2048']):.2f}",
                f"{np.mean(v['sounding']):.2f}",
                f"{np.mean(v['1024']):.2f}",
                f"{np.mean(v['rtf']):.4f}",
            ]
            for k, v in rows.items()
        ],
    )
    if args.plot is not None:
        _plot(args.plot, pictures, int(args.plot_seconds * 16000), rows)
    return 0


def _plot(path: Path, waves: dict[str, np.ndarray], n: int, rows: dict) -> None:
    """Log power spectrograms at 2048 points (hop 512) of the first ``n`` samples, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(len(waves), 1, figsize=(10, 2.3 * len(waves)), sharex=True)
    win = torch.hann_window(2048, dtype=torch.float64)
    for ax, (name, wave) in zip(axes, waves.items(), strict=True):
        x = torch.as_tensor(wave[:n], dtype=torch.float64)
        spec = torch.stft(x, 2048, 512, window=win, return_complex=True).abs().square()
        db = 10 * torch.log10(spec.clamp_min(1e-10)).numpy()
        ax.imshow(db, origin="lower", aspect="auto", vmin=-100, vmax=db.max(), cmap="magma",
                  extent=(0, n / 16000, 0, 8))  # fmt: skip
        label = name if name not in rows else f"{name}: LSD@2048 {rows[name]['2048'][0]:.2f} dB"
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
