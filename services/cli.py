"""The services layer's commands and the dispatcher that runs one (`facestream_cli` adds training's).

Each command lives in its own module and is imported only when called, so `facestream events` does
not pay for importing torch. `python -m services.cli <command>` runs a service without the training layer.
"""
from __future__ import annotations

import importlib
import os
import sys

# Before numpy loads: OpenBLAS's own threads made the matcher's small products (64 x 1000) take 0.1 ms or
# 20 ms at random on a loaded 2-core machine; one thread took 0.22 ms every time and was as fast or faster
# at 100k and 1M identities (bench/results/matcher.json). Torch's threads are set per service.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from shared.config import ConfigError

COMMANDS = {
    # long-running services
    "ingest": ("services.ingest.main", "read cameras (RTSP, HTTP, files, devices) and publish JPEG frames"),
    "detector": ("services.detector.main", "detect, align and quality-gate faces in frames"),
    "embedder": ("services.embedder.main", "embed aligned faces in micro-batches (GPU when present)"),
    "matcher": ("services.matcher.main", "match embeddings to the Redis gallery, publish identity events"),
    # user tasks
    "gallery": ("services.gallery.main", "enroll, list and remove people"),
    "calibrate": ("services.gallery.calibrate", "set the matcher's threshold at a target FAR from the gallery"),
    "recognize": ("services.recognize", "name every face in one image"),
    "events": ("services.events", "print identity events as they arrive"),
    "api": ("services.api.main", "serve the HTTP API: people, enroll by upload, recognize (OpenAPI at /docs)"),
    "api-key": ("services.api.keys_cli", "create, list and revoke the API's keys (shown once, stored hashed)"),
}


def usage(table: dict[str, tuple[str, str]]) -> str:
    lines = ["usage: facestream <command> [options]   (facestream <command> --help for its options)", ""]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in table.items()]
    return "\n".join(lines)


def dispatch(table: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """Run `argv[0]` of `table` with the rest of `argv`; a configuration error is one line and exit 2."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(table))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in table:
        print(f"facestream: unknown command {name!r}\n\n{usage(table)}", file=sys.stderr)
        return 2
    module = importlib.import_module(table[name][0])
    try:
        return int(module.main(rest) or 0)
    except ConfigError as e:
        print(f"facestream {name}: configuration error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return dispatch(COMMANDS, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
