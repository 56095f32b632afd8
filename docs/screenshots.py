"""Regenerate docs/*.png from the real-browser story test: `byakugan ui` on a new hand gallery in
headless Chromium (enrol three sign-digits classes, search, edit, export), photographed on the way,
and the Live page streaming Chromium's fake camera.

    .venv/bin/python docs/screenshots.py     (needs Debian's chromium and ../shared)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    env = dict(os.environ, BYAKUGAN_SCREENSHOTS=str(ROOT / "docs"))
    tests = ["tests/test_ui_browser.py::test_whole_story_in_chromium",
             "tests/test_live_page.py::test_live_stream_in_chromium_labels_the_fake_camera"]
    subprocess.run([sys.executable, "-m", "pytest", "-q", *tests], cwd=ROOT, env=env, check=True)
    print("wrote", ", ".join(f"docs/{n}.png" for n in ("search", "enrol", "gallery", "export", "live")))


if __name__ == "__main__":
    main()
