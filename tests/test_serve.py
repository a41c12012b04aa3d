"""`midisynth serve`: the API behind the page, its refusals, and the page in a real browser."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from midisynth.serve import Limits, create_app  # noqa: E402
from midisynth.weights import build_tiny_random  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


BASE = "http://127.0.0.1:8000"  # an allowed host (the test client's default, testserver, is not)


@pytest.fixture()
def client():
    app = create_app(build_tiny_random(), Limits(max_upload_mb=0.05))
    with TestClient(app, base_url=BASE) as c:
        yield c
    assert not app.state.studio.root.exists()  # nothing left behind on shutdown


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
