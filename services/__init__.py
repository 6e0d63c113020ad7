"""tfmesh's gRPC services, one package each."""
