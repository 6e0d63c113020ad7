"""The Open Inference Protocol's (KServe v2's) tensor datatypes and their numpy dtypes,
shared by the inference service's KServe gRPC adapter and its REST codec."""

from __future__ import annotations

import numpy as np

# BYTES (strings) is the protocol's one other datatype; tfmesh does not serve it.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
