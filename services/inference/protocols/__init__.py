"""The protocols the inference service speaks, one package each: `tfmesh` (its own API),
`kserve` (KServe v2 with Triton's extensions) and `tfserving` (TF Serving's APIs). Each
holds its data plane (what the protocol means, over the pipeline), its gRPC servicer and
its REST handlers (thin renderings of the data plane), and its codecs."""
