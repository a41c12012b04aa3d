"""Screenshot of `midisynth serve` after rendering an example (for the README).

    python tools/page_screenshot.py docs/serve.png [--model NAME]

Needs the web and test extras (selenium) and Debian's chromium + chromium-driver.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--model", default="tiny-random")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "midisynth", "serve", "--port", str(port), "-m", args.model]
    )
    opts = webdriver.ChromeOptions()
    profile = tempfile.mkdtemp()
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--window-size=1000,1300",
    ):
        opts.add_argument(flag)
    opts.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(
        options=opts, service=webdriver.ChromeService(shutil.which("chromedriver"))
    )
    try:
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        driver.get(f"http://127.0.0.1:{port}/")
        driver.find_element(By.ID, "file").send_keys(str(REPO / "examples" / "band.mid"))
        wait = WebDriverWait(driver, 300)
        wait.until(lambda d: d.find_element(By.ID, "song").is_displayed())
        field = driver.find_element(By.CSS_SELECTOR, 'input[data-track="1"]')
        field.clear()
        field.send_keys("0 Acoustic Grand Piano")
        driver.find_element(By.ID, "render").click()
        wait.until(lambda d: d.find_element(By.ID, "result").is_displayed())
        time.sleep(1.0)  # the picture loads
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
