"""MediaPipe's start-up notes kept off the terminal: its compiled code (glog, TensorFlow Lite) writes
them straight to file descriptor 2, where redirecting Python's sys.stderr does not reach, and they
read like failures ("WARNING: All log messages before absl::InitializeLog() ...") on every command
that crops hands. Everything else written meanwhile is passed on, in order, once the window closes."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
from typing import Iterator, Sequence

# Each is a whole kind of line MediaPipe 0.10.21 prints while its hand graph starts and first runs.
NATIVE_NOISE = (
    "Created TensorFlow Lite XNNPACK delegate for CPU",
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "inference_feedback_manager.cc",
    "landmark_projection_calculator.cc",
    "gl_context.cc",  # builds with GPU support say they found none
)
# A process has one file descriptor 2: two threads swapping it at once would leave it pointing at
# the other's (deleted) file. Re-entrant, so that a window opened inside another one is harmless.
_FD2 = threading.RLock()


@contextlib.contextmanager
def native_stderr_filtered(noise: Sequence[str] = NATIVE_NOISE) -> Iterator[None]:
    """Holds what is written to file descriptor 2 in a temporary file (a pipe could fill and block
    the writer) and writes it out afterwards, to the same descriptor, without the lines that contain
    any of `noise`. Where no temporary file can be made, nothing is held back."""
    with _FD2:
        try:
            held = tempfile.TemporaryFile()
        except OSError:
            yield
            return
        with held:
            _flush()
            saved = os.dup(2)
            try:
                os.dup2(held.fileno(), 2)
                yield
            finally:
                _flush()
                os.dup2(saved, 2)
                try:
                    held.seek(0)
                    rest = [line for line in held.read().decode("utf-8", "replace").splitlines(True)
                            if not any(n in line for n in noise)]
                    data = "".join(rest).encode("utf-8", "replace")
                    while data:  # to the descriptor itself: sys.stderr may be None, closed or elsewhere
                        data = data[os.write(saved, data):]
                except OSError:
                    pass  # what was held is lost, not the caller's own error
                finally:
                    os.close(saved)


def _flush() -> None:
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        sys.stderr.flush()
