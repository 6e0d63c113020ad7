"""The web console at `/ui`: static pages and small ES modules, served by the gateway at the
same origin as the REST API they call (so the same bearer token works), with no build step
and no script from anywhere else. The pages live in `static/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
PREFIX = "/ui"


def mount_console(app: FastAPI) -> None:
    """Serve the console under `/ui/` (`/ui` redirects there)."""

    @app.get(PREFIX, include_in_schema=False)
    async def console_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    app.mount(f"{PREFIX}/", StaticFiles(directory=STATIC, html=True), name="console")
