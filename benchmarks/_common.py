"""Helpers shared by the benchmark scripts: test songs written with mido, child processes with
their own peak RSS, the machine's description and plain-text tables."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mido

TPB = 480  # ticks per beat
CHORDS = [(48, 52, 55), (45, 48, 52), (41, 45, 48), (43, 47, 50)]  # C Am F G
MELODY = [72, 74, 76, 79, 77, 76, 74, 72, 69, 72, 74, 76, 74, 72, 71, 74]


def write_song(path: Path, seconds: float, bpm: float = 120.0, drums: bool = True) -> Path:
    """A format-1 MIDI file of exactly `seconds` of music: piano chords and melody, fingered bass
    and (optionally) a drum kit, a 4-bar pattern repeated. Every note ends by `seconds`."""
    beats = seconds * bpm / 60.0
    parts: dict[tuple[int, int], list[tuple[float, float, int, int]]] = {
        (0, 0): [],  # (channel, program): (start beat, length, pitch, velocity)
        (1, 33): [],
        (9, 0): [],
    }
    bar = 0
    while 4 * bar < beats:
        b0 = 4.0 * bar
        chord = CHORDS[bar % 4]
        parts[(0, 0)] += [(b0, 4.0, p, 64) for p in chord]
        parts[(0, 0)] += [(b0 + i, 1.0, MELODY[(4 * bar + i) % 16], 90) for i in range(4)]
        parts[(1, 33)] += [(b0 + q, 0.9, chord[0] - 12, 100) for q in range(4)]
        if drums:
            parts[(9, 0)] += [(b0 + q, 0.25, 36 if q % 2 == 0 else 38, 100) for q in range(4)]
            parts[(9, 0)] += [(b0 + e / 2, 0.25, 42, 70) for e in range(8)]
        bar += 1
    f = mido.MidiFile(type=1, ticks_per_beat=TPB)
    tempo = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm), time=0)])
    f.tracks.append(tempo)
    for (ch, prog), notes in parts.items():
        events = [(0, 0, mido.Message("program_change", channel=ch, program=prog))]
        for start, length, pitch, vel in notes:
            if start >= beats:
                continue
            on, off = round(start * TPB), round(min(start + length, beats) * TPB)
            if off <= on:
                continue
            events.append((on, 2, mido.Message("note_on", channel=ch, note=pitch, velocity=vel)))
            events.append((off, 1, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
        if len(events) == 1:
            continue
        track, now = mido.MidiTrack(), 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - now))
            now = tick
        f.tracks.append(track)
    f.save(path)
    return path


# Peak RSS must be measured in a process forked from a *small* one: Linux carries a process's
# high-water RSS across fork/vfork + exec (ru_maxrss would start at the benchmark parent's own
# peak, e.g. after it built a 1.6 GB model). So every command runs under this launcher, started
# with `python -S` (~10 MB), which forks, execs the command and reports its child's rusage.
LAUNCHER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"maxrss_kb": usage.ru_maxrss, "status": status}, f)
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


@dataclass
class ChildResult:
    result: dict  # what the child printed as its RESULT line ({} on failure)
    wall_s: float  # the whole process: interpreter start, imports, model load, work
    peak_rss_mb: float  # the command's own peak resident set (MiB), from its parent's wait4
    returncode: int
    log_tail: str  # last lines of the child's stderr


def run_child(
    argv: list[str], timeout: float | None = None, env: dict | None = None
) -> ChildResult:
    """Run a command under LAUNCHER and return its figures. A Python child reports its own
    numbers by printing one line `RESULT <json>` on stdout."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as d,
    ):
        usage_file = Path(d) / "usage.json"
        cmd = [sys.executable, "-S", "-c", LAUNCHER, str(usage_file), *argv]
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the launcher and the command (their own process group)
            p.wait()
        wall = time.perf_counter() - t0
        usage = json.loads(usage_file.read_text()) if usage_file.is_file() else {}
        out.seek(0)
        err.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
        tail = "\n".join(err.read().decode(errors="replace").splitlines()[-8:])
    result = {}
    for line in reversed(lines):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            break
    return ChildResult(result, wall, usage.get("maxrss_kb", 0) / 1024, p.returncode, tail)


def report_result(result: dict) -> None:
    """Called in a child: hand the figures to the parent."""
    print("RESULT " + json.dumps(result), flush=True)


def machine(threads: int | None = None) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    thr = threads if threads else torch.get_num_threads()
    return (
        f"{cpu}, {os.cpu_count()} cores, load average {load}; torch {torch.__version__}, "
        f"{thr} thread(s); Python {sys.version.split()[0]}"
    )


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    fmt = " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    print(fmt.format(*headers))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(fmt.format(*r))
