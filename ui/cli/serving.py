"""Commands that hand a gallery to others: export (a bundle), serve (HTTP), ui (the Streamlit page)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from byakugan.embedder.errors import ByakuganError

from .common import detectors, printable

APP = Path(__file__).resolve().parent.parent / "app.py"


def cmd_export(a: argparse.Namespace) -> int:
    from byakugan.index.export import export
    from byakugan.index.gallery import Gallery
    from byakugan.index.pipeline import Pipeline

    g = Gallery.open(a.gallery)
    out = export(g, a.out, overwrite=a.overwrite, pipeline=Pipeline.for_gallery(g, a.model))
    print(printable(f"exported {a.gallery} to {out}"))
    return 0


def whole_in(text: str, low: int, high: int, rule: str) -> int:
    """An argparse value that must be a whole number from low to high (rule: how to say so)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a whole number") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value}: {rule}")
    return value


def port(text: str) -> int:
    """--port: a TCP port, 0 (any free one) to 65535."""
    return whole_in(text, 0, 65535, "a port is 0 to 65535")


def megabytes(text: str) -> float:
    """--max-upload-mb: more than 0 and at most 4096 (a body is held in memory while it is read)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number") from None
    if not 0 < value <= 4096:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 and at most 4096")
    return value


def upload_mb(text: str) -> int:
    """`ui --max-upload-mb`: Streamlit takes whole megabytes; 0 or less would refuse every upload."""
    return whole_in(text, 1, 4096, "must be 1 to 4096 (megabytes)")


def streams(text: str) -> int:
    """--max-streams: 1 to 1000 WebSocket streams at once."""
    return whole_in(text, 1, 1000, "must be 1 to 1000")


def cmd_serve(a: argparse.Namespace) -> int:
    import socket

    import uvicorn

    from ..http import create_app

    try:  # one line now, rather than uvicorn's log and exit status 3 once the model is loaded
        with socket.create_server((a.host, a.port), family=socket.AF_INET6 if ":" in a.host else socket.AF_INET):
            pass
    except OSError as exc:
        raise ByakuganError(f"--host {a.host} --port {a.port}: cannot listen there ({exc.strerror or exc})") from None
    app = create_app(a.source, token=a.token or os.environ.get("BYAKUGAN_TOKEN"), max_bytes=int(a.max_upload_mb * 2**20),
                     max_streams=a.max_streams)
    # uvicorn.Server, not uvicorn.run: run() swallows the KeyboardInterrupt that the signal uvicorn
    # raises again on shutdown (0.29 on) brings, and `kill` would exit 0 instead of 143 as every command does.
    uvicorn.Server(uvicorn.Config(app, host=a.host, port=a.port, log_level="info")).run()
    return 0


def cmd_ui(a: argparse.Namespace) -> int:
    env = dict(os.environ, BYAKUGAN_MAX_UPLOAD_MB=str(a.max_upload_mb))
    if a.gallery:
        env["BYAKUGAN_GALLERY"] = str(Path(a.gallery).resolve())
    if a.model:
        env["BYAKUGAN_MODEL"] = a.model
    if a.detector:
        env["BYAKUGAN_DETECTOR"] = a.detector
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(a.port),
           "--server.address", a.host, "--server.headless", "true", "--server.maxUploadSize", str(a.max_upload_mb),
           "--browser.gatherUsageStats", "false"]
    sys.stdout.flush()
    sys.stderr.flush()
    # Become the Streamlit server rather than wait on a child: a signal that stops `byakugan ui`
    # (Ctrl-C, a service manager's SIGTERM) then stops the server, instead of orphaning it.
    os.execve(sys.executable, cmd, env)
    return 0  # not reached


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="write a gallery as a bundle (directory, .zip or .tar.gz) for other services")
    s.add_argument("gallery", metavar="GALLERY")
    s.add_argument("out", metavar="OUT")
    s.add_argument("--model", help="check the gallery against this model (default: the gallery's own)")
    s.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="serve a gallery or a bundle over HTTP (FastAPI; docs at /docs)")
    s.add_argument("source", metavar="BUNDLE_OR_GALLERY")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port, default=8000)
    s.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (default: $BYAKUGAN_TOKEN, else none)")
    s.add_argument("--max-upload-mb", type=megabytes, default=10.0, help="largest request body accepted (default 10)")
    s.add_argument("--max-streams", type=streams, default=8,
                   help="/watch WebSocket streams open at once (default 8; each holds a detector of its own)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("ui", help="start the Streamlit page (search, enrol, manage, export)")
    s.add_argument("--gallery", help="gallery folder (default: byakugan/gallery in the user data directory)")
    s.add_argument("--model", help="model for a new gallery (default: the one for its detector; for detector none, "
                   "the anime model when most of the first images enrolled are anime faces; see `byakugan models`)")
    s.add_argument("--detector", choices=detectors(), help="detector for a new gallery (default none)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=port, default=8501)
    s.add_argument("--max-upload-mb", type=upload_mb, default=10,
                   help="largest image upload accepted, whole megabytes (default 10)")
    s.set_defaults(func=cmd_ui)
