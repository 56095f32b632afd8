"""HTTP API over a gallery (search, enrol, delete) or an exported bundle (search only).

    app = create_app("my-gallery", token="s3cret")   # then: uvicorn.run(app)
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Optional, Union

from fastapi import (
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
)
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image

from byakugan.embedder.errors import ByakuganError
from byakugan.embedder.images import load_image
from byakugan.index.gallery import Gallery
from byakugan.index.labels import check_label
from byakugan.index.ranking import Recognition
from byakugan.index.service import GalleryService

DEFAULT_MAX_BYTES = 10 * 1024 * 1024


class _GalleryService(GalleryService):
    writable = True


class _BundleService:
    writable = False

    def __init__(self, path: Path) -> None:
        from byakugan.index import bundle

        self.bundle = bundle.load(path)

    def search(self, img: Image.Image, k: int, threshold: Optional[float]) -> list[Recognition]:
        return self.bundle.recognize(img, k=k, threshold=threshold)

    def labels(self) -> dict[str, int]:
        return self.bundle.labels()


def create_app(source: Union[str, Path], token: Optional[str] = None, max_bytes: int = DEFAULT_MAX_BYTES) -> FastAPI:
    """source: a gallery folder (search, enrol, delete) or a bundle directory/.zip/.tar.gz (search)."""
    source = Path(source)
    service = _GalleryService(source) if Gallery.exists(source) else _BundleService(source)
    app = FastAPI(title="byakugan", version="1",
                  description="Search enrolled anime characters and hand gestures by image.")
    bearer = HTTPBearer(auto_error=False)

    def authorised(creds: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token and (creds is None or not secrets.compare_digest(creds.credentials.encode(), token.encode())):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def limit_size(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes):
            return JSONResponse({"error": f"request body over the limit of {max_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": errors}, status_code=422)

    @app.exception_handler(ByakuganError)
    async def bad_input(request: Request, exc: ByakuganError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    async def read(upload: UploadFile) -> Image.Image:
        data = await upload.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, f"{upload.filename}: over the limit of {max_bytes} bytes")
        return load_image(data, name=upload.filename or "upload")

    @app.get("/healthz")
    def healthz() -> dict:
        labels = service.labels()
        return {"status": "ok", "labels": len(labels), "references": sum(labels.values()), "writable": service.writable}

    @app.get("/labels", dependencies=[Depends(authorised)])
    def labels() -> dict:
        return {"labels": service.labels()}

    @app.post("/search", dependencies=[Depends(authorised)])
    async def search(image: UploadFile = File(...), k: int = Query(5, ge=1, le=100),
                     threshold: Optional[float] = Query(None, ge=-1, le=1)) -> dict:
        """One result per detection: box, match (label or "unknown"), top-k hits and labels."""
        img = await read(image)
        return {"image": image.filename, "detections": [r.to_dict() for r in service.search(img, k, threshold)]}

    if service.writable:
        @app.post("/enroll", dependencies=[Depends(authorised)])
        async def enroll(label: str = Form(..., min_length=1, max_length=100), images: list[UploadFile] = File(...)) -> dict:
            label = check_label(label)
            names = [f.filename or "upload" for f in images]
            crops = service.crops([(n, await read(f)) for n, f in zip(names, images)], fallback=None)
            ids = service.enroll(label, crops)
            return {"label": label, "ids": ids, "labels": service.labels()}

        @app.delete("/labels/{label}", dependencies=[Depends(authorised)])
        def delete_label(label: str = PathParam(..., min_length=1, max_length=100)) -> dict:
            if label not in service.labels():
                raise HTTPException(404, f"label {label!r}: not in the gallery")
            return {"label": label, "removed": service.remove(label)}

    return app
