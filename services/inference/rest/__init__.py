"""REST served by the inference service's own processes: KServe v2 (with Triton's binary
tensor extension) and TF Serving's REST API, on an HTTP port beside the gRPC one, through
the same pipeline (and so the same batchers) as gRPC."""
