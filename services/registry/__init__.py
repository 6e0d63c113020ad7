"""The model registry service: versions, artifacts, aliases, gated promotion, change feed."""
