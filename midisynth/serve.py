"""`midisynth serve`: a local web page — drop a MIDI file, choose instruments, render, listen.

A small Starlette app served by uvicorn (the ``web`` extra, imported only by ``serve``) around a
``studio.Studio`` (uploads, the render queue, the files); the page is plain HTML with a little
vanilla JavaScript, no build step. Safe by default, and meant to stay up whatever a client sends:

- binds to 127.0.0.1 unless told otherwise; a request must name an allowed host (``Host``:
  localhost, 127.0.0.1, [::1], ``--host``'s, ``--allow-host``'s: no DNS rebinding) and, when a
  browser says where it comes from (``Origin``), come from the page itself: another site the user
  visits cannot drive it;
- every body is limited (413): uploads to ``max_upload_mb``, the rest to 64 KiB;
- every upload is parsed as MIDI, off the event loop (``PARSERS`` at a time), with the CLI's
  one-line errors (400); a song longer than ``max_duration`` is refused there, before any work;
- uploads and renders live in a private temporary folder under generated names (32 hex digits);
  nothing a client sends is ever used as a path, and ids that are not such names are 404s;
- one render at a time, in a worker thread; at most ``max_queue`` renders waiting or running (429
  beyond, 503 while stopping); a waiting or running render can be cancelled;
- uploads and finished renders are removed oldest first beyond ``max_files`` each, beyond
  ``max_storage_mb`` together, or after ``keep_minutes`` unused (never one a render needs);
- one Ctrl-C stops it within seconds, requests in flight or a render running (it stops at its next
  segment), and the folder is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .extras import pip_install
from .midi import MidiError
from .programs import GM_PROGRAM_NAMES
from .render import TooLongError
from .studio import ID, Limits, Refused, RenderJob, Studio

__all__ = ["Limits", "Studio", "create_app", "serve"]
WEB_HINT = f"the web page needs its extra: {pip_install('web')}"
try:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.routing import Route
except ImportError:  # pragma: no cover - the CLI checks first
    raise ImportError(WEB_HINT) from None

MAX_JSON_BYTES = 64 * 1024  # body limit of every endpoint but the upload
PARSERS = 2  # uploads parsed at once (a 10 MB file on mido's slow path takes ~20 s and ~1 GB)
GRACE_S = 3.0  # on Ctrl-C: how long requests in flight may finish before they are cancelled
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


# ---- The app ------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or ``_TooLarge`` as soon as it passes ``limit`` bytes (whatever it declared)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


async def _in_thread(fn, *args):
    """``fn(*args)`` in a daemon thread, awaited: the event loop serves other requests meanwhile,
    and one still running when the server stops does not hold the process up."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(result)

    def run() -> None:
        try:
            result, error = fn(*args), None
        except Exception as e:  # handed to the awaiting request
            result, error = None, e
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="midisynth-parse", daemon=True).start()
    return await future


