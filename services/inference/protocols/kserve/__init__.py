"""KServe v2 (the Open Inference Protocol) with Triton's extensions: data plane, gRPC,
REST, codecs."""
