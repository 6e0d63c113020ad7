"""The training service: durable jobs that search, train, checkpoint, evaluate, export and
register models."""
