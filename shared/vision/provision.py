"""`make models`: fetch the pinned face-api npm tarball, check it, convert its ResNet into a checkpoint.

    python -m shared.vision.provision [--force]

Downloads `@vladmandic/face-api` 1.7.15 from the npm registry over HTTPS (no Node.js), refuses it unless
its sha512 equals the integrity string pinned below (copied from the registry's `dist.integrity`), keeps
it under models/cache/, extracts only the two model files and writes models/faceapi_resnet128.pt. When
models/facestream.pt (the pipeline's default) does not exist yet, it becomes a copy of that checkpoint.
Run again, it does nothing in well under a second. The services never download anything.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import sys
import tarfile
import time
from pathlib import Path

from shared import paths
from shared.vision import checkpoint
from shared.vision.align import DLIB_150
from shared.vision.nets.faceapi_resnet import (EMBEDDING_DIM, EXPECTED_BYTES, INPUT_SIZE, INPUT_STD, MANIFEST_NAME,
                                               MEAN_RGB, WEIGHTS_NAME, load_tfjs_state_dict)

PACKAGE_VERSION = "1.7.15"
TARBALL_URL = f"https://registry.npmjs.org/@vladmandic/face-api/-/face-api-{PACKAGE_VERSION}.tgz"
# dist.integrity of https://registry.npmjs.org/@vladmandic/face-api/1.7.15
TARBALL_INTEGRITY = "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw=="

MODELS_DIR = paths.MODELS_DIR
CACHE_DIR = MODELS_DIR / "cache"
TARBALL = CACHE_DIR / f"face-api-{PACKAGE_VERSION}.tgz"
CONVERTED = MODELS_DIR / "faceapi_resnet128.pt"


def sri_sha512(path: Path) -> str:
    """The Subresource-Integrity string npm uses: 'sha512-' + base64 of the digest."""
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def download(url: str = TARBALL_URL, dest: Path = TARBALL, integrity: str = TARBALL_INTEGRITY) -> Path:
    """Fetch the tarball into `dest` unless a verified copy is there; never keep an unverified file."""
    if dest.exists() and sri_sha512(dest) == integrity:
        return dest
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    print(f"downloading {url}", file=sys.stderr)
    with requests.get(url, stream=True, timeout=60) as r:
        r.raise_for_status()
        with open(part, "wb") as f:
            for chunk in r.iter_content(1 << 20):
                f.write(chunk)
    got = sri_sha512(part)
    if got != integrity:
        part.unlink()
        raise RuntimeError(f"integrity check failed for {url}:\n  expected {integrity}\n  got      {got}\n"
                           "refusing to use it")
    part.replace(dest)
    return dest


def extract_model_files(tarball: Path, out_dir: Path) -> tuple[Path, Path]:
    """Only the manifest and the weights binary, by exact member name (no path traversal possible)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with tarfile.open(tarball, "r:gz") as tf:
        for name in (MANIFEST_NAME, WEIGHTS_NAME):
            member = tf.getmember(f"package/model/{name}")
            src = tf.extractfile(member)
            if src is None:
                raise RuntimeError(f"{tarball}: {member.name} is not a regular file")
            dst = out_dir / name
            with src, open(dst, "wb") as f:
                shutil.copyfileobj(src, f)
            paths.append(dst)
    if paths[1].stat().st_size != EXPECTED_BYTES:
        raise RuntimeError(f"{paths[1]}: {paths[1].stat().st_size} bytes, expected {EXPECTED_BYTES}")
    return paths[0], paths[1]


def convert(manifest: Path, weights: Path, out: Path) -> Path:
    """Write the facestream checkpoint of the pretrained tower, with no threshold yet (eval calibrates it)."""
    sd = load_tfjs_state_dict(manifest, weights)
    return checkpoint.save(
        out, arch="faceapi_resnet128", arch_config={"embedding_dim": EMBEDDING_DIM}, state_dict=sd,
        input_size=INPUT_SIZE, template=DLIB_150, embedding_dim=EMBEDDING_DIM,
        model_version=f"faceapi-resnet128-{PACKAGE_VERSION}-{checkpoint.weights_hash(sd)}",
        flip_average=True, threshold=None, input_norm={"mean": list(MEAN_RGB), "std": list(INPUT_STD)},
        train={"source": TARBALL_URL, "integrity": TARBALL_INTEGRITY, "trained_people": [],
               "note": "pretrained by dlib's author on ~3M faces of ~7.5k people (not LFW's test protocol)"})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m shared.vision.provision", description=__doc__.split("\n")[0])
    p.add_argument("--force", action="store_true", help="convert again even when the checkpoint exists")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if CONVERTED.exists() and not args.force:
        checkpoint.load(CONVERTED)  # a truncated or foreign file must not pass as done
        print(f"{CONVERTED.relative_to(paths.REPO_ROOT)} is there")
    else:
        tarball = download()
        manifest, weights = extract_model_files(tarball, CACHE_DIR / f"face-api-{PACKAGE_VERSION}")
        convert(manifest, weights, CONVERTED)
        print(f"wrote {CONVERTED.relative_to(paths.REPO_ROOT)}")
    default = checkpoint.DEFAULT_CHECKPOINT
    if not default.exists():
        checkpoint.write(default, checkpoint.load(CONVERTED))  # atomic: the embedder may be starting
        print(f"wrote {default.relative_to(paths.REPO_ROOT)} (the pipeline's default model)")
    print(f"models ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
