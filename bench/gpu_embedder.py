"""`python -m bench.gpu_embedder`: the embedder's faces/s and batch latency on a GPU, batch 1 to 512.

    python -m bench.gpu_embedder                    # on a CUDA machine: every variant, batch 1..512
    python -m bench.gpu_embedder --smoke            # CPU, batch 1 and 2: CI checks that it still runs
    python -m bench.gpu_embedder --out /tmp/r --model models/facestream.pt --max-batch 256

Variants of one forward pass of the checkpoint's network (each skipped, with the reason, where it does
not apply):
  fp32               float32, default NCHW layout
  fp32_cl            float32, channels-last
  fp16_cl            float16, channels-last (what EmbeddingModel uses on CUDA)
  fp16_cl_compile    the same through torch.compile (inductor; the batch dimension becomes dynamic after
                     the second size, so it compiles about twice)
  fp16_cl_cudagraph  the same captured once per batch size as a CUDA graph and replayed
  embed              EmbeddingModel.embed(): uint8 crops on the host to unit vectors on the host (copy,
                     normalize, the forward(s) the checkpoint asks for, incl. flip averaging), the service path
Per variant and batch size: the median over repeats of the mean time of `iters` back-to-back calls
(synchronized), faces/s = batch / that; p50/p99 batch latency over 100 calls synchronized one by one; and, on 64 real crops, the smallest cosine between the variant's
descriptors and fp32's, so that a faster path that loses accuracy shows up. Writes <out>/gpu_embedder.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from bench.common import RESULTS, SCHEMA, load_average, machine_facts, model_info, write_json
from shared.config import ConfigError, build_parser, parse, setting


@dataclass(frozen=True)
class GpuBenchConfig:
    """python -m bench.gpu_embedder: the embedder's faces/s and batch latency on a GPU, batch 1 to 512."""
    smoke: bool = setting(False, "CPU, batch 1 and 2, no compile: that the script runs")
    model: Path | None = setting(None, "checkpoint (default models/facestream.pt)")
    out: Path = setting(RESULTS, "results folder (default bench/results)")
    max_batch: int = setting(512, "largest batch size measured (of 1, 2, 4 ... 512)", ge=1, le=4096)
    repeats: int = setting(5, "repeats per variant and batch size", ge=1, le=1000)
    threads: int = setting(1, "CPU threads when running on the CPU", ge=1, le=1024)


def parser() -> argparse.ArgumentParser:
    return build_parser(GpuBenchConfig, "python -m bench.gpu_embedder")


def config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> GpuBenchConfig:
    """The settings: flags > FACESTREAM_* > defaults."""
    return parse(GpuBenchConfig, argv, env, parser=parser())[0]


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], Any], dev: torch.device, repeats: int, iters: int) -> list[float]:
    """Seconds per call: for each repeat, `iters` calls back to back between two synchronizations."""
    for _ in range(2):
        fn()
    _sync(dev)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(dev)
        out.append((time.perf_counter() - t0) / iters)
    return out


def latencies(fn: Callable[[], Any], dev: torch.device, calls: int) -> list[float]:
    """Seconds of each of `calls` calls, each synchronized on its own (a batch's latency, not throughput)."""
    out = []
    for _ in range(calls):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        out.append(time.perf_counter() - t0)
    return out


def crops_for(model, n: int = 64):
    """Real aligned crops (LFW through the pipeline's detector) when the data is here, else random ones; a
    fused pair's are a tuple, one batch per tower."""
    try:
        from bench.inputs import aligned_crop_sets, default_detector, model_crops

        return (model_crops(model, aligned_crop_sets(default_detector(model.path), n)),
                "LFW crops through the pipeline's detector")
    except Exception as e:  # noqa: BLE001 (a GPU box without the data still measures speed)
        rng = np.random.default_rng(0)
        sets = tuple(rng.integers(0, 255, (n, t.size, t.size, 3), np.uint8) for t in model.inputs)
        return (sets if model.fused else sets[0]), f"random ({e})"


def each(x, fn):
    """`fn` of a tensor, or of each tensor of a fused pair's list of inputs."""
    return [fn(t) for t in x] if isinstance(x, (list, tuple)) else fn(x)


