"""MediaPipe's start-up notes, written by its compiled code straight to file descriptor 2, are kept
off the terminal; anything else written meanwhile still reaches it."""

import subprocess
import sys

import pytest

FILTER = """
import os, sys
from byakugan.embedder.detection.quiet import native_stderr_filtered
with native_stderr_filtered():
    os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    os.write(2, b"a real complaint\\n")
    sys.stderr.write("from Python\\n")
    with native_stderr_filtered():  # a window inside another one
        os.write(2, b"W0000 inference_feedback_manager.cc:114] Feedback manager ...\\n")
        os.write(2, b"inner complaint\\n")
os.write(2, b"after\\n")
"""


def test_only_the_known_notes_are_dropped_and_the_rest_comes_out_in_order():
    r = subprocess.run([sys.executable, "-c", FILTER], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["a real complaint", "from Python", "inner complaint", "after"]


CROP = """
import sys
from PIL import Image
from byakugan.embedder.detection import create_detector
detect = create_detector("hand")
print(len(detect(Image.open(sys.argv[1]))))
"""


def test_cropping_hands_prints_nothing_but_its_answer(datasets):
    pytest.importorskip("mediapipe", reason="the hand detector's MediaPipe is not installed")
    image = sorted((datasets / "hand-fingers" / "2-hand").glob("*.jpg"))[0]
    r = subprocess.run([sys.executable, "-c", CROP, str(image)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    assert r.stderr == "", r.stderr  # "All log messages before absl::InitializeLog() ..." and the rest, before
