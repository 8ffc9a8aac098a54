"""Where facestream finds its files: the repository, its models, its run folder, and the face data.

The data is never inside the repository (it holds faces): `$FACESTREAM_DATA`, else `../shared/data`
beside the checkout. Nothing here names a path of any one machine.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
RUN_DIR = REPO_ROOT / ".run"
CACHE_DIR = RUN_DIR / "cache"


def data_root() -> Path:
    """$FACESTREAM_DATA, else ../shared/data beside the repository."""
    env = os.environ.get("FACESTREAM_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


def default_model() -> Path:
    """$FACESTREAM_MODEL if set, else models/facestream.pt in the repository."""
    env = os.environ.get("FACESTREAM_MODEL")
    return Path(env) if env else MODELS_DIR / "facestream.pt"