def rows(crops, idx):
    return tuple(c[idx] for c in crops) if isinstance(crops, tuple) else crops[idx]


class CudaGraph:
    """`net` on a fixed-shape input, captured once and replayed (no per-layer launch cost)."""

    def __init__(self, net: torch.nn.Module, x):
        self.x = each(x, lambda t: t.clone())
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                net(self.x)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.y = net(self.x)

    def __call__(self, x) -> torch.Tensor:
        if isinstance(x, (list, tuple)):
            for a, b in zip(self.x, x):
                a.copy_(b)
        else:
            self.x.copy_(x)
        self.graph.replay()
        return self.y


def variants(model, dev: torch.device, smoke: bool) -> dict[str, tuple[Callable | None, str]]:
    """name -> (make(batch_input) -> callable, or None when skipped; reason)."""
    import copy

    cuda = dev.type == "cuda"
    fp32 = copy.deepcopy(model.net).float().to(dev).to(memory_format=torch.contiguous_format)
    fp32_cl = copy.deepcopy(fp32).to(memory_format=torch.channels_last)
    fp16_cl = copy.deepcopy(fp32_cl).half() if cuda else None
    out: dict[str, tuple[Callable | None, str]] = {
        "fp32": (lambda x: (lambda: fp32(each(x, lambda t: t.float().contiguous()))), "float32, NCHW"),
        "fp32_cl": (lambda x: (lambda: fp32_cl(each(x, lambda t: t.float().contiguous(
            memory_format=torch.channels_last)))), "float32, channels-last"),
    }
    if fp16_cl is None:
        out["fp16_cl"] = (None, "skipped: float16 convolutions are for CUDA")
        out["fp16_cl_compile"] = (None, "skipped: needs CUDA")
        out["fp16_cl_cudagraph"] = (None, "skipped: needs CUDA")
    else:
        out["fp16_cl"] = (lambda x: (lambda: fp16_cl(x)), "float16, channels-last")
        if smoke:
            out["fp16_cl_compile"] = (None, "skipped: --smoke")
        else:
            compiled = torch.compile(fp16_cl)
            out["fp16_cl_compile"] = (lambda x: (lambda: compiled(x)), "torch.compile (inductor), float16")
        out["fp16_cl_cudagraph"] = (lambda x: (lambda g=CudaGraph(fp16_cl, x): g(x)), "CUDA graph per batch size")
    return out


