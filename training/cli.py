"""The training layer's commands, joined with the services' by `facestream_cli` (the entry point)."""
from __future__ import annotations

COMMANDS = {
    "train": ("training.train", "train the Siamese network with contrastive loss"),
    "eval": ("training.evaluate", "LFW / pairs verification benchmark; calibrates the threshold"),
}
