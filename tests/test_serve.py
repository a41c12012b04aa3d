"""`midisynth serve`: the API behind the page, its refusals, and the page in a real browser."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

import midisynth.studio as S  # noqa: E402 - where the page's renders and parses happen
from midisynth.serve import Limits, create_app  # noqa: E402
from midisynth.weights import build_tiny_random  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


BASE = "http://127.0.0.1:8000"  # an allowed host (the test client's default, testserver, is not)


@contextlib.contextmanager
def _serving(limits: Limits, **kwargs):
    app = create_app(build_tiny_random(), limits, **kwargs)
    with TestClient(app, base_url=BASE) as c:
        yield c
    assert not app.state.studio.root.exists()  # nothing left behind on shutdown


@pytest.fixture()
def client():
    with _serving(Limits(max_upload_mb=0.05)) as c:
        yield c


def _upload(client, path: Path, name: str | None = None):
    return client.post(
        "/api/upload", content=path.read_bytes(), headers={"x-filename": name or path.name}
    )


def _wait(client, job: str) -> dict:
    for _ in range(600):
        st = client.get(f"/api/jobs/{job}").json()
        if st["state"] in ("done", "failed"):
            return st
        time.sleep(0.05)
    raise AssertionError("render did not finish")


def test_upload_render_and_download(client):
    r = _upload(client, EXAMPLES / "band.mid")
    assert r.status_code == 200, r.text
    song = r.json()
    assert [i["program_name"] for i in song["instruments"]][-1] == "drums"
    r = client.post(
        "/api/render", json={"id": song["id"], "tracks": {"3": "violin"}, "drums": False}
    )
    job = r.json()["job"]
    st = _wait(client, job)
    assert st["state"] == "done" and {"wav", "flac"} <= set(st["files"])
    wav = client.get(f"/api/jobs/{job}/file/wav")
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    assert 'filename="band.wav"' in wav.headers["content-disposition"]


def test_bad_uploads_get_one_line_errors(client, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, I am not a MIDI file")
    r = _upload(client, bad)
    assert (
        r.status_code == 400 and r.json()["error"] == "notes.txt: not a MIDI file (no MThd header)"
    )
    big = tmp_path / "big.mid"
    big.write_bytes(b"MThd" + b"\0" * 200_000)
    assert _upload(client, big).status_code == 413
    assert client.post("/api/upload", content=b"").status_code == 400


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs/..%2f..%2fetc%2fpasswd",
        "/api/jobs/../../etc/passwd",
        "/api/jobs/%2fetc%2fpasswd/file/wav",
        "/api/jobs/0123456789abcdef0123456789abcdef/file/wav",
        "/api/jobs/0123456789abcdef0123456789abcdef/file/..%2f..%2fpasswd",
    ],
)
def test_path_tricks_are_refused(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert b"root:" not in r.content


def test_render_refuses_unknown_ids_and_programs(client):
    assert client.post("/api/render", json={"id": "../x"}).status_code == 404
    song = _upload(client, EXAMPLES / "band.mid").json()
    r = client.post("/api/render", json={"id": song["id"], "tracks": {"1": "kazoo-trumpet"}})
    assert r.status_code == 400 and "kazoo" in r.json()["error"]
    # A style the model lacks (this one has none) is refused before it is queued.
    r = client.post("/api/render", json={"id": song["id"], "style": "musescore"})
    assert r.status_code == 400 and "has no styles" in r.json()["error"]
    assert client.post("/api/render", json={"id": song["id"], "style": 3}).status_code == 400


def test_queue_positions(client):
    studio = client.app.state.studio
    song = _upload(client, EXAMPLES / "melody_chords.mid").json()
    jobs = [client.post("/api/render", json={"id": song["id"]}).json()["job"] for _ in range(3)]
    seen = {client.get(f"/api/jobs/{j}").json()["position"] for j in jobs}
    assert seen <= {0, 1, 2}
    for j in jobs:
        assert _wait(client, j)["state"] == "done"
    assert all(studio.jobs[j].state == "done" for j in jobs)


# ---- the page in a real headless browser ----------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver",
)
def test_page_in_a_headless_browser(tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "midisynth",
            "serve",
            "--port",
            str(port),
            "-m",
            "tiny-random",
            "--max-upload-mb",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    opts = webdriver.ChromeOptions()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        driver = webdriver.Chrome(options=opts, service=service)
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 120)
        # A bad upload shows its error in the page.
        bad = tmp_path / "bad.mid"
        bad.write_bytes(b"garbage")
        driver.find_element(By.ID, "file").send_keys(str(bad))
        wait.until(lambda d: "not a MIDI file" in d.find_element(By.ID, "error").text)
        big = tmp_path / "big.mid"
        big.write_bytes(b"MThd" + b"\0" * 200_000)
        driver.find_element(By.ID, "file").send_keys(str(big))
        wait.until(lambda d: "too large" in d.find_element(By.ID, "error").text)
        # Upload an example, change one instrument, render, get playable audio.
        driver.find_element(By.ID, "file").send_keys(str(EXAMPLES / "band.mid"))
        wait.until(lambda d: d.find_element(By.ID, "song").is_displayed())
        field = driver.find_element(By.CSS_SELECTOR, 'input[data-track="1"]')
        field.clear()
        field.send_keys("40 Violin")
        driver.find_element(By.ID, "render").click()
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
        src = driver.find_element(By.ID, "player").get_attribute("src")
        assert src.endswith("/file/wav")
        wait.until(
            lambda d: d.execute_script("return document.getElementById('player').readyState") >= 1
        )
        driver.set_window_size(1000, 1100)
        assert driver.save_screenshot(str(tmp_path / "page.png"))
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


# ---- hostile clients (issue 23) -----------------------------------------------------------------


def _smf(events: bytes, tpb: int) -> bytes:
    head = b"MThd" + struct.pack(">LHHH", 6, 0, 1, tpb)
    return head + b"MTrk" + struct.pack(">L", len(events)) + events


# Division 1, tempo 0xFFFFFF, a note at tick 9,999,990: 52 bytes that claim 5.3 years.
YEARS = _smf(bytes.fromhex("00ff5103ffffff00903c6401803c0084e2ac76903e6401803e0000ff2f00"), 1)


def _song(path: Path, seconds: float) -> Path:
    """A MIDI file of ``seconds``: one note every half second."""
    events = bytearray()
    for i in range(int(seconds * 2)):
        events += bytes([0, 0x90, 48 + i % 24, 90, 0x83, 0x60, 0x80, 48 + i % 24, 0])
    path.write_bytes(_smf(bytes(events) + b"\x00\xff\x2f\x00", 480))
    return path


def test_hostile_uploads_get_one_line_4xx_at_once(client):
    vlq = _smf(b"\xff" * 40_000 + bytes.fromhex("7f903c6400ff2f00"), 480)
    cases = [
        (vlq, "vlq.mid: corrupt MIDI file (a variable-length number longer than 4 bytes at byte 22)"),
        (YEARS, "bomb.mid: the render would last 5.32 years, longer than the 10 min limit "
                "(--max-duration)"),
    ]  # fmt: skip
    for data, message in cases:
        start = time.perf_counter()
        r = client.post("/api/upload", content=data, headers={"x-filename": message.split(":")[0]})
        assert time.perf_counter() - start < 1.0
        assert r.status_code == 400 and r.json() == {"error": message}
    odd = {"x-filename": "..%2F..%2Fetc%2Fbad%0Aname.mid"}  # a path and a line break
    r = client.post("/api/upload", content=b"not midi", headers=odd)
    assert r.json()["error"] == "badname.mid: not a MIDI file (no MThd header)"


def test_every_body_is_limited(client):
    big_json = b'{"id": "' + b"0" * 70_000 + b'"}'
    assert client.post("/api/render", content=big_json).status_code == 413  # declared size
    chunks = (b"x" * 10_000 for _ in range(10))  # no Content-Length: counted as it arrives
    r = client.post("/api/render", content=chunks)
    assert r.status_code == 413 and r.json()["error"] == "request too large (limit 64 KiB)"
    r = client.post("/api/upload", content=(b"MThd" + b"\0" * 10_000 for _ in range(10)))
    assert r.status_code == 413 and "file too large" in r.json()["error"]
    assert client.request("GET", "/", content=b"x" * 70_000).status_code == 413
    assert client.request("GET", "/api/jobs/" + "0" * 32, content=b"x" * 70_000).status_code == 413


@pytest.mark.parametrize(
    "body",
    [b"[1, 2]", b"not json", b"[" * 30_000 + b"]" * 30_000, b'{"id": 7, "tracks": [1]}',
     b'{"id": "x", "tracks": {"' + b"9" * 5000 + b'": "piano"}}', b"\xff\xfe"],
    ids=["list", "text", "deep", "types", "huge-int", "bytes"],
)  # fmt: skip
def test_bad_render_requests_are_400s(client, body):
    song = _upload(client, EXAMPLES / "band.mid").json()
    if body.startswith(b'{"id": "x"'):
        body = body.replace(b'"x"', f'"{song["id"]}"'.encode())
    r = client.post("/api/render", content=body)
    assert r.status_code in (400, 404) and "\n" not in r.json()["error"], r.text


def test_garbage_never_gets_a_500(client):
    rng = random.Random(23)
    for _ in range(40):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        for path in ("/api/upload", "/api/render"):
            r = client.post(path, content=body)
            assert 400 <= r.status_code < 500 and "error" in r.json(), (path, body, r.text)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),
        ({"host": "localhost:8000"}, 200),
        ({"host": "[::1]:8000"}, 200),
        ({"host": "LOCALHOST:8000", "origin": "http://127.0.0.1:8000"}, 200),
        ({"host": "studio.lan:8000"}, 200),  # --allow-host
        ({"host": "evil.example:8000"}, 403),  # DNS rebinding
        ({"host": "127.0.0.1:8000@evil.example"}, 403),
        ({"origin": "http://evil.example"}, 403),  # another site's page
        ({"origin": "http://localhost:3000"}, 403),  # another local server's page
        ({"origin": "null"}, 403),  # a file:// page, a sandboxed frame
        ({"origin": "http://127.0.0.1:8000"}, 200),
    ],
)
def test_host_and_origin_allow_list(headers, status):
    with _serving(Limits(), allow_hosts=("studio.lan",)) as client:
        song = EXAMPLES / "band.mid"
        for r in (
            client.get("/", headers=headers),
            client.post("/api/upload", content=song.read_bytes(), headers=headers),
            client.post("/api/render", json={"id": "0" * 32}, headers=headers),
        ):
            assert r.status_code == (status if status != 200 else r.status_code), r.text
            if status == 403:
                assert "refused" in r.json()["error"]
        assert client.get("/", headers=headers).status_code == status


def _wait_for(client, job: str, states: tuple[str, ...], seconds: float = 30.0) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        st = client.get(f"/api/jobs/{job}").json()
        if st.get("state") in states:
            return st
        time.sleep(0.02)
    raise AssertionError(f"{job} never reached {states}: {st}")


def test_queue_cap_and_cancel(monkeypatch):
    def slow_render(model, score, options, progress):  # stops only when cancelled
        for i in range(10_000):
            time.sleep(0.01)
            progress(i, 10_000)
        raise AssertionError("not cancelled")

    monkeypatch.setattr(S, "render", slow_render)
    with _serving(Limits(max_queue=2)) as client:
        song = _upload(client, EXAMPLES / "band.mid").json()
        a, b = (client.post("/api/render", json={"id": song["id"]}).json()["job"] for _ in "ab")
        _wait_for(client, a, ("running",))
        full = client.post("/api/render", json={"id": song["id"]})
        assert full.status_code == 429 and full.headers["retry-after"] == "30"
        assert full.json()["error"] == "2 renders are waiting: try again later"
        assert client.get(f"/api/jobs/{b}").json()["position"] == 1
        assert client.post(f"/api/jobs/{b}/cancel").json()["state"] == "cancelled"  # waiting
        start = time.monotonic()
        client.post(f"/api/jobs/{a}/cancel")  # running: stops at its next segment
        assert _wait_for(client, a, ("cancelled",), 2.0)["files"] == []
        assert time.monotonic() - start < 1.0
        assert client.post("/api/render", json={"id": song["id"]}).status_code == 200  # room
        assert client.post("/api/jobs/" + "0" * 32 + "/cancel").status_code == 404
        start = time.monotonic()
    assert time.monotonic() - start < 2.0  # shutdown stops the running render too


def test_slow_parse_does_not_hold_up_the_page(client, monkeypatch):
    real = S.read_midi

    def slow_read(source, **kwargs):  # two seconds of pure Python, as mido's slow path is
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            pass
        return real(source, **kwargs)

    monkeypatch.setattr(S, "read_midi", slow_read)
    done = {}
    upload = threading.Thread(target=lambda: done.update(r=_upload(client, EXAMPLES / "band.mid")))
    upload.start()
    time.sleep(0.3)
    start = time.perf_counter()
    assert client.get("/").status_code == 200
    latency = time.perf_counter() - start
    assert upload.is_alive() and latency < 1.0, latency  # was: every request waited the parse
    upload.join()
    assert done["r"].status_code == 200


def test_uploads_and_renders_are_evicted(tmp_path):
    song = EXAMPLES / "band.mid"
    size = len(song.read_bytes())
    with _serving(Limits(max_files=1)) as client:  # by count
        first, second = (_upload(client, song).json()["id"] for _ in "ab")
        assert client.post("/api/render", json={"id": first}).status_code == 404
        jobs = [client.post("/api/render", json={"id": second}).json()["job"] for _ in "ab"]
        for job in jobs:
            _wait_for(client, job, ("done",))
        assert client.get(f"/api/jobs/{jobs[0]}").status_code == 404  # the older result
        assert client.get(f"/api/jobs/{jobs[0]}/file/wav").status_code == 404
        assert client.get(f"/api/jobs/{jobs[1]}/file/wav").status_code == 200
        studio = client.app.state.studio
        assert sorted(p.name for p in studio.root.iterdir()) == sorted(
            [f"{second}.mid"] + [f"{jobs[1]}.{ext}" for ext in studio.jobs[jobs[1]].files]
        )
    with _serving(Limits(max_storage_mb=1.5 * size / 2**20)) as client:  # by bytes
        first, second = (_upload(client, song).json()["id"] for _ in "ab")
        assert set(client.app.state.studio.uploads) == {second}
    with _serving(Limits(keep_minutes=0.1 / 60)) as client:  # by age (0.1 s here)
        first = _upload(client, song).json()["id"]
        time.sleep(0.2)
        second = _upload(client, song).json()["id"]
        assert set(client.app.state.studio.uploads) == {second}


def test_page_has_a_cancel_button(client):
    page = client.get("/").text
    assert '<button id="cancel"' in page and "/cancel'" in page


def _start_server(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int, Path]:
    """A real `midisynth serve` on 127.0.0.1 and a free port, its temporary folders in a folder
    of the test's own; returns (process, port, that folder) once it accepts connections."""
    port, tmp = _free_port(), tmp_path / "tmp"
    tmp.mkdir()
    cmd = [sys.executable, "-m", "midisynth", "serve", "--port", str(port), "-m", "tiny-random"]
    server = subprocess.Popen(
        [*cmd, *args],
        env={**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port, tmp
        except OSError:
            assert server.poll() is None, server.stdout.read().decode()
            time.sleep(0.1)
    server.kill()
    raise AssertionError("the server did not start")


def test_one_ctrl_c_stops_the_server_mid_render_and_mid_upload(tmp_path):
    import httpx

    server, port, tmp = _start_server(tmp_path)
    stalled = None
    try:
        web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        song = _song(tmp_path / "long.mid", 540)  # 9 minutes: under the 10 min default limit
        upload = web.post("/api/upload", content=song.read_bytes(), headers={"x-filename": "l.mid"})
        job = web.post("/api/render", json={"id": upload.json()["id"]}).json()["job"]
        while web.get(f"/api/jobs/{job}").json()["state"] == "queued":
            time.sleep(0.05)
        # An upload stalled mid-body: the page goes on serving others meanwhile.
        stalled = socket.create_connection(("127.0.0.1", port))
        head = f"POST /api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 50000\r\n"
        stalled.sendall(head.encode() + b"\r\nMThd\x00\x00")
        time.sleep(0.2)
        start = time.monotonic()
        assert web.get("/").status_code == 200
        assert time.monotonic() - start < 1.0
        assert web.get(f"/api/jobs/{job}").json()["state"] == "running"
        assert [p.name[:16] for p in tmp.iterdir()] == ["midisynth-serve-"]
        start = time.monotonic()
        server.send_signal(signal.SIGINT)
        code = server.wait(timeout=10)  # was: kept running; a second Ctrl-C left the folder
        elapsed = time.monotonic() - start
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    output = server.stdout.read().decode()
    assert code == 0 and elapsed < 10, output  # not SIGABRT (-6) in torch's teardown
    assert "Traceback" not in output and "terminate called" not in output, output
    assert output.strip().endswith("midisynth page stopped"), output
    assert not list(tmp.glob("midisynth-serve-*"))  # uploads and renders removed
    stalled.settimeout(1)
    assert b" 503 " in stalled.recv(200)  # the stalled upload is told, not dropped


def test_a_pedal_held_for_two_hours_is_over_the_page_limit(client):
    # 46 bytes: the sustain pedal down from the start, up at 2 h (a correct 7,202 s render).
    two_hours = bytes([0x83, 0xA5, 0xF0, 0x00])  # a delta of 2 h: 6,912,000 ticks at 480/quarter
    events = bytes.fromhex("00b0407f00903c648360803c40") + two_hours + bytes.fromhex("b04000")
    r = client.post("/api/upload", content=_smf(events + b"\x00\xff\x2f\x00", 480))
    assert r.status_code == 400
    assert r.json()["error"].endswith("longer than the 10 min limit (--max-duration)")
    assert "would last 2 h" in r.json()["error"]