def run(args: GpuBenchConfig) -> dict[str, Any]:
    from shared.vision.embed import EmbeddingModel
    from shared.vision.pixels import to_input

    dev = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if dev.type == "cpu":
        torch.set_num_threads(args.threads)
    model = EmbeddingModel.load(args.model, device=str(dev))
    batches = [1, 2] if args.smoke else [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b <= args.max_batch]
    repeats = 2 if args.smoke else args.repeats
    crops, crops_src = crops_for(model)
    n_crops = len(crops[0]) if model.fused else len(crops)  # a fused pair's variants run both towers
    cl = torch.channels_last

    def tensor(c, half: bool):
        """One input batch, or a fused pair's list of them (each tower normalized its own way)."""
        parts = c if model.fused else (c,)
        xs = [to_input(np.ascontiguousarray(ci), t.mean, t.std, dev).contiguous(memory_format=cl)
              for ci, t in zip(parts, model.inputs)]
        xs = [x.half() if half else x for x in xs]
        return xs if model.fused else xs[0]

    norm = torch.nn.functional.normalize
    with torch.inference_mode():
        fp32 = variants(model, dev, True)["fp32"][0]
        raw = fp32(tensor(crops, False))().float()
        ref = norm(raw, dim=1)  # what each single-forward variant is compared with
        # embed() averages each face with its mirror image when the checkpoint says so: compare like with like
        if model.fused:  # the pair averages each tower's mirror before fusing
            import copy

            ref_embed = copy.deepcopy(model.net).float()(tensor(crops, False), flip=model.flip_average).float()
        else:
            ref_embed = norm(raw + fp32(torch.flip(tensor(crops, False), dims=[3]))().float(), dim=1) \
                if model.flip_average else ref
        result: dict[str, Any] = {}
        for name, (make, what) in {**variants(model, dev, args.smoke), "embed": (None, "")}.items():
            half = name.startswith("fp16")
            if name == "embed":
                what = f"EmbeddingModel.embed (half={model.half}, flip_average={model.flip_average})"
            elif make is None:
                result[name] = {"status": "skipped", "what": what}
                continue
            entry: dict[str, Any] = {"status": "ok", "what": what, "by_batch": {}}
            try:
                if name == "embed":
                    got = torch.from_numpy(model.embed(crops, batch_size=n_crops)).to(dev)
                    entry["min_cosine_to_fp32"] = float((got * ref_embed).sum(1).min())
                else:
                    got = norm(make(tensor(crops, half))().float(), dim=1)
                    entry["min_cosine_to_fp32"] = float((got * ref).sum(1).min())
                for b in batches:
                    idx = np.arange(b) % n_crops
                    if name == "embed":
                        host = rows(crops, idx)
                        fn = lambda host=host, b=b: model.embed(host, batch_size=b)  # noqa: E731
                    else:
                        fn = make(tensor(rows(crops, idx), half))
                    iters = 2 if args.smoke else max(3, min(50, 2048 // b))
                    secs = timed(fn, dev, repeats, iters)
                    med = statistics.median(secs)
                    lat = latencies(fn, dev, 5 if args.smoke else 100)
                    entry["by_batch"][str(b)] = {"ms_per_batch": med * 1000, "faces_per_s": b / med,
                                                 "ms_values": [s * 1000 for s in secs], "iters": iters,
                                                 "p99_batch_latency_ms": float(np.percentile(lat, 99)) * 1000,
                                                 "p50_batch_latency_ms": float(np.percentile(lat, 50)) * 1000}
            except Exception as e:  # noqa: BLE001 (one path failing, say compile, must not lose the others)
                entry = {"status": "failed", "what": what, "error": f"{type(e).__name__}: {e}"}
            result[name] = entry
            print(f"[gpu_embedder] {name}: " + ", ".join(f"b{b} {v['faces_per_s']:.0f}/s"
                                                       for b, v in entry.get("by_batch", {}).items()), flush=True)
    ok = {k: v for k, v in result.items() if v["status"] == "ok" and k != "embed"}
    best = max(((k, b, v["faces_per_s"]) for k, e in ok.items() for b, v in e["by_batch"].items()),
               key=lambda t: t[2], default=None)
    return {"config": {"device": str(dev), "batches": batches, "repeats": repeats, "crops": crops_src,
                       "smoke": args.smoke},
            "method": "per variant and batch: median over repeats of (time of `iters` back-to-back calls between "
                      "two device synchronizations) / iters, after 2 warm-up calls; faces/s = batch / that",
            "variants": result,
            "best": {"variant": best[0], "batch": int(best[1]), "faces_per_s": best[2]} if best else None}


def gpu_facts() -> dict[str, Any]:
    """The GPU the figures came from (none when run on the CPU)."""
    if not torch.cuda.is_available():
        return {"cuda": False}
    p = torch.cuda.get_device_properties(0)
    return {"cuda": True, "name": p.name, "capability": f"{p.major}.{p.minor}",
            "memory_gb": round(p.total_memory / 2**30, 1), "cuda_version": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version()}


def main(argv: list[str] | None = None) -> int:
    try:
        a = config(sys.argv[1:] if argv is None else argv)
    except ConfigError as e:
        parser().error(str(e))  # usage and exit 2, as for a flag argparse refuses itself
    load0, t0 = load_average(), time.monotonic()
    result = run(a)
    doc = {"schema": SCHEMA, "part": "gpu_embedder", "mode": "smoke" if a.smoke else "full",
           "machine": {**machine_facts(), "gpu": gpu_facts(), "load_average_start": load0,
                       "load_average_end": load_average()},
           "model": model_info(a.model), "seconds": time.monotonic() - t0, "result": result, "error": None}
    path = write_json(a.out / "gpu_embedder.json", doc)
    print(f"[gpu_embedder] best: {result['best']}; wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
