"""Regenerate docs/*.png: start `byakugan ui` on a sign-digits gallery and photograph each page.

    .venv/bin/python docs/screenshots.py     (needs Debian's chromium and ../shared)
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT.parent / "shared" / "datasets" / "sign-digits"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main() -> None:
    rng = random.Random(0)
    files = {d.name: sorted(d.glob("*.jpg")) for d in sorted(DIGITS.iterdir())}
    for fs in files.values():
        rng.shuffle(fs)
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Path(tmp) / "gallery"
        for label in ("0", "1", "2", "3", "4"):
            subprocess.run([sys.executable, "-m", "byakugan.ui.cli", "enroll", str(gallery), label, *map(str, files[label][:5])],
                           check=True, stdout=subprocess.DEVNULL)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "byakugan.ui.cli", "ui", "--gallery", str(gallery), "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as p:
                b = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = b.new_page(viewport={"width": 1280, "height": 900})
                page.goto(url)
                page.get_by_text("Search by image").wait_for(timeout=180_000)
                page.locator("input[type=file]").set_input_files(str(files["3"][10]))
                page.get_by_text("Detection 1:").wait_for(timeout=120_000)
                time.sleep(1)
                page.screenshot(path=str(ROOT / "docs" / "search.png"), full_page=True)
                for name, marker in [("Enrol", "Enrol a character or gesture"), ("Gallery", "Unknown threshold"),
                                     ("Export", "Build the bundle")]:
                    page.get_by_text(name, exact=True).first.click()
                    page.get_by_text(marker).first.wait_for(timeout=60_000)
                    if name == "Enrol":
                        page.get_by_label("Label").fill("5")
                        page.get_by_label("Label").press("Enter")
                        page.locator("input[type=file]").set_input_files([str(f) for f in files["5"][:4]])
                        page.get_by_text("What will be enrolled").wait_for(timeout=60_000)
                    if name == "Gallery":
                        page.get_by_text("3 · 5 reference(s)").click()
                    time.sleep(1.5)
                    page.screenshot(path=str(ROOT / "docs" / f"{name.lower()}.png"), full_page=True)
                b.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    print("wrote", ", ".join(f"docs/{n}.png" for n in ("search", "enrol", "gallery", "export")))


if __name__ == "__main__":
    main()
