"""The multi-process data plane: gRPC front ends on every core in front of one model owner.

Front ends decode and validate requests, put their tensors into shared memory and send
small frames over a Unix socket to the owner, whose batchers form batches across all
front ends; `supervisor` starts, watches and restarts the processes."""
