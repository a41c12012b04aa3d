"""The state behind `midisynth serve`'s page, no web framework in it: the uploads, the render
queue and its one worker thread, and the files in a private temporary folder.

Bounded whatever clients send (see ``Limits``): a song longer than ``max_duration`` is refused at
upload, from its notes; at most ``max_queue`` renders wait or run; a waiting render can be
cancelled at once and a running one stops at its next segment; uploads and finished renders are
removed oldest first beyond ``max_files`` each, beyond ``max_storage_mb`` together, or after
``keep_minutes`` unused (never one a render needs); ``close`` stops the worker and removes the
folder.
"""

from __future__ import annotations

import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .midi import read_midi
from .programs import parse_program, program_name
from .render import RenderOptions, apply_programs, check_duration, render, style_index

ID = re.compile(r"^[0-9a-f]{32}$")  # upload and render ids: generated, never a client's path
STOP_S = 4.0  # on closing: how long a running render may take to reach its next segment
EVICT_EVERY_S = 60.0  # the idle worker removes expired files this often
ACTIVE = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class Limits:
    """What the page accepts and keeps. Each is a `midisynth serve` option of the same name."""

    max_upload_mb: float = 10.0  # largest MIDI upload (413 beyond)
    max_duration: float | None = 600.0  # seconds of audio per song (MIDI + tail); None = no limit
    max_queue: int = 8  # renders waiting or running (429 beyond)
    max_files: int = 50  # uploads kept, and finished renders kept; the oldest go first
    max_storage_mb: float = 1024.0  # uploads and renders on disk together; the oldest go first
    keep_minutes: float = 60.0  # uploads and renders unused this long are removed

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass
class Upload:
    id: str
    info: dict[str, Any]  # what the page shows: name, duration, instruments
    path: Path
    size: int  # bytes on disk
    used: float = field(default_factory=time.monotonic)  # last upload or render request


@dataclass
class RenderJob:
    id: str
    upload: str
    name: str  # the upload's name, for download file names (the upload may be gone by then)
    options: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0  # 0..1
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # wav, flac, png
    cancel: threading.Event = field(default_factory=threading.Event)
    used: float = field(default_factory=time.monotonic)  # submitted, finished or downloaded

    @property
    def size(self) -> int:
        return sum(p.stat().st_size for p in self.files.values() if p.exists())


class Cancelled(Exception):
    """A render stopped by its Cancel button or by the server stopping."""


class Refused(Exception):
    """A request the page turns down now (queue full, stopping); args: (status, message)."""


