"""Code every facestream stage shares: message schemas, topics, the Kafka loop, config and metrics."""
