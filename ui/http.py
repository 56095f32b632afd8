"""HTTP API over a gallery (search, enrol, delete) or an exported bundle (search only).

    app = create_app("my-gallery", token="s3cret")   # then: uvicorn.run(app)
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal, Optional, Union

from fastapi import Body, Depends, FastAPI, File, Form, HTTPException, Path as PathParam, Query, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.images import load_image
from byakugan.index.errors import GalleryGoneError, NotInGalleryError, ReadOnlyGalleryError, StoreError
from byakugan.index.gallery import Gallery
from byakugan.index.labels import MAX_LABEL_LEN, check_label_in, find, shown
from byakugan.index.ranking import Recognition
from byakugan.index.service import GalleryService
from byakugan.index.tracker import TrackerSettings
from byakugan.ui.guards import BearerFirst, BodyLimit, FormOnly, pixel_budget
from byakugan.ui.http_checks import json_body, query_checked, query_error
from byakugan.ui.http_watch import follow

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_STREAMS = 8
# A name's 100 characters are counted once it is NFC (check_label): typed as e + accent it may be longer.
NAME_CHARS = 4 * MAX_LABEL_LEN
WATCH_IDLE_SECONDS = 300.0  # a /watch stream that sends nothing this long is closed: it holds one of max_streams


class _GalleryService(GalleryService):
    writable = True  # it takes edits (routes for them are made); whether its folder does now: can_write()

    def can_write(self) -> bool:
        """Whether an edit could write now: the folder, or before the first save the nearest folder above it."""
        p = self.path.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.access(p, os.W_OK)


class _BundleService:
    writable = False

    def can_write(self) -> bool:
        return False

    def __init__(self, path: Path) -> None:
        from byakugan.index import bundle

        self.bundle = bundle.load(path)

    def search(self, img: Image.Image, k: int, threshold: Optional[float]) -> list[Recognition]:
        return self.bundle.recognize(img, k=k, threshold=threshold)

    def labels(self) -> dict[str, int]:
        return self.bundle.labels()

    def sequences(self):
        return list(self.bundle.gallery.sequences)

    def tracker(self, settings=None):
        return self.bundle.tracker(settings)

    def version(self) -> None:
        return None  # a bundle never changes


def create_app(source: Union[str, Path], token: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES,
               max_streams: int = DEFAULT_MAX_STREAMS) -> FastAPI:
    """source: a gallery folder (search, enrol, delete) or a bundle directory/.zip/.tar.gz (search).
    max_streams: /watch connections open at once (each holds a detector: a MediaPipe graph for hands)."""
    source = Path(source)
    service = _GalleryService(source) if Gallery.exists(source) else _BundleService(source)
    # The schema and its docs page are served below, behind the token like everything but /healthz.
    app = FastAPI(title="byakugan", version="1", docs_url=None, redoc_url=None, openapi_url=None,
                  description="Search enrolled anime characters and hand gestures by image.")
    app.add_middleware(FormOnly, fields={"/search": "image", **({"/enroll": "images"} if service.writable else {})})
    app.add_middleware(BodyLimit, max_bytes=max_bytes)
    app.add_middleware(BearerFirst, token=token)  # added last, so it runs first
    bearer = HTTPBearer(auto_error=False)
    streams = [0]  # /watch connections open now

    def authorised(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token and (creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)  # also Starlette's own 404 and 405
    async def http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found" and request.url.path == "/watch":  # there, as a WebSocket
            return JSONResponse({"error": f"{request.method} /watch: takes a WebSocket (ws://…/watch), not an HTTP request"},
                                status_code=426, headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        if exc.status_code == 404 and detail == "Not Found":  # no route matched (ours name what is missing)
            routes = sorted({f"{m} {r.path}" for r in app.routes if getattr(r, "include_in_schema", False)
                             for m in getattr(r, "methods", ()) if m != "HEAD"} | {"WS /watch"})
            detail = f"{request.method} {shown(request.url.path)}: no such route; the routes are {', '.join(routes)}"
        headers = exc.headers
        if exc.status_code == 405 and detail == "Method Not Allowed":  # every route of the path, not the first one's
            allowed = sorted({m for r in app.routes if getattr(r, "path_regex", None) and getattr(r, "name", "") != "read_only"
                              and r.path_regex.match(request.scope["path"]) for m in getattr(r, "methods", None) or ()})
            detail = f"{request.method} {shown(request.url.path)}: method not allowed; " + \
                (f"it takes {', '.join(allowed)}" if allowed else "an exported bundle is read-only, and this path edits")
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        elif exc.status_code == 400:
            detail = _unparsed_body(detail, exc.__cause__ or exc.__context__)
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the gallery is unchanged"}, status_code=500)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(authorised)])
    def openapi() -> dict:
        return app.openapi()

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(authorised)])
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="byakugan")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = "; ".join(_validation_error(e) for e in exc.errors())
        return JSONResponse({"error": errors}, status_code=422)

    @app.exception_handler(ByakuganError)
    async def bad_input(request: Request, exc: ByakuganError):
        # The server's own gallery gone from under it is not the request's fault: 503, /healthz too.
        # One whose folder cannot be written refuses an edit that is itself sound: 409, not 400.
        code = 503 if isinstance(exc, (GalleryGoneError, StoreError)) else 404 if isinstance(exc, NotInGalleryError) \
            else 409 if isinstance(exc, ReadOnlyGalleryError) else 400
        return JSONResponse({"error": str(exc)}, status_code=code)

    async def read(upload: UploadFile) -> bytes:
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"{upload.filename}: over the limit of {max_bytes} bytes")
        return data

    @app.get("/healthz")
    def healthz() -> dict:
        labels = service.labels()
        return {"status": "ok", "labels": len(labels), "references": sum(labels.values()), "writable": service.can_write()}

    # HEAD too (what some load balancers ask), out of the schema: one route for both gave two operations one id
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)

    @app.get("/labels", dependencies=[Depends(authorised), Depends(query_checked)])
    def labels() -> dict:
        return {"labels": service.labels()}

    @app.post("/search", dependencies=[Depends(authorised), Depends(query_checked)])
    async def search(request: Request, image: UploadFile = File(...), k: int = Query(5, ge=1, le=100),
                     # as the CLI's --threshold: a score adapted to a gallery's classes reaches past 1
                     threshold: Optional[float] = Query(None, ge=-3, le=3, allow_inf_nan=False)) -> dict:
        """One result per detection: box, match (label or "unknown"), top-k hits and labels."""
        sent = len((await request.form()).getlist("image"))  # the form FastAPI already parsed
        if sent > 1:
            raise HTTPException(422, f"image: {sent} files sent; /search takes one picture a request")
        data, name = await read(image), image.filename or "upload"
        # Decoding, detecting and embedding off the event loop: other requests go on meanwhile.
        found = await run_in_threadpool(lambda: service.search(load_image(data, name=name), k, threshold))
        return {"image": image.filename, "detections": [r.to_dict() for r in found]}

    @app.get("/sequences", dependencies=[Depends(authorised), Depends(query_checked)])
    def sequences() -> dict:
        seqs, labels = service.sequences(), service.labels()
        # Steps whose label is not enrolled (removed or renamed since) can never fire: said, as `sequence list` does.
        return {"sequences": {q.name: list(q.steps) for q in seqs},
                "missing": {q.name: gone for q in seqs if (gone := q.missing(labels))}}

    async def let_in(ws: WebSocket, token_param: Optional[str]) -> bool:
        """Whether an accepted WebSocket brought the token (closed with the reason if not). Browsers cannot
        set headers on one: it may come as ?token=."""
        header = ws.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else token_param
        if token and (given is None or not secrets.compare_digest(given.encode(), token.encode())):
            await ws.close(code=1008, reason="missing or wrong bearer token")
            return False
        return True

    @app.websocket("/watch")
    async def watch(ws: WebSocket, embed_every: str = str(TrackerSettings().embed_every), token_param: Optional[str] = Query(None, alias="token")):
        """A stream of frames: send each as a binary message (JPEG or PNG), optionally after a text
        message {"t": seconds} giving its time (default: seconds since the connection opened).
        Each frame is answered by its JSON ({"t", "frame", "tracks": [...]}, as `byakugan watch
        --json`), then one JSON per sequence event; a bad frame by {"error": ...}, and the stream
        goes on. Browsers cannot set headers on a WebSocket: the token may come as ?token=."""
        await ws.accept()  # first, so a refusal comes as a close code with its reason, not a bare HTTP 403
        if not await let_in(ws, token_param):
            return
        if repeated := query_error(ws.query_params, ("embed_every", "token"), "WS /watch"):
            await ws.send_json({"error": repeated})
            await ws.close(code=1008, reason=repeated[:120])
            return
        if streams[0] >= max_streams:
            await ws.send_json({"error": f"{max_streams} streams are open, this server's limit (--max-streams); try again later"})
            await ws.close(code=1013, reason="too many streams; try again later")
            return
        streams[0] += 1  # the event loop's own thread: no lock needed
        try:
            await follow(ws, service, embed_every, max_bytes, WATCH_IDLE_SECONDS)
        finally:
            streams[0] -= 1

    # Starlette answers a WebSocket to any other path with a bare HTTP 403 before accepting it, which
    # reads as a wrong token; this one accepts it to close with a reason naming the route there is.
    @app.websocket("/{path:path}")
    async def no_such_stream(ws: WebSocket):
        await ws.accept()
        if not await let_in(ws, ws.query_params.get("token")):
            return
        error = f"WS {shown(ws.url.path)}: no such route; the WebSocket route is /watch"
        await ws.send_json({"error": error})
        await ws.close(code=1008, reason="no such route; the WebSocket route is /watch")

    if service.writable:
        @app.put("/sequences/{name:path}", dependencies=[Depends(authorised), Depends(json_body), Depends(query_checked)])
        def put_sequence(name: str = PathParam(..., min_length=1, max_length=NAME_CHARS),
                         steps: list[str] = Body(..., embed=True, min_length=1, max_length=64)) -> dict:
            """Add or replace a named sequence of enrolled labels (events for /watch)."""
            seq = service.add_sequence(name, steps, replace=True)
            return {"name": seq.name, "steps": list(seq.steps)}

        @app.delete("/sequences/{name:path}", dependencies=[Depends(authorised), Depends(query_checked)])
        def delete_sequence(name: str = PathParam(..., min_length=1, max_length=NAME_CHARS)) -> dict:
            if find(name, {q.name for q in service.sequences()}) is None:
                raise HTTPException(404, f"sequence {shown(name)}: not in the gallery")
            return {"name": name, "steps": list(service.remove_sequence(name).steps)}

    if service.writable:
        @app.post("/enroll", dependencies=[Depends(authorised), Depends(query_checked)])
        async def enroll(request: Request, label: str = Form(..., min_length=1, max_length=NAME_CHARS),
                         images: list[UploadFile] = File(...), fallback: Literal["none", "whole"] = Form("none")) -> dict:
            if (sent := len((await request.form()).getlist("label"))) > 1:  # else the last would win unsaid
                raise HTTPException(422, f"label: {sent} sent; /enroll takes one label a request")
            label = check_label_in(label, service.labels())
            crops, held = [], 0
            for f in images:  # one decoded upload at a time, off the event loop: only the crops are kept
                data, name = await read(f), f.filename or "upload"
                found = await run_in_threadpool(lambda: service.crops([(name, load_image(data, name=name))],
                                                                          fallback=None if fallback == "none" else fallback))
                held = pixel_budget(held, sum(c.image.width * c.image.height for c in found), name)
                crops += found
            # Waiting for the gallery's lock (another process may be editing it) holds a worker thread, not the server.
            ids, said = await run_in_threadpool(service.enroll_checked, label, crops)
            # What the CLI and the page warn of (near-duplicates, closer to another class, blank crops)
            return {"label": label, "ids": ids, "labels": service.labels(), "warnings": said}

        @app.delete("/labels/{label:path}", dependencies=[Depends(authorised), Depends(query_checked)])  # a label may hold "/"
        def delete_label(label: str = PathParam(..., min_length=1, max_length=NAME_CHARS)) -> dict:
            if find(label, service.labels()) is None:  # any spelling it was enrolled with
                raise HTTPException(404, f"label {shown(label)}: not in the gallery")
            return {"label": label, "removed": len(service.remove(label).sources)}

    else:
        def read_only() -> None:
            raise HTTPException(405, f"{source}: an exported bundle is read-only; serve its gallery folder to edit", {"Allow": ""})

        for path, methods in (("/enroll", ["POST"]), ("/labels/{label:path}", ["DELETE"]),
                              ("/sequences/{name:path}", ["PUT", "DELETE"])):
            app.add_api_route(path, read_only, methods=methods, include_in_schema=False, dependencies=[Depends(authorised)])
    return app


def _unparsed_body(detail: str, cause: Optional[BaseException]) -> str:
    """The web framework's 400 for a body it could not parse, as a line naming the body and why."""
    if isinstance(cause, MultiPartException):  # a broken or over-full form
        return f"body: not readable as multipart/form-data ({detail.rstrip('.')})"
    if detail != "There was an error parsing the body":  # one of ours: it names its thing already
        return detail
    why = "nested too deeply" if isinstance(cause, RecursionError) else "not UTF-8" \
        if isinstance(cause, UnicodeDecodeError) else str(cause).split(";")[0][:120] or type(cause).__name__
    return f"body: could not be parsed ({why})"


def _validation_error(e: dict) -> str:
    """One of the web framework's validation errors as a line: where, and what the rule is."""
    where = ".".join(map(str, e["loc"]))
    if e["type"] == "json_invalid":  # its loc ends with the character at which the JSON broke
        return f"body: not valid JSON ({e.get('ctx', {}).get('error', 'decode error')} at character {e['loc'][-1]})"
    if e["type"] == "missing":  # a form field sent empty is missing to the framework too
        return f"{where}: required, and not empty"
    if "Expected UploadFile" in e["msg"]:  # a text field, or a file part without a filename, in its place
        return f"{where}: expected a file (a form part with a filename), got a text field"
    return f"{where}: {e['msg']}"
