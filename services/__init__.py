"""The four pipeline stages (ingest, detector, embedder, matcher) and the user-facing commands."""
