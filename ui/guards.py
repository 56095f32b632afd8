"""What the HTTP server checks before a request's body is read or kept: its size, its token, the
form it comes in, and the pixels an enrolment holds in memory at once."""

from __future__ import annotations

import secrets
from typing import Optional

from fastapi import HTTPException
from fastapi.responses import JSONResponse

# Crops an enrolment keeps until it saves: with no detector each is the whole decoded picture, and a
# few KB of PNG can decode to 36 megapixels (108 MB), so bytes alone do not bound the memory.
MAX_REQUEST_PIXELS = 120_000_000
OPEN_PATHS = ("/healthz",)  # answered without the token: a load balancer's health check


def pixel_budget(held: int, more: int, name: str) -> int:
    """`held` pixels of crops kept so far plus `more` from `name`; 413 past MAX_REQUEST_PIXELS."""
    if held + more > MAX_REQUEST_PIXELS:
        raise HTTPException(413, f"{name}: the request's crops pass {MAX_REQUEST_PIXELS // 1_000_000} megapixels "
                                 "held at once; send fewer or smaller images per request")
    return held + more


class BodyLimit:
    """Refuses a request body over max_bytes with 413, counting the bytes as they arrive, so a
    chunked upload (no Content-Length) is held to the limit too."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = f"request body over the limit of {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await JSONResponse({"error": too_large}, status_code=413)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, too_large)  # FastAPI passes an HTTPException through body parsing
            return message

        await self.app(scope, counted, send)


class BearerFirst:
    """Refuses a request without the bearer token with 401 before its body is read (an upload is not
    parsed or stored for a client that may not send it). WebSockets check it themselves (/watch)."""

    def __init__(self, app, token: Optional[str]) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.token and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            scheme, _, credentials = given.partition(b" ")
            if scheme.lower() != b"bearer" or not secrets.compare_digest(credentials.strip(), self.token.encode()):
                return await JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
        await self.app(scope, receive, send)


class FormOnly:
    """Refuses, in one line naming the route and its file field, a body a form route cannot read: not
    multipart/form-data (JSON, a bare image) with 415, a multipart one without its boundary with 400.
    The web framework would answer "body.image: Field required" or "Missing boundary in multipart."."""

    def __init__(self, app, fields: dict[str, str]) -> None:
        self.app, self.fields = app, fields  # route path -> its file field

    async def __call__(self, scope, receive, send):
        field = self.fields.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if field is not None:
            given = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
            kind, _, params = given.partition(";")
            error = None
            if kind.strip().lower() != "multipart/form-data":
                error = 415, f"Content-Type {given!r}" if given else "Content-Type missing"
            elif "boundary=" not in params.lower():
                error = 400, "Content-Type multipart/form-data without a boundary"
            if error is not None:
                code, what = error
                return await JSONResponse({"error": f"{what}: {scope['path']} takes multipart/form-data, "
                                                    f"its pictures in file field {field!r}"},
                                          status_code=code)(scope, receive, send)
        await self.app(scope, receive, send)
