"""Triton's extensions beside KServe v2: a model's configuration and its statistics.

`ModelConfig` answers what Triton's clients read to drive a model (perf_analyzer takes
the batch size, inputs and scheduling from it): name, platform and backend (the
runtime), the loaded versions as a specific version policy, `max_batch_size`, inputs
and outputs with their dims *without* the batch dimension (-1 for a free size), dynamic
batching (preferred sizes = `allowed_batch_sizes`, queue delay = `batch_timeout_micros`,
queue size = the rows the queue holds, arrival order preserved), and one instance group
(GPU or CPU by where the weights live, `count` = batch threads). Fields Triton has and
tfmesh has no counterpart for are left unset. `ModelStatistics` carries the version's
counters as they are (see `services.inference.statistics`)."""

from __future__ import annotations

import numpy as np

from inference import grpc_predict_v2_pb2 as pb
from inference import model_config_pb2 as mc
from services.inference.catalog import ModelView, VersionState, VersionView
from services.inference.runtimes import TensorSpec
from services.inference.statistics import Duration, VersionStatistics

DATA_TYPES = {
    "?": mc.TYPE_BOOL,
    "u1": mc.TYPE_UINT8,
    "u2": mc.TYPE_UINT16,
    "u4": mc.TYPE_UINT32,
    "u8": mc.TYPE_UINT64,
    "i1": mc.TYPE_INT8,
    "i2": mc.TYPE_INT16,
    "i4": mc.TYPE_INT32,
    "i8": mc.TYPE_INT64,
    "f2": mc.TYPE_FP16,
    "f4": mc.TYPE_FP32,
    "f8": mc.TYPE_FP64,
}


def data_type(dtype: np.dtype) -> mc.DataType.ValueType:
    if dtype.kind in "USO":
        return mc.TYPE_STRING
    return DATA_TYPES.get(dtype.newbyteorder("<").str.lstrip("<|="), mc.TYPE_INVALID)


def _dims(spec: TensorSpec) -> list[int]:
    return [-1 if dim is None else dim for dim in spec.shape[1:]]


def model_config(model: ModelView, version: VersionView, platform: str) -> mc.ModelConfig:
    batching = model.batching
    on_gpu = "gpu" in version.device.lower()
    config = mc.ModelConfig(
        name=model.name,
        platform=platform,
        backend=version.runtime,
        version_policy=mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(
                versions=[
                    number
                    for number, view in sorted(model.versions.items())
                    if view.state is VersionState.AVAILABLE
                ]
            )
        ),
        max_batch_size=batching.max_batch_size,
        dynamic_batching=mc.ModelDynamicBatching(
            preferred_batch_size=list(batching.allowed_batch_sizes),
            max_queue_delay_microseconds=batching.batch_timeout_micros,
            preserve_ordering=True,
            default_queue_policy=mc.ModelQueuePolicy(max_queue_size=batching.max_queued_rows),
        ),
        instance_group=[
            mc.ModelInstanceGroup(
                name=model.name,
                kind=mc.ModelInstanceGroup.KIND_GPU if on_gpu else mc.ModelInstanceGroup.KIND_CPU,
                count=batching.num_batch_threads,
                gpus=[0] if on_gpu else [],
            )
        ],
    )
    if version.signature is not None:
        config.input.extend(
            mc.ModelInput(name=s.name, data_type=data_type(s.dtype), dims=_dims(s))
            for s in version.signature.inputs
        )
        config.output.extend(
            mc.ModelOutput(name=s.name, data_type=data_type(s.dtype), dims=_dims(s))
            for s in version.signature.outputs
        )
    return config


def _duration(value: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=value.count, ns=value.ns)


def model_statistics(statistics: VersionStatistics) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=statistics.model,
        version=str(statistics.version),
        last_inference=statistics.last_inference_ms,
        inference_count=statistics.inference_count,
        execution_count=statistics.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(statistics.success),
            fail=_duration(statistics.fail),
            queue=_duration(statistics.queue),
            compute_input=_duration(statistics.compute_input),
            compute_infer=_duration(statistics.compute_infer),
            compute_output=_duration(statistics.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(durations.compute_input),
                compute_infer=_duration(durations.compute_infer),
                compute_output=_duration(durations.compute_output),
            )
            for size, durations in sorted(statistics.batches.items())
        ],
    )
