"""The HTTP server's /watch stream once accepted: its tracker, renewed when the gallery is edited,
and each frame answered (see ui.http for the protocol)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Union

import anyio
from fastapi import WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.images import load_image
from byakugan.index.tracker import Renewed, TrackerSettings
from byakugan.ui.http_checks import once_each

MAX_EMBED_EVERY = 999_999  # six digits


async def follow(ws: WebSocket, service, embed_every: str, max_bytes: int, idle_seconds: float) -> None:
    """One /watch stream, once accepted: its tracker made, then each frame answered; its detector
    closed however it ends."""
    if not (embed_every.isascii() and embed_every.isdigit() and len(embed_every) <= 6 and int(embed_every) >= 1):
        error = f"embed_every {embed_every[:20]!r}: must be a whole number from 1 to {MAX_EMBED_EVERY}"
        await ws.send_json({"error": error})
        await ws.close(code=1008, reason=error[:120])
        return
    settings = TrackerSettings(embed_every=int(embed_every))
    stream = Renewed(service.version, lambda _: service.tracker(settings))  # follows gallery edits
    try:
        try:
            await run_in_threadpool(stream.ready)
        except ByakuganError as exc:
            await ws.send_json({"error": str(exc)})
            await ws.close(code=1008, reason=str(exc)[:120])
            return
        await answer(ws, stream, max_bytes, idle_seconds)
    except WebSocketDisconnect:
        return
    finally:  # shielded: a stream cancelled (its connection's task, the server stopping) still frees its detector
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(stream.close)


async def answer(ws: WebSocket, stream: Renewed, max_bytes: int, idle_seconds: float) -> None:
    """Each message of a stream answered, until it disconnects or stays idle."""
    start, when, last = time.monotonic(), None, -math.inf
    while True:
        try:
            message = await asyncio.wait_for(ws.receive(), idle_seconds)
        except asyncio.TimeoutError:
            await ws.send_json({"error": f"nothing received for {idle_seconds:g} s; closed to free the stream"})
            await ws.close(code=1000, reason="idle")
            return
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            when = frame_time(message["text"])
            if isinstance(when, float) and when < last:  # the tracker's gaps and holds run forwards
                when = f"t {when}: earlier than the last frame's ({last}); times must not go back"
            if isinstance(when, str):
                await ws.send_json({"error": when})
                when = None
            continue
        data = message.get("bytes") or b""
        if len(data) > max_bytes:
            await ws.send_json({"error": f"frame of {len(data)} bytes: over the limit of {max_bytes}"})
            continue
        t = when if when is not None else max(last, time.monotonic() - start)
        when = None
        try:  # decoding and tracking off the event loop, so other clients are not held up
            result = await run_in_threadpool(lambda: stream.update(load_image(data, name="frame"), t))
        except ByakuganError as exc:
            await ws.send_json({"error": str(exc)})
            continue
        except Exception as exc:  # one frame that breaks something must not end the stream
            await ws.send_json({"error": f"internal error ({type(exc).__name__}) on this frame; the stream goes on"})
            continue
        last = t  # a frame tracked: the next may not come before it
        await ws.send_json(result.to_dict())
        for event in result.events:
            await ws.send_json(event.to_dict())


def frame_time(text: str) -> Union[float, str]:
    """The t of a text message {"t": seconds}, or the error to send back."""
    try:
        if len(text) > 200:
            raise ValueError
        t = json.loads(text, object_pairs_hook=once_each)["t"]  # {"t": 1, "t": 2}: which was meant is not said
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < 1e12:  # NaN and inf fail too
            raise TypeError
        return float(t)
    except Exception:  # anything a client can type, including numbers too large to be a float
        return (f"text message {text[:40]!r}: expected {{\"t\": seconds}} (a number from 0, below 1e12) "
                "before a binary frame")
