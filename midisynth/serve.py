"""`midisynth serve`: a local web page — drop a MIDI file, choose instruments, render, listen.

A small Starlette app served by uvicorn (the ``web`` extra, imported only by ``serve``); the page
is plain HTML with a little vanilla JavaScript, no build step. Safe by default:

- binds to 127.0.0.1 unless told otherwise;
- uploads above ``max_upload_mb`` are refused (413) by their Content-Length and while reading;
- every upload is parsed as MIDI with the CLI's one-line errors (400);
- uploads and renders live in a private temporary folder under generated names (32 hex digits);
  nothing a client sends is ever used as a path, and ids that are not such names are 404s;
- one render at a time, in a worker thread; others wait in a queue and see their position;
- the folder is removed on shutdown.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

WEB_HINT = "the web page needs its extra: pip install 'midisynth[web]'"
ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class RenderJob:
    id: str
    upload: str
    options: dict[str, Any]
    state: str = "queued"  # queued | running | done | failed
    progress: float = 0.0  # 0..1
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)  # wav, flac, png


class Studio:
    """The state behind the page: uploads, the render queue and its single worker."""

    def __init__(self, model, max_upload_mb: float = 10.0) -> None:
        self.model = model
        self.max_bytes = int(max_upload_mb * 2**20)
        self.root = Path(tempfile.mkdtemp(prefix="midisynth-serve-"))
        self.uploads: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, RenderJob] = {}
        self.order: list[str] = []  # job ids in submission order
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.lock = threading.Lock()
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.worker.start()

    # -- uploads ---------------------------------------------------------------------------------
    def add_upload(self, name: str, data: bytes) -> dict[str, Any]:
        """Validate MIDI bytes, keep them under a generated name; returns what the page shows."""
        from .midi import read_midi
        from .programs import program_name

        score = read_midi(data)  # MidiError: the CLI's one-line message
        uid = uuid.uuid4().hex
        (self.root / f"{uid}.mid").write_bytes(data)
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
            self.uploads[uid] = info
        return info

    # -- renders ---------------------------------------------------------------------------------
    def submit(self, upload: str, options: dict[str, Any]) -> RenderJob:
        if not ID.match(upload or "") or upload not in self.uploads:
            raise KeyError("unknown upload")
        job = RenderJob(uuid.uuid4().hex, upload, options)
        with self.lock:
            self.jobs[job.id] = job
            self.order.append(job.id)
        self.queue.put(job.id)
        return job

    def position(self, job: RenderJob) -> int:
        """0 when running or finished, else how many renders are before it."""
        if job.state != "queued":
            return 0
        with self.lock:
            waiting = [j for j in self.order if self.jobs[j].state in ("queued", "running")]
        return waiting.index(job.id)

    def _options(self, opts: dict[str, Any]):
        from .programs import parse_program
        from .render import RenderOptions

        tracks = tuple((int(t), parse_program(str(p))) for t, p in opts.get("tracks", {}).items())
        swaps = tuple(
            (parse_program(str(a)), parse_program(str(b)))
            for a, b in opts.get("programs", {}).items()
        )
        return RenderOptions(
            track_programs=tracks, program_swaps=swaps, drums=bool(opts.get("drums", True))
        )

    def _work(self) -> None:
        while (jid := self.queue.get()) is not None:
            job = self.jobs[jid]
            job.state = "running"
            try:
                self._render(job)
                job.state, job.progress = "done", 1.0
            except Exception as e:  # noqa: BLE001 - reported on the page, the server goes on
                job.state, job.error = (
                    "failed",
                    str(e).splitlines()[0] if str(e) else type(e).__name__,
                )

    def _render(self, job: RenderJob) -> None:
        import torch

        from . import audio
        from .midi import read_midi
        from .render import apply_programs, render

        options = self._options(job.options)
        score = read_midi(self.root / f"{job.upload}.mid")

        def progress(done: float, total: float) -> None:
            job.progress = min(0.99, done / total) if total else 0.0

        out = render(self.model, score, options, progress)
        # -16 LUFS as the CLI's default (--normalize loudness), then turned down if it would clip.
        wave = audio.normalize_loudness(torch.from_numpy(out.audio), out.sample_rate)
        peak = float(wave.abs().max()) if wave.numel() else 0.0
        if peak > 1.0:
            wave = wave / peak  # turned down, never clipped (as the CLI does)
        for ext in ("wav", "flac"):
            path = self.root / f"{job.id}.{ext}"
            audio.write_audio(path, wave, out.sample_rate)
            job.files[ext] = path
        try:
            from .plot import plot_render

            onsets = sorted({n.start for n in apply_programs(score, options)})
            png = self.root / f"{job.id}.png"
            plot_render(png, out.mel, out.audio, out.sample_rate, onsets)
            job.files["png"] = png
        except ImportError:
            pass  # no matplotlib: the page shows no picture

    def close(self) -> None:
        self.queue.put(None)
        shutil.rmtree(self.root, ignore_errors=True)


# ---- The app ------------------------------------------------------------------------------------


def create_app(model, max_upload_mb: float = 10.0):
    """The Starlette app around a loaded model (``midisynth.load_model``).

    One function on purpose: its route handlers are closures over the one ``Studio`` (Starlette
    hands a handler the request only), each a few lines, read together with the route table.
    """
    try:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import FileResponse, HTMLResponse, JSONResponse
        from starlette.routing import Route
    except ImportError:
        raise ImportError(WEB_HINT) from None
    from .midi import MidiError
    from .programs import GM_PROGRAM_NAMES

    studio = Studio(model, max_upload_mb)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__PROGRAMS__", json.dumps(list(GM_PROGRAM_NAMES))))

    async def upload(request: Request) -> JSONResponse:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > studio.max_bytes + 4096:
            return error(413, f"file too large (limit {max_upload_mb:g} MB)")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > studio.max_bytes + 4096:
                return error(413, f"file too large (limit {max_upload_mb:g} MB)")
        name = unquote(request.headers.get("x-filename", "upload.mid"))
        if not body:
            return error(400, "empty upload: choose a MIDI file")
        if len(body) > studio.max_bytes:
            return error(413, f"file too large (limit {max_upload_mb:g} MB)")
        try:
            return JSONResponse(studio.add_upload(name, body))
        except MidiError as e:
            return error(400, str(e).replace("<bytes>", name))

    async def submit(request: Request) -> JSONResponse:
        try:
            payload = await request.json()
            studio._options(payload)  # bad programs fail here, with their message
            job = studio.submit(str(payload.get("id", "")), payload)
        except KeyError:
            return error(404, "unknown upload: upload the file again")
        except (ValueError, TypeError, AttributeError) as e:
            return error(400, str(e).splitlines()[0] if str(e) else "bad request")
        return JSONResponse({"job": job.id})

    def find(jid: str) -> RenderJob | None:
        return studio.jobs.get(jid) if ID.match(jid) else None

    async def status(request: Request) -> JSONResponse:
        job = find(request.path_params["job"])
        if job is None:
            return error(404, "unknown render")
        return JSONResponse(
            {
                "state": job.state,
                "position": studio.position(job),
                "progress": round(job.progress, 3),
                "error": job.error,
                "files": sorted(job.files),
            }
        )

    async def file(request: Request):
        job = find(request.path_params["job"])
        kind = request.path_params["kind"]
        if job is None or kind not in job.files:
            return error(404, "no such file")
        media = {"wav": "audio/wav", "flac": "audio/flac", "png": "image/png"}[kind]
        name = Path(studio.uploads[job.upload]["name"]).stem or "render"
        return FileResponse(job.files[kind], media_type=media, filename=f"{name}.{kind}")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        studio.close()  # nothing left behind on shutdown

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/upload", upload, methods=["POST"]),
            Route("/api/render", submit, methods=["POST"]),
            Route("/api/jobs/{job}", status),
            Route("/api/jobs/{job}/file/{kind}", file),
        ],
        lifespan=lifespan,
    )
    app.state.studio = studio
    return app


def serve(model, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = 10.0) -> None:
    """Run the page until Ctrl-C (uvicorn)."""
    try:
        import uvicorn
    except ImportError:
        raise ImportError(WEB_HINT) from None
    uvicorn.run(create_app(model, max_upload_mb), host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>midisynth</title>
<style>
 body{font:15px system-ui,sans-serif;max-width:900px;margin:2em auto;padding:0 1em;color:#222}
 #drop{border:2px dashed #888;border-radius:8px;padding:2em;text-align:center;cursor:pointer}
 #drop.over{background:#eef}
 table{border-collapse:collapse;width:100%;margin:1em 0} td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left}
 .error{color:#b00;font-weight:bold} progress{width:100%} img{max-width:100%} button{font-size:15px;padding:.4em 1.2em}
</style></head><body>
<h1>midisynth</h1>
<p>Drop a MIDI file, choose instruments, render, listen. Everything stays on this computer.</p>
<div id="drop">Drop a MIDI file here, or <input type="file" id="file" accept=".mid,.midi,.kar,audio/midi"></div>
<p id="error" class="error"></p>
<div id="song" hidden>
 <h2 id="title"></h2>
 <table><thead><tr><th>track</th><th>ch</th><th>name</th><th>instrument</th><th>notes</th></tr></thead>
 <tbody id="tracks"></tbody></table>
 <label><input type="checkbox" id="drums" checked> drums</label>
 <datalist id="gm"></datalist>
 <p><button id="render">Render</button> <span id="status"></span></p>
 <progress id="progress" max="1" value="0" hidden></progress>
</div>
<div id="result" hidden>
 <audio id="player" controls></audio>
 <p><a id="wav" download>WAV</a> · <a id="flac" download>FLAC</a></p>
 <img id="picture" alt="spectrogram of the render">
</div>
<script>
const GM = __PROGRAMS__;
const $ = id => document.getElementById(id);
let upload = null;
GM.forEach((n, i) => { const o = document.createElement('option'); o.value = i + ' ' + n; $('gm').appendChild(o); });
function fail(msg) { $('error').textContent = msg; }
async function send(file) {
  fail(''); $('song').hidden = true; $('result').hidden = true;
  const r = await fetch('/api/upload', {method: 'POST', body: file, headers: {'x-filename': encodeURIComponent(file.name)}});
  const j = await r.json();
  if (!r.ok) { fail(j.error); return; }
  upload = j; $('title').textContent = j.name + ' (' + j.duration + ' s)';
  const body = $('tracks'); body.innerHTML = '';
  j.instruments.forEach(i => {
    const tr = document.createElement('tr');
    const inst = i.is_drum ? 'drums' :
      '<input list="gm" size="34" data-track="' + i.track + '" value="' + i.program + ' ' + i.program_name + '">';
    tr.innerHTML = '<td>' + i.track + '</td><td>' + i.channel + '</td><td></td><td>' + inst + '</td><td>' + i.notes + '</td>';
    tr.children[2].textContent = i.name;
    body.appendChild(tr);
  });
  $('song').hidden = false;
}
$('file').addEventListener('change', e => e.target.files[0] && send(e.target.files[0]));
const drop = $('drop');
drop.addEventListener('dragover', e => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', e => { e.preventDefault(); drop.classList.remove('over'); if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]); });
$('render').addEventListener('click', async () => {
  fail(''); const tracks = {};
  document.querySelectorAll('input[data-track]').forEach(el => {
    const v = el.value.trim(); const m = v.match(/^(\\d+)( |$)/); tracks[el.dataset.track] = m ? m[1] : v; });
  const r = await fetch('/api/render', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({id: upload.id, tracks: tracks, drums: $('drums').checked})});
  const j = await r.json(); if (!r.ok) { fail(j.error); return; }
  $('progress').hidden = false; $('render').disabled = true; poll(j.job);
});
async function poll(job) {
  const r = await fetch('/api/jobs/' + job); const j = await r.json();
  $('progress').value = j.progress;
  $('status').textContent = j.state === 'queued' ? 'waiting: ' + j.position + ' render(s) before yours' : j.state;
  if (j.state === 'done') {
    $('render').disabled = false; $('result').hidden = false;
    const base = '/api/jobs/' + job + '/file/';
    $('player').src = base + 'wav'; $('wav').href = base + 'wav'; $('flac').href = base + 'flac';
    $('picture').hidden = !j.files.includes('png'); if (j.files.includes('png')) $('picture').src = base + 'png';
  } else if (j.state === 'failed') { $('render').disabled = false; fail(j.error); }
  else setTimeout(() => poll(job), 300);
}
</script></body></html>
"""
