"""Does a model hear velocity? One pitch, velocities rising from 20 to 120, loudness per note.

    python benchmarks/velocity_ramp.py [--model NAME] [--program 0] [--pitch 60] [--json F]

A MIDI file of one instrument playing the same key at velocities 20, 30, …, 120 (0.6 s on, 0.4 s
rest each) is rendered at the model's defaults. Each note's level is the RMS of the rendered audio
over [onset + 50 ms, onset + 550 ms] in dB, and the mean log-mel energy over the same frames (what
the model itself produced, before the inverter). Pass: levels rise monotonically and the step from
velocity 20 to 120 is at least 10 dB.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

VELOCITIES = tuple(range(20, 121, 10))
NOTE_S, GAP_S = 0.6, 0.4


def ramp_midi(path: Path, program: int = 0, pitch: int = 60, velocities=VELOCITIES) -> Path:
    """Write the ramp as a MIDI file (120 bpm, 480 ticks per beat: 960 ticks per second)."""
    import mido

    tps = 960
    track = mido.MidiTrack([mido.Message("program_change", program=program, time=0)])
    for i, v in enumerate(velocities):
        track.append(
            mido.Message(
                "note_on", note=pitch, velocity=v, time=0 if i == 0 else round(GAP_S * tps)
            )
        )
        track.append(mido.Message("note_off", note=pitch, velocity=0, time=round(NOTE_S * tps)))
    mf = mido.MidiFile(ticks_per_beat=480)
    mf.tracks.append(track)
    mf.save(path)
    return path


def ramp_levels(model, program: int = 0, pitch: int = 60, seed: int = 0) -> dict:
    """Render the ramp with ``model`` (a LoadedModel); per-velocity audio dB and mel level."""
    import tempfile

    from midisynth import audio
    from midisynth.render import RenderOptions, render

    with tempfile.TemporaryDirectory() as tmp:
        out = render(
            model, ramp_midi(Path(tmp) / "ramp.mid", program, pitch), RenderOptions(seed=seed)
        )
    rows = []
    for i, v in enumerate(VELOCITIES):
        t0 = i * (NOTE_S + GAP_S) + 0.05
        a, b = round(t0 * audio.SAMPLE_RATE), round((t0 + 0.5) * audio.SAMPLE_RATE)
        rms = float(np.sqrt(np.mean(out.audio[a:b].astype(np.float64) ** 2)) + 1e-12)
        fa, fb = round(t0 * audio.FRAME_RATE), round((t0 + 0.5) * audio.FRAME_RATE)
        mel_db = float(10 * np.log10(np.exp(2 * out.mel[fa:fb]).sum(1).mean() + 1e-20))
        rows.append(
            {"velocity": v, "audio_db": round(20 * np.log10(rms), 2), "mel_db": round(mel_db, 2)}
        )
    audio_db = [r["audio_db"] for r in rows]
    mel_db = [r["mel_db"] for r in rows]
    return {
        "rows": rows,
        "audio_monotonic": bool(np.all(np.diff(audio_db) > 0)),
        "mel_monotonic": bool(np.all(np.diff(mel_db) > 0)),
        "audio_range_db": round(audio_db[-1] - audio_db[0], 2),
        "mel_range_db": round(mel_db[-1] - mel_db[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="default: the default model")
    ap.add_argument("--program", type=int, default=0)
    ap.add_argument("--pitch", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    import torch

    from midisynth import weights

    torch.set_num_threads(args.threads)
    model = weights.load_model(args.model)
    res = {"model": model.name, "program": args.program, "pitch": args.pitch}
    res.update(ramp_levels(model, args.program, args.pitch, args.seed))
    print(f"{'velocity':>8} {'audio dB':>9} {'mel dB':>8}")
    for r in res["rows"]:
        print(f"{r['velocity']:>8} {r['audio_db']:>9.2f} {r['mel_db']:>8.2f}")
    print(
        f"audio: monotonic {res['audio_monotonic']}, 20→120 {res['audio_range_db']:+.1f} dB; "
        f"mel: monotonic {res['mel_monotonic']}, {res['mel_range_db']:+.1f} dB"
    )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