def _error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class _Api:
    """The route handlers, each a few lines, over the one ``Studio``."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio
        self.parsers: asyncio.Semaphore | None = None  # made in the event loop, on first use

    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("__PROGRAMS__", json.dumps(list(GM_PROGRAM_NAMES))))

    async def upload(self, request: Request) -> JSONResponse:
        limit = self.studio.limits.max_upload_bytes
        try:
            body = await _read_body(request, limit)
        except _TooLarge:
            return _error(413, f"file too large (limit {self.studio.limits.max_upload_mb:g} MB)")
        # Shown and quoted in one-line messages, never used as a path: printable, short.
        name = "".join(c for c in unquote(request.headers.get("x-filename", "")) if c.isprintable())
        name = Path(name).name[:200] or "upload.mid"
        if not body:
            return _error(400, "empty upload: choose a MIDI file")
        if self.parsers is None:
            self.parsers = asyncio.Semaphore(PARSERS)
        try:  # parsing takes up to seconds: in a thread, so that other requests go on
            async with self.parsers:
                info = await _in_thread(self.studio.add_upload, name, body)
        except MidiError as e:
            return _error(400, str(e).replace("<bytes>", name))
        except TooLongError as e:
            return _error(400, f"{name}: {e}")
        except Refused as e:
            return _error(*e.args)
        return JSONResponse(info)

    async def submit(self, request: Request) -> JSONResponse:
        try:
            payload = json.loads(await _read_body(request, MAX_JSON_BYTES))
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
            job = self.studio.submit(str(payload.get("id", "")), payload)
        except _TooLarge:
            return _error(413, f"request too large (limit {MAX_JSON_BYTES // 1024} KiB)")
        except KeyError:
            return _error(404, "unknown upload: upload the file again")
        except Refused as e:
            return _error(*e.args, **{"retry-after": "30"} if e.args[0] == 429 else {})
        except (ValueError, TypeError, AttributeError, RecursionError) as e:
            return _error(400, str(e).splitlines()[0] if str(e) else "bad request")
        return JSONResponse({"job": job.id})

    def _job(self, request: Request) -> RenderJob | None:
        jid = request.path_params["job"]
        with self.studio.lock:
            return self.studio.jobs.get(jid) if ID.match(jid) else None

    async def status(self, request: Request) -> JSONResponse:
        job = self._job(request)
        if job is None:
            return _error(404, "unknown render")
        return JSONResponse(
            {
                "state": job.state,
                "position": self.studio.position(job),
                "progress": round(job.progress, 3),
                "error": job.error,
                "files": sorted(job.files) if job.state == "done" else [],
            }
        )

    async def cancel(self, request: Request) -> JSONResponse:
        job = self._job(request)
        if job is None:
            return _error(404, "unknown render")
        self.studio.cancel(job)
        return JSONResponse({"state": job.state})

    async def file(self, request: Request) -> Response:
        job = self._job(request)
        kind = request.path_params["kind"]
        path = job.files.get(kind) if job is not None and job.state == "done" else None
        if path is None or not path.exists():  # unknown, not finished, or removed
            return _error(404, "no such file")
        job.used = time.monotonic()
        media = {"wav": "audio/wav", "flac": "audio/flac", "png": "image/png"}[kind]
        name = Path(job.name).stem or "render"
        return FileResponse(path, media_type=media, filename=f"{name}.{kind}")


class _Guard:
    """ASGI middleware in front of every route: the Host and Origin allow-list, a body limit
    checked on the declared Content-Length (the handlers also count what actually arrives), and a
    503 for a request cut off by the server stopping (a stalled upload), not a logged traceback."""

    HOST = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?$")

    def __init__(
        self, app, hosts: frozenset[str], upload_limit: int, closing: threading.Event
    ) -> None:
        self.app, self.hosts, self.upload_limit, self.closing = app, hosts, upload_limit, closing

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is not None:
            await _error(*refusal)(scope, receive, send)
            return
        started = False

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except asyncio.CancelledError:
            if not self.closing.is_set():
                raise
            if not started:
                await _error(503, "the server is stopping")(scope, receive, send)

    def refusal(self, scope) -> tuple[int, str] | None:
        """(status, message) for a request refused before its handler, else None."""
        headers: dict[str, list[str]] = {}
        for key, value in scope["headers"]:
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        hosts = headers.get("host", [])
        parsed = [self.HOST.match(h) for h in hosts]
        if len(hosts) != 1 or parsed[0] is None or self._name(parsed[0][1]) not in self.hosts:
            return 403, f"request for an unknown host refused ({', '.join(hosts) or 'none'})"
        port = parsed[0][2] or "80"
        for origin in headers.get("origin", []):
            if not self._same_page(origin, port):
                return 403, f"request from another site refused (Origin {origin[:100]})"
        sizes = headers.get("content-length", [])
        limit = self.upload_limit if scope["path"] == "/api/upload" else MAX_JSON_BYTES
        if any(not s.strip().isdigit() or len(s.strip()) > 15 for s in sizes):
            return 400, "bad Content-Length"
        if any(int(s) > limit for s in sizes):
            return 413, f"request too large (limit {limit / 2**20:.3g} MB)"
        return None

    def _same_page(self, origin: str, port: str) -> bool:
        """An Origin naming an allowed host on this server's port (the page under any of its
        names); ``null`` (a file, a sandboxed frame) and other sites are not."""
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            return False
        return (
            parts.scheme in ("http", "https")
            and self._name(parts.hostname or "") in self.hosts
            and str(origin_port) == port
        )

    @staticmethod
    def _name(host: str) -> str:
        return host.strip("[]").lower()


def allowed_hosts(host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Host names the page answers to: the local ones, the one it binds to, and ``extra``."""
    return frozenset(_Guard._name(h) for h in (*LOCAL_HOSTS, host, *extra))


