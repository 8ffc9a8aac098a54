"""facestream benchmarks: every stage against its raw component, the pipeline under load, scale-out.

`python -m bench.run [--quick]` (what `make bench` / `make bench-quick` call) writes JSON, a markdown
summary and plots under bench/results/. `python -m bench.gpu_embedder` measures the embedder on a GPU.
See bench/README.md for what each figure means and how it is measured.
"""
