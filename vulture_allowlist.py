"""Names the dead-code check (vulture, `make lint`) must not report: each is used by a
framework or a protocol that calls it by name, never by our own code. Keep it short: a
name belongs here only with the reason it is alive."""

# Vulture's allow-list format: bare names, and `_.name` for an attribute of anything.
# ruff: noqa: B018, F821

# Dataclass fields written to the benchmarks' JSON results (dataclasses.asdict).
requests_per_busy_core
_.share_of_ceiling
# MLServer loads the peer's runtime by its import path (bench/mlserver_peer.py).
SavedModelRuntime
# SQLAlchemy's declarative base reads them.
_.type_annotation_map
__table_args__
_.isolation_level
# asyncio.Protocol callbacks (services.inference.dataplane.connection).
_.connection_made
_.connection_lost
# What generated servicer code calls on a server and on a call's context
# (services.inference.bridge.calls).
_.add_registered_method_handlers
_.set_code
_.set_details
# uvicorn's Server hooks, overridden (services.inference.rest.serve).
_.capture_signals
_.should_exit
# References that keep a loaded model alive for as long as its runtime.
_._model
_._loaded
# The package attribute that makes TF Serving's stubs importable without TensorFlow.
_.__path__
# Attributes and callbacks Keras, tf.data, tarfile and TF Lite's converter read.
_.auto_shard_policy
_.gid
_.uid
_.gname
_.uname
_.mtime
_.optimizations
_.on_train_batch_end
_.on_epoch_end
_.stop_training
# gRPC interceptor methods, called by grpc.
_.intercept_unary_unary
_.intercept_unary_stream
_.intercept_stream_unary
_.intercept_stream_stream
_.intercept_service
# prometheus_client reads the value class it is given.
_.ValueClass
# http.server's request handler callbacks (test servers).
_.do_GET
_.do_PUT
_.log_message
# Modules imported for their descriptors (the default pool).
DESCRIBED
# REST handlers, called by the name their route gives (shared.rest_routes).
_.server_metadata
_.model_ready
_.model_metadata
_.tf_status
_.tf_metadata
_.tf_predict
_.tf_unimplemented
# TFLiteConverter's settings, read by its convert() (services.training.quantization).
_.supported_types
_.representative_dataset
_.supported_ops
_.inference_input_type
_.inference_output_type
