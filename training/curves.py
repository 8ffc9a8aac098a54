"""The plots, as PNGs: training curves (the loss, and how far apart same-person and different-person
pairs sit) and verification ROC curves (`facestream eval`, `make bench-accuracy`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def ema(values: list[float], alpha: float = 0.1) -> np.ndarray:
    """Exponential moving average, to see the trend through the noise of small batches."""
    out, acc = np.empty(len(values)), None
    for i, v in enumerate(values):
        acc = v if acc is None else (1 - alpha) * acc + alpha * v
        out[i] = acc
    return out


def plot_curves(history: dict[str, list[float]], path: str | Path, title: str, margin: float | None = None) -> Path:
    """`history` holds equally long lists "step", "loss", "d_same", "d_diff", "lr", and optionally
    "val_step" with "val_acc" (accuracy on held-out people). Writes a PNG with the Agg backend."""
    import matplotlib
    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    panels = 3 if history.get("val_step") else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.8))
    step = history["step"]
    ax = axes[0]
    ax.plot(step, history["loss"], color="tab:blue", alpha=0.3, lw=0.8, label="batch")
    ax.plot(step, ema(history["loss"]), color="tab:blue", label="moving average")
    ax.set(xlabel="step", ylabel="contrastive loss", title="loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(step, ema(history["d_same"]), color="tab:green", label="same person")
    ax.plot(step, ema(history["d_diff"]), color="tab:red", label="different people")
    if margin is not None:
        ax.axhline(margin, color="grey", ls=":", lw=0.8, label=f"margin {margin:g}")
    ax.set(xlabel="step", ylabel="mean distance in the batch", title="pair distances (training)")
    ax.legend(fontsize=8)
    if panels == 3:
        ax = axes[2]
        ax.plot(history["val_step"], 100 * np.asarray(history["val_acc"]), marker="o", color="tab:purple")
        ax.set(xlabel="step", ylabel="accuracy %", title="held-out people, best threshold")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """TAR against FAR (log scale) for one or more models."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (far, tar) in curves.items():
        ax.step(np.maximum(far, 1e-5), tar, where="post", label=name)
    ax.axvline(1e-3, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlim=(1e-4, 1), ylim=(0.5, 1.001), xlabel="false accept rate",
           ylabel="true accept rate", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
