"""The gateway's access log: one JSON line per request, with the model and the version that
answered a prediction beside the trace id every log line carries.

It replaces uvicorn's access log (the same `client "METHOD path" status` message) and
adds `method`, `path`, `status`, `duration_ms` (to the answer's head), `model` (from the
path of a model route) and `version` (from the inference service's `Tfmesh-Model-Version`
answer header). The line is written when the answer starts, inside the request's span, so
its trace id is the request's."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from shared.serving_names import VERSION_HEADER

log = logging.getLogger("tfmesh.access")
MODEL_PATH = re.compile(r"^/(?:api/v1|v1|v2)/(?:models|serving)/([^/:]+)")
_VERSION = VERSION_HEADER.lower().encode()


class AccessLog:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                _log(scope, message, started)
            await send(message)

        await self.app(scope, receive, sending)


def _log(scope: dict[str, Any], answer: dict[str, Any], started: float) -> None:
    path = scope["path"]
    model = MODEL_PATH.match(path)
    version = dict(answer.get("headers") or ()).get(_VERSION, b"").decode()
    client = scope.get("client") or ("-", 0)
    status = answer["status"]
    log.info(
        f'{client[0]}:{client[1]} - "{scope["method"]} {path}" {status}',
        extra={
            "method": scope["method"],
            "path": path,
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "model": model.group(1) if model else None,
            "version": int(version) if version.isdigit() else None,
        },
    )
