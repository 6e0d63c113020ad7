"""TF Serving's message modules without TensorFlow's runtime, for processes that only
speak the protocol.

The stubs of `tensorflow-serving-api` import TensorFlow's own message modules
(`tensorflow.core.framework.tensor_pb2`, ...), and importing any of them first runs
`tensorflow/__init__.py`, which loads the whole runtime: about 700 MB resident and
seconds of start-up in every front end. A front end needs the messages only, so before
it imports the stubs it registers a bare `tensorflow` package whose search path is the
installed one: the message modules load from their files (their packages' `__init__`
files are empty) and the runtime never does. The model owner and the single-process
server, which run models, never call this."""

from __future__ import annotations

import importlib.util
import sys
import types


def import_messages_only() -> None:
    """Make `tensorflow.core.*_pb2` importable without TensorFlow's runtime (no-op when
    TensorFlow is already imported or not installed)."""
    if "tensorflow" in sys.modules:
        return
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        return
    package = types.ModuleType("tensorflow", "TensorFlow's message modules only")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["tensorflow"] = package