class Studio:
    """The state behind the page: uploads, the render queue and its single worker, the files."""

    def __init__(self, model, limits: Limits | None = None) -> None:
        self.model = model
        self.limits = limits or Limits()
        self.root = Path(tempfile.mkdtemp(prefix="midisynth-serve-"))
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, RenderJob] = {}  # in submission order
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.worker = threading.Thread(target=self._work, name="midisynth-render", daemon=True)
        self.worker.start()

    # -- uploads ---------------------------------------------------------------------------------
    def add_upload(self, name: str, data: bytes) -> dict[str, Any]:
        """Validate MIDI bytes and keep them under a generated name; returns what the page shows.

        Parses (up to seconds for a big file): called off the event loop. ``MidiError`` or
        ``TooLongError``, one line each, for a file the page will not render; ``Refused`` once
        the server is stopping.
        """
        score = read_midi(data)
        check_duration(score, self.render_options({}))
        if self.closing.is_set():  # the folder is going or gone
            raise Refused(503, "the server is stopping")
        uid = uuid.uuid4().hex
        path = self.root / f"{uid}.mid"
        path.write_bytes(data)
        info = {
            "id": uid,
            "name": Path(name or "upload.mid").name[:200],  # shown, never used as a path
            "duration": round(score.total_time, 2),
            "instruments": [
                {
                    "index": i.index,
                    "track": i.track,
                    "channel": i.channel + 1,
                    "name": i.name,
                    "program": i.program,
                    "program_name": "drums" if i.is_drum else program_name(i.program),
                    "is_drum": i.is_drum,
                    "notes": i.n_notes,
                }
                for i in score.instruments
            ],
        }
        with self.lock:
            self.uploads[uid] = Upload(uid, info, path, len(data))
        self.evict(keep=uid)
        return info

    # -- renders ---------------------------------------------------------------------------------
    def render_options(self, opts: dict[str, Any]) -> RenderOptions:
        """The page's choices as RenderOptions; ValueError (one line) for a bad program or a
        style the model lacks (``style``: as ``render --style``)."""
        tracks = tuple((int(t), parse_program(str(p))) for t, p in opts.get("tracks", {}).items())
        swaps = tuple(
            (parse_program(str(a)), parse_program(str(b)))
            for a, b in opts.get("programs", {}).items()
        )
        style = opts.get("style")
        if style is not None and not isinstance(style, str):
            raise ValueError("style must be a string")
        options = RenderOptions(
            track_programs=tracks,
            program_swaps=swaps,
            drums=bool(opts.get("drums", True)),
            max_duration=self.limits.max_duration,
            style=style or None,
        )
        style_index(self.model, options.style)
        return options

    def submit(self, upload: str, options: dict[str, Any]) -> RenderJob:
        """Queue a render of an upload: KeyError if unknown, ``Refused`` when full or stopping."""
        self.render_options(options)  # bad programs fail here, with their message
        with self.lock:
            if self.closing.is_set():
                raise Refused(503, "the server is stopping")
            up = self.uploads.get(upload) if ID.match(upload) else None
            if up is None:
                raise KeyError("unknown upload")
            if sum(j.state in ACTIVE for j in self.jobs.values()) >= self.limits.max_queue:
                raise Refused(429, f"{self.limits.max_queue} renders are waiting: try again later")
            job = RenderJob(uuid.uuid4().hex, upload, up.info["name"], options)
            self.jobs[job.id] = job
            up.used = time.monotonic()
        self.queue.put(job.id)
        return job

    def position(self, job: RenderJob) -> int:
        """0 when running or finished, else how many renders are before it."""
        with self.lock:
            if job.state != "queued":
                return 0
            waiting = [j for j in self.jobs if self.jobs[j].state in ACTIVE]
        return waiting.index(job.id)

    def cancel(self, job: RenderJob) -> None:
        """Cancel a waiting render now, a running one at its next segment."""
        with self.lock:
            if job.state == "queued":
                job.state = "cancelled"
            job.cancel.set()

    def _work(self) -> None:
        while True:
            try:
                jid = self.queue.get(timeout=EVICT_EVERY_S)
            except queue.Empty:
                self.evict()
                continue
            if jid is None:
                return
            with self.lock:
                job = self.jobs.get(jid)
                if job is None or job.state != "queued":  # cancelled while waiting
                    continue
                job.state = "running"
            state, error = "done", None
            try:
                self._render(job)
            except Cancelled:
                state = "cancelled"
            except Exception as e:  # noqa: BLE001 - reported on the page, the server goes on
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                state, error = "failed", message.replace(str(self.root), job.name)
            with self.lock:
                job.state, job.error, job.used = state, error, time.monotonic()
                job.progress = 1.0 if state == "done" else job.progress
            self.evict(keep=job.id)

    def _render(self, job: RenderJob) -> None:
        import torch

        from . import audio

        options = self.render_options(job.options)
        score = read_midi(self.root / f"{job.upload}.mid")

        def progress(done: float, total: float) -> None:  # called after every segment
            if job.cancel.is_set() or self.closing.is_set():
                raise Cancelled
            job.progress = min(0.99, done / total) if total else 0.0

        out = render(self.model, score, options, progress)
        # -16 LUFS as the CLI's default (--normalize loudness), then turned down if it would clip.
        wave = audio.normalize_loudness(torch.from_numpy(out.audio), out.sample_rate)
        peak = float(wave.abs().max()) if wave.numel() else 0.0
        if peak > 1.0:
            wave = wave / peak  # turned down, never clipped (as the CLI does)
        files = {}
        for ext in ("wav", "flac"):
            files[ext] = self.root / f"{job.id}.{ext}"
            audio.write_audio(files[ext], wave, out.sample_rate)
        try:
            from .plot import plot_render

            onsets = sorted({n.start for n in apply_programs(score, options)})
            files["png"] = self.root / f"{job.id}.png"
            plot_render(files["png"], out.mel, out.audio, out.sample_rate, onsets)
        except ImportError:
            files.pop("png", None)  # no matplotlib: the page shows no picture
        job.files = files

    # -- files -----------------------------------------------------------------------------------
    def evict(self, keep: str | None = None) -> None:
        """Remove uploads and finished renders, oldest use first: those unused for
        ``keep_minutes``, those beyond ``max_files`` of each kind, then as many as it takes to fit
        ``max_storage_mb``. Kept whatever the limits: an upload a waiting or running render needs,
        and ``keep`` (the upload or render just made: it is what the page asked for)."""
        lim, now = self.limits, time.monotonic()
        with self.lock:
            busy = {j.upload for j in self.jobs.values() if j.state in ACTIVE} | {keep}
            uploads = sorted(
                (u for u in self.uploads.values() if u.id not in busy), key=lambda u: u.used
            )
            results = sorted(
                (j for j in self.jobs.values() if j.state in FINISHED and j.id != keep),
                key=lambda j: j.used,
            )
            old = [x for x in uploads + results if now - x.used > lim.keep_minutes * 60]
            extra = uploads[: max(0, len(self.uploads) - lim.max_files)]
            finished = sum(j.state in FINISHED for j in self.jobs.values())
            extra += results[: max(0, finished - lim.max_files)]
            drop = {id(x): x for x in old + extra}
            sizes = {id(x): x.size for x in (*self.uploads.values(), *self.jobs.values())}
            total = sum(sizes.values()) - sum(sizes[k] for k in drop)
            for x in sorted(uploads + results, key=lambda x: x.used):
                if total <= lim.max_storage_mb * 2**20:
                    break
                if id(x) not in drop:
                    drop[id(x)] = x
                    total -= sizes[id(x)]
            for x in drop.values():
                if isinstance(x, Upload):
                    del self.uploads[x.id]
                else:
                    del self.jobs[x.id]
        for x in drop.values():
            for path in [x.path] if isinstance(x, Upload) else list(x.files.values()):
                path.unlink(missing_ok=True)

    def close(self, wait: float = STOP_S) -> None:
        """Stop the worker (a running render stops at its next segment; waited for up to ``wait``
        seconds) and remove the folder. Idempotent."""
        self.closing.set()
        with self.lock:
            for job in self.jobs.values():
                job.state = "cancelled" if job.state == "queued" else job.state
                job.cancel.set()
        self.queue.put(None)
        try:
            if threading.current_thread() is not self.worker:
                self.worker.join(wait)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
