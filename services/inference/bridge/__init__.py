"""gRPC through Envoy's gRPC-to-HTTP/1.1 bridge: the unary calls' ASGI app, and Envoy."""
