"""The embedder stage: micro-batches aligned crops through the Siamese tower (CUDA when present)."""
