"""tfmesh's own inference API (`tfmesh.inference.v1`): its gRPC servicer and converters."""
