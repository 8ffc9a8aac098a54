#!/usr/bin/env bash
# The GPU figures in one command (under 10 minutes on an H100/H200-class GPU): the embedder's faces/s and
# p99 batch latency at batch 1..512 for every variant (bench/gpu_embedder.py), then MTCNN and the detector
# at 720p and 1080p and the cameras per GPU (bench/gpu_detector.py). Results into ${OUT:-bench/results}.
#   make bench-gpu            # or: OUT=/tmp/gpu scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
py=.venv/bin/python
[ -x "$py" ] || py=python3  # a GPU machine with torch, facenet-pytorch and the repo's requirements installed
"$py" - <<'PY' || { echo "gpu_check: this Python lacks torch with CUDA, or the repo's requirements" >&2; exit 2; }
import torch, facenet_pytorch, cv2, msgpack  # noqa: F401
assert torch.cuda.is_available(), "torch sees no CUDA device"
print("gpu_check:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
[ -f models/facestream.pt ] || "$py" -m shared.vision.provision  # needs the pinned tarballs in models/cache
timeout 420 "$py" -m bench.gpu_embedder --out "$out"
timeout 150 "$py" -m bench.gpu_detector --out "$out"
"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
emb = json.loads((out / "gpu_embedder.json").read_text())["result"]
det = json.loads((out / "gpu_detector.json").read_text())["result"]
print("embedder best:", emb["best"])
for size, r in det["by_size"].items():
    print(size, {k: round(v, 1) for k, v in r["frames_per_s"].items()}, "cameras per GPU", round(r["cameras_per_gpu"]))
PY
