"""The inference service: dynamic batching onto loaded model versions, three protocols."""
