"""PNG plots of one bench.json: ratios, embedder batches, matcher sizes, Kafka, the pipeline under load."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on these machines
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, out: Path, name: str, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    made.append(name)


def _res(doc: dict, part: str) -> dict | None:
    p = doc["parts"].get(part)
    return p["result"] if p and p.get("result") else None


def draw(doc: dict[str, Any], out: Path) -> list[str]:
    """Write every plot the run has data for; returns the file names."""
    made: list[str] = []
    rs = [r for r in doc["headline"]["stage_ratios"] if not r["contender"].startswith("numpy")]  # stages only
    if rs:
        fig, ax = plt.subplots(figsize=(10, 0.26 * len(rs) + 1.2))
        labels = [f"{r['stage']}: {r['contender']} vs {r['raw']} ({r['at']})" for r in rs]
        ax.barh(labels, [r["ratio"] for r in rs], color=["tab:red" if r["ratio"] < 0.9 else "tab:green" for r in rs])
        ax.axvline(0.9, color="grey", ls="--")
        ax.set_xscale("log")
        ax.set_xlabel("ratio to the raw component (1 = no overhead; log scale)")
        ax.tick_params(axis="y", labelsize=8)
        ax.invert_yaxis()
        _save(fig, out, "stage_ratios.png", made)
    if emb := _res(doc, "embedder"):
        fig, ax = plt.subplots(figsize=(6, 4))
        bs = [int(b) for b in emb["by_batch"]]
        for k in emb["by_batch"][str(bs[0])]["faces_per_s"]:
            ax.plot(bs, [emb["by_batch"][str(b)]["faces_per_s"][k] for b in bs], marker="o", label=k)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("faces per batch")
        ax.set_ylabel("faces/s (1 CPU thread)")
        ax.legend()
        _save(fig, out, "embedder_batches.png", made)
    if mat := _res(doc, "matcher"):
        fig, ax = plt.subplots(figsize=(6, 4))
        ns = [int(n) for n in mat["by_size"]]
        for k in ("numpy", "search", "stage"):
            ax.plot(ns, [mat["by_size"][str(n)]["batch_64"]["queries_per_s"][k] for n in ns], marker="o", label=k)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("gallery identities")
        ax.set_ylabel("queries/s (batches of 64)")
        ax.legend()
        _save(fig, out, "matcher_sizes.png", made)
    if kaf := _res(doc, "kafka"):
        fig, ax = plt.subplots(figsize=(7, 4))
        sizes = list(kaf["by_size"])
        keys = list(kaf["by_size"][sizes[0]]["mb_per_s"])
        w = 0.8 / len(keys)
        for i, k in enumerate(keys):
            ax.bar([j + i * w for j in range(len(sizes))], [kaf["by_size"][s]["mb_per_s"][k] for s in sizes], w,
                   label=k)
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(sizes))], sizes)
        ax.set_ylabel("MB/s")
        ax.legend(fontsize=7)
        _save(fig, out, "kafka_transport.png", made)
    if pipe := _res(doc, "pipeline"):
        _pipeline(pipe, out, made)
    if sc := _res(doc, "scale_out"):
        fig, ax = plt.subplots(figsize=(5, 4))
        ks = [int(k) for k in sc["by_processes"]]
        ax.plot(ks, [sc["by_processes"][str(k)]["faces_per_s"] for k in ks], marker="o")
        ax.set_xticks(ks)
        ax.set_xlabel("embedder processes")
        ax.set_ylabel("faces/s")
        _save(fig, out, "scale_out.png", made)
    return made


def _pipeline(pipe: dict, out: Path, made: list[str]) -> None:
    runs = pipe["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for r in runs:
        t = [row[0] for row in r["lag"]["series"]]
        axes[0].plot(t, [row[1] for row in r["lag"]["series"]], label=f"{r['cameras']} cam")
    axes[0].set_xlabel("s since the load started")
    axes[0].set_ylabel("detector input lag (frames)")
    axes[0].legend()
    ns = [r["cameras"] for r in runs]
    for q in ("p50", "p95", "p99"):
        axes[1].plot(ns, [r["latency_s"]["face_capture_to_decision"][q] or 0 for r in runs], marker="o", label=q)
    axes[1].set_xlabel("cameras")
    axes[1].set_ylabel("capture -> matcher decision, s")
    axes[1].legend()
    bottom = [0.0] * len(runs)
    for svc in ("ingest", "detector", "embedder", "matcher"):
        vals = [r["cpu_cores"][svc] for r in runs]
        axes[2].bar([str(n) for n in ns], vals, bottom=bottom, label=svc)
        bottom = [b + v for b, v in zip(bottom, vals)]
    axes[2].set_xlabel("cameras")
    axes[2].set_ylabel("CPU cores used")
    axes[2].legend()
    fig.suptitle(f"{pipe['cost_model']['resolution']} at {pipe['config']['fps_cap']:g} fps per camera")
    _save(fig, out, "pipeline_load.png", made)