def create_app(
    model,
    limits: Limits | None = None,
    *,
    host: str = "127.0.0.1",
    allow_hosts: tuple[str, ...] = (),
) -> Starlette:
    """The Starlette app around a loaded model (``midisynth.load_model``): a ``Studio``, its
    routes, the ``_Guard`` in front, and a lifespan that closes the studio on shutdown."""
    studio = Studio(model, limits)
    api = _Api(studio)
    routes = [
        Route("/", api.page),
        Route("/api/upload", api.upload, methods=["POST"]),
        Route("/api/render", api.submit, methods=["POST"]),
        Route("/api/jobs/{job}", api.status),
        Route("/api/jobs/{job}/cancel", api.cancel, methods=["POST"]),
        Route("/api/jobs/{job}/file/{kind}", api.file),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        studio.close()  # nothing left behind on shutdown

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(
        _Guard,
        hosts=allowed_hosts(host, allow_hosts),
        upload_limit=studio.limits.max_upload_bytes,
        closing=studio.closing,
    )
    app.state.studio = studio
    return app


class _QuietStop(logging.Filter):
    """uvicorn's log, once stopping, without its errors about stopping: the line on requests cut
    off at the end of the grace time (answered 503 by ``_Guard``) and, after a second Ctrl-C, the
    traceback of its cancelled lifespan. Ctrl-C is the normal end, not an error."""

    def __init__(self, closing: threading.Event) -> None:
        super().__init__()
        self.closing = closing

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        stop = text.startswith("Cancel ") or "CancelledError" in text or "KeyboardInterrupt" in text
        return not (self.closing.is_set() and stop)


def serve(
    model,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    allow_hosts: tuple[str, ...] = (),
) -> None:
    """Run the page until Ctrl-C (or SIGTERM), then remove its folder.

    Requests still in flight get ``GRACE_S`` seconds, a running render ``STOP_S`` to reach its next
    segment. If it is still running then (a long segment on a slow device), the process ends at
    once (``os._exit``) rather than abort in torch's teardown under it (SIGABRT).
    """
    import uvicorn

    app = create_app(model, limits, host=host, allow_hosts=allow_hosts)
    studio: Studio = app.state.studio

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # At the first signal: a running render stops at its next segment, new renders get
            # 503, and requests still stalled when the grace ends are answered 503 (see _Guard).
            studio.closing.set()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACE_S
    )
    log, quiet = logging.getLogger("uvicorn.error"), _QuietStop(studio.closing)
    log.addFilter(quiet)
    stop: SystemExit | None = None
    try:
        Server(config).run()
    except KeyboardInterrupt:  # uvicorn raises Ctrl-C again once it has stopped: the normal end
        pass
    except SystemExit as e:  # SIGTERM through the CLI's handler; a port already in use
        stop = e
    finally:
        log.removeFilter(quiet)
        studio.close()  # also when a second Ctrl-C cut uvicorn's own shutdown short
    if studio.worker.is_alive():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.code if stop is not None and isinstance(stop.code, int) else 0)
    if stop is not None:
        raise stop


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
 <p><button id="render">Render</button> <button id="cancel" hidden>Cancel</button> <span id="status"></span></p>
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
let upload = null, current = null;
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
  current = j.job; $('progress').hidden = false; $('render').disabled = true; $('cancel').hidden = false;
  poll(j.job);
});
$('cancel').addEventListener('click', async () => {
  if (!current) return;
  const r = await fetch('/api/jobs/' + current + '/cancel', {method: 'POST'});
  if (!r.ok) { fail((await r.json()).error); }
});
function finished() { current = null; $('render').disabled = false; $('cancel').hidden = true; }
async function poll(job) {
  const r = await fetch('/api/jobs/' + job); const j = await r.json();
  if (!r.ok) { finished(); fail(j.error); return; }
  $('progress').value = j.progress;
  $('status').textContent = j.state === 'queued' ? 'waiting: ' + j.position + ' render(s) before yours' : j.state;
  if (j.state === 'done') {
    finished(); $('result').hidden = false;
    const base = '/api/jobs/' + job + '/file/';
    $('player').src = base + 'wav'; $('wav').href = base + 'wav'; $('flac').href = base + 'flac';
    $('picture').hidden = !j.files.includes('png'); if (j.files.includes('png')) $('picture').src = base + 'png';
  } else if (j.state === 'failed') { finished(); fail(j.error); }
  else if (j.state === 'cancelled') { finished(); $('progress').hidden = true; }
  else setTimeout(() => poll(job), 300);
}
</script></body></html>
"""
