"""TF Serving's APIs (PredictionService, ModelService, REST): data plane, gRPC, REST, codecs."""
