"""Checks of a request the web framework lets through unsaid: a query parameter given twice or
not taken by its route, a JSON body of another type or with a key given twice (ui.http)."""

from __future__ import annotations

import json
from typing import Optional

from fastapi import HTTPException, Request

from byakugan.index.errors import shown


def query_error(params, names, where: str) -> Optional[str]:
    """The error for a query parameter given twice (?k=1&k=2: the framework would use one of them,
    unsaid) or one the route does not take (?kk=3, a typo the framework would ignore), or None."""
    if unknown := next((name for name in params.keys() if name not in names), None):
        return (f"query parameter {shown(unknown)}: not one {where} takes; "
                + (f"it takes {', '.join(names)}" if names else "it takes none"))
    return next((f"query.{name}: given {n} times; give it once" for name in names
                 if (n := len(params.getlist(name))) > 1), None)


def query_checked(request: Request) -> None:
    """A dependency: 422 for a query parameter the route does not take, or one given twice."""
    route = request.scope["route"]
    if error := query_error(request.query_params, [p.alias for p in route.dependant.query_params],
                            f"{request.method} {route.path_format}"):
        raise HTTPException(422, error)


async def json_body(request: Request) -> None:
    """A dependency: 415 for a body the framework does not read as JSON (only application/json and
    application/*+json), which it would answer with "body.steps: required"; 422 for a key given
    twice in one object, of which the framework would keep the last, unsaid."""
    given = request.headers.get("content-type", "")
    kind = given.partition(";")[0].strip().lower()
    if not (kind == "application/json" or kind.startswith("application/") and kind.endswith("+json")):
        what = f"Content-Type {given!r}" if given else "Content-Type missing"
        raise HTTPException(415, f"{what}: {request.method} {shown(request.url.path)} takes application/json, "
                                 '{"steps": [label, ...]}')
    try:  # the framework parsed it already; read again, keys counted
        json.loads(await request.body(), object_pairs_hook=once_each)
    except _Repeated as exc:
        raise HTTPException(422, f"body: key {shown(exc.args[0])} given twice in one object; give it once") from None
    except (ValueError, RecursionError):  # an empty body, or one nested past what a deeper stack parses:
        return  # the framework's own answer stands ("body.steps: required", "nested too deeply")


class _Repeated(ValueError):
    pass


def once_each(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) < len(pairs):
        seen = set()
        raise _Repeated(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out
