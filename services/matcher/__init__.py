"""The matcher stage: gallery index from Redis, per-track decisions, identity events."""
