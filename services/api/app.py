"""The HTTP API's routes: people (list, enroll by upload, erase), recognize one image. Stateless: every
request reads Redis (the gallery, the keys), so that several instances can run behind a load balancer.

Every route under /api/v1 needs a key (`Authorization: Bearer fsk_...` or `X-API-Key`): 401 without a
valid one, 403 when its role is short of the route's. Keys travel in headers only, never in URLs, which
access logs print. Errors are JSON `{"detail": "<one line>"}`; enrollment refusals name each file.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from services.api.keys import ApiKey, KeyStore, allows
from services.api.uploads import UploadRefused, decode_upload, shown_filename
from services.gallery.names import InvalidName, check_name
from services.redis_access import UNREACHABLE


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 3840 * 2160
    max_files: int = 20


class Models:
    """The recognizer, loaded on first use (seconds), and the gallery index, rebuilt when the gallery's
    version moves: a request never pays for either twice."""

    def __init__(self, load: Callable[[], object], gallery):
        self._load, self.gallery = load, gallery
        self._rec = None
        self._index: tuple[int, object] | None = None
        self._lock = threading.Lock()

    def recognizer(self):
        with self._lock:
            if self._rec is None:
                self._rec = self._load()
            return self._rec

    def index(self):
        from services.matcher.index import GalleryIndex

        rec = self.recognizer()
        version = self.gallery.version()
        with self._lock:
            if self._index is None or self._index[0] != version:
                v, people, _ = self.gallery.load(rec.model.model_version)
                self._index = (version, GalleryIndex.build(people, v, rec.model.model_version))
            return self._index[1]


def create_app(keys: KeyStore, gallery, models: Models, limits: Limits = Limits(), audit=None,
               cors_origins: tuple[str, ...] = ()) -> FastAPI:
    app = FastAPI(title="facestream", version="1", description="People, recognition and events of facestream.")
    if cors_origins:  # closed unless origins are named
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])

    max_body = limits.max_upload_bytes * limits.max_files + 1024 * 1024

    @app.exception_handler(UNREACHABLE[0])
    @app.exception_handler(UNREACHABLE[1])
    async def redis_gone(request: Request, exc: Exception) -> JSONResponse:
        # the dependency is waited for by the caller's retry, not by a hung request; no URL in the reply
        return JSONResponse({"detail": "the gallery's Redis is unreachable: retry shortly"}, status_code=503,
                            headers={"Retry-After": "5"})

    @app.middleware("http")
    async def bounded_body(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None:
                return JSONResponse({"detail": "a request body needs a Content-Length"}, status_code=411)
            if not length.isdigit() or int(length) > max_body:
                return JSONResponse({"detail": f"request body over {max_body:,} bytes"}, status_code=413)
        return await call_next(request)

    def need(role: str):
        def check(request: Request) -> ApiKey:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            found = keys.check(key) if key else None
            if found is None:
                raise HTTPException(401, "a valid API key is needed (Authorization: Bearer fsk_...)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if not allows(found.role, role):
                raise HTTPException(403, f"key {found.id} is a {found.role}; this needs {role}")
            return found
        return check

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        gallery.ping()
        return {"ok": True}

    @app.get("/api/v1/people")
    def people(key: ApiKey = Depends(need("viewer"))) -> dict:
        found = gallery.people()
        return {"people": [{"name": p.name, "embeddings": p.embeddings, "model_version": p.model_version,
                            "updated": p.updated} for p in found], "count": len(found)}

    async def read_images(files: list[UploadFile]) -> list[tuple[str, bytes, object]]:
        if not files:
            raise HTTPException(422, "no file uploaded")
        if len(files) > limits.max_files:
            raise HTTPException(413, f"{len(files)} files, over the limit of {limits.max_files} a request")
        out = []
        for f in files:
            name = shown_filename(f.filename)
            data = await f.read(limits.max_upload_bytes + 1)
            try:
                out.append((name, data, decode_upload(name, data, limits.max_upload_bytes, limits.max_image_pixels)))
            except UploadRefused as e:
                out.append((name, data, e))
        return out

    @app.post("/api/v1/recognize")
    async def recognize(file: UploadFile = File(...), key: ApiKey = Depends(need("viewer"))) -> dict:
        ((name, _, rgb),) = await read_images([file])
        if isinstance(rgb, UploadRefused):
            raise HTTPException(422, str(rgb))
        from starlette.concurrency import run_in_threadpool

        def work() -> dict:
            rec, index = models.recognizer(), models.index()
            if rec.threshold is None:
                raise HTTPException(503, "the model has no calibrated threshold (facestream calibrate)")
            matches = rec.identify(rgb, index)
            return {"image": name, "model_version": rec.model.model_version, "threshold": rec.threshold,
                    "gallery_people": len(index),
                    "faces": [{"name": m.name, "best_match": m.best_match, "score": round(m.score, 4),
                               "box": [round(v, 1) for v in m.box], "prob": round(m.prob, 4)} for m in matches]}

        return await run_in_threadpool(work)

    @app.post("/api/v1/people/{name}/photos")
    async def enroll(name: str, files: list[UploadFile] = File(...), skip_bad: bool = False, replace: bool = False,
                     key: ApiKey = Depends(need("operator"))) -> JSONResponse:
        try:
            person = check_name(name)
        except InvalidName as e:
            raise HTTPException(422, str(e)) from None
        images = await read_images(files)
        from starlette.concurrency import run_in_threadpool
        from services.gallery.enroll import Accepted, Refused, embed_image

        def work() -> JSONResponse:
            rec = models.recognizer()
            results = [Refused(Path(n), rgb.reason) if isinstance(rgb, UploadRefused)
                       else embed_image(Path(n), data, rgb, rec.detector, rec.model)
                       for n, data, rgb in images]
            accepted = [r for r in results if isinstance(r, Accepted)]
            refused = [{"file": str(r.path), "reason": r.reason} for r in results if isinstance(r, Refused)]
            if (refused and not skip_bad) or not accepted:
                why = (f"{len(refused)} photo(s) refused: nothing enrolled (fix them, or pass skip_bad=true)"
                       if refused else "no usable photo")
                return JSONResponse({"detail": why, "refused": refused}, status_code=422)
            try:
                version = gallery.add(person, {a.embedding_id: a.embedding for a in accepted},
                                      rec.model.model_version, [f"upload:{a.path}" for a in accepted], replace=replace)
            except ValueError as e:  # enrolled with another model
                return JSONResponse({"detail": str(e), "refused": refused}, status_code=409)
            record(key, "enroll", person, {"embeddings": len(accepted)})
            return JSONResponse({"name": person, "enrolled": len(accepted), "refused": refused,
                                 "gallery_version": version}, status_code=201)

        return await run_in_threadpool(work)

    @app.delete("/api/v1/people/{name}")
    def erase(name: str, key: ApiKey = Depends(need("admin"))) -> dict:
        if not gallery.remove(name):
            raise HTTPException(404, "no such person")
        record(key, "erase", name, {})
        return {"erased": name}

    def record(key: ApiKey, action: str, subject: str, extra: dict) -> None:
        if audit is not None:
            audit(json.dumps({"ts": time.time(), "key_id": key.id, "key_label": key.label, "action": action,
                              "subject": subject, **extra}))

    return app
