"""`facestream api`: the HTTP API (OpenAPI at /docs) over the gallery's Redis and the recognizer; its keys
are managed by `facestream api-key` (services/api/keys_cli.py)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from services.api.keys import DEFAULT_PREFIX as KEYS_PREFIX, KeyStore
from services.matcher.gallery_store import DEFAULT_PREFIX
from services.redis_access import UNREACHABLE, client_for, unreachable
from shared.config import BaseConfig, load, setting

AUDIT_MAXLEN = 1_000_000  # records kept in the audit stream (XADD MAXLEN ~): years of enrolments and erasures


@dataclass(frozen=True)
class ApiConfig(BaseConfig):
    """facestream api: the HTTP API over the gallery and the recognizer."""
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 in a container)")
    port: int = setting(8080, "port to listen on", ge=1, le=65535)
    model: str = setting("", "checkpoint (default models/facestream.pt, or FACESTREAM_MODEL)")
    gallery_prefix: str = setting(DEFAULT_PREFIX, "Redis key prefix of the gallery", flag="--prefix")
    keys_prefix: str = setting(KEYS_PREFIX, "Redis key prefix of the API's keys and audit records")
    max_upload_bytes: int = setting(20 * 1024 * 1024, "largest uploaded file", ge=1024, le=1 << 30)
    max_image_pixels: int = setting(3840 * 2160, "largest uploaded image, width x height, read from its header "
                                                 "before decoding (default 4K, as the detector)",
                                    ge=64 * 64, le=100_000_000)
    max_files: int = setting(20, "most files in one upload", ge=1, le=1000)
    cors_origin: list[str] = setting([], "an origin whose pages may call the API from a browser (repeatable; "
                                         "default none: CORS closed)", repeat=True)
    threads: int = setting(1, "torch CPU threads for recognition and enrollment", ge=0, le=256)


def serve(cfg: ApiConfig) -> int:
    import uvicorn

    from services.api.app import Limits, Models, create_app
    from services.matcher.gallery_store import GalleryStore

    r = client_for(cfg)
    gallery = GalleryStore(r, cfg.gallery_prefix)
    try:
        gallery.ping()
    except UNREACHABLE as e:
        print(f"facestream api: {unreachable(cfg.redis_url, e)}", file=sys.stderr)
        return 2

    def load_recognizer():
        import torch

        from shared.vision.api import Recognizer

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        return Recognizer.load(cfg.model or None, device="cpu", min_face_size=20)

    def audit(line: str) -> None:
        r.xadd(f"{cfg.keys_prefix}:audit", {"record": line}, maxlen=AUDIT_MAXLEN, approximate=True)

    app = create_app(KeyStore(r, cfg.keys_prefix), gallery, Models(load_recognizer, gallery),
                     Limits(cfg.max_upload_bytes, cfg.max_image_pixels, cfg.max_files), audit, tuple(cfg.cors_origin))
    print(f"facestream api: listening on http://{cfg.host}:{cfg.port} (OpenAPI at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level.lower(), server_header=False)
    return 0


def main(argv: list[str]) -> int:
    return serve(load(ApiConfig, argv, prog="facestream api"))
