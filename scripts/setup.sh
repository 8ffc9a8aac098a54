#!/usr/bin/env bash
# One-time (and idempotent) setup of everything facestream needs on a Debian machine:
#   1. Debian packages: redis-server, ffmpeg, kcat, GStreamer's RTSP server (the test camera), promtool;
#   2. .venv with the project and its pinned dependencies;
#   3. the Apache Kafka broker's jars from Maven Central into .run/kafka-libs.
# Each step checks first and skips when its result is already there, so a warm run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
KAFKA_LIBS=$ROOT/.run/kafka-libs
stamp() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# --- 1. Debian packages -------------------------------------------------------------------------
APT_PKGS=(redis-server ffmpeg kcat prometheus python3-gi gir1.2-gst-rtsp-server-1.0
          gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
          gstreamer1.0-libav gstreamer1.0-tools)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  stamp "apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  # prometheus is installed only for promtool; its postinst may try to start a service, which is harmless here.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  stamp "Debian packages present"
fi

# --- 2. Python virtual environment ----------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  stamp "creating .venv"
  $PY -m venv .venv
fi
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
have=$(cat .venv/.facestream-installed 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  stamp "installing pinned dependencies into .venv (torch is large: about a minute on a fresh machine)"
  .venv/bin/pip install -q --upgrade "pip>=24" "setuptools>=70,<81" wheel
  .venv/bin/pip install -q -r requirements.lock
  # facenet-pytorch pins torch<2.3, numpy<2 and Pillow<10.3; its MTCNN runs fine on our pins, so skip its deps.
  .venv/bin/pip install -q --no-deps facenet-pytorch==2.6.0
  .venv/bin/pip install -q --no-deps -e .
  echo "$want" > .venv/.facestream-installed
else
  stamp ".venv up to date"
fi

# --- 3. Kafka broker from Maven Central -------------------------------------------------------------
if [ ! -f "$KAFKA_LIBS/.complete" ]; then
  stamp "fetching the Kafka broker from Maven Central"
  rm -rf "$KAFKA_LIBS"; mkdir -p "$KAFKA_LIBS"
  (cd scripts/kafka && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS")
  touch "$KAFKA_LIBS/.complete"
else
  stamp "Kafka broker jars present ($(ls "$KAFKA_LIBS" | grep -c jar) jars)"
fi
# --- 4. kubectl with kustomize v5, for the offline checks of deploy/k8s ---------------------------------
if ! kubectl version --client -o json 2>/dev/null | grep -q '"minor": "\(2[7-9]\|[3-9][0-9]\)'; then
  echo "[setup] kubectl 1.27 or newer (with kustomize v5) is needed for the deploy/ tests;" \
       "Debian bookworm's kubernetes-client (1.20) is too old: install it from https://dl.k8s.io" >&2
  exit 1
fi
stamp "done"
