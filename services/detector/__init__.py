"""The detector stage: MTCNN, alignment to the embedder's template, quality gates."""
