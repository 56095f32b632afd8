"""End to end: the real `byakugan ui` server on a free localhost port, driven in headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("browser test: Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def ui_server(digit_gallery, tmp_path):
    gallery = shutil.copytree(digit_gallery, tmp_path / "g")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "ui", "--gallery", str(gallery), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not start: {proc.stdout.read()[-2000:]}")
        time.sleep(0.5)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    # Stopping `byakugan ui` stops the server too (no orphaned Streamlit left on the port).
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)


def test_upload_in_chromium_shows_the_top_match(browser, ui_server, digits, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(ui_server)
    page.get_by_text("Search by image").wait_for(timeout=180_000)  # first run loads the model
    page.locator("input[type=file]").set_input_files(str(digits["3"][0]))  # an enrolled image finds itself
    verdict = page.get_by_text("Detection 1:")
    verdict.wait_for(timeout=120_000)
    assert verdict.inner_text().strip() == "Detection 1: 3"
    page.get_by_text("1.000 · reference").first.wait_for(timeout=30_000)
    shot = tmp_path / "search.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
