"""The console's files as the gateway serves them: public pages (the API they call keeps
its token), every module they import present, and nothing loaded from another origin."""

from __future__ import annotations

import re

import httpx

from gateway.app import create_app
from gateway.backends import Backends
from gateway.console import STATIC
from gateway.settings import GatewaySettings

IMPORT = re.compile(r'from "\./([\w.]+)"')


async def test_the_pages_are_served_without_the_token_and_the_api_still_needs_it():
    settings = GatewaySettings(registry_addr="127.0.0.1:1", api_token="s3cret")
    app = create_app(settings, Backends(settings, None))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        moved = await client.get("/ui")
        assert moved.status_code in (301, 302, 307) and moved.headers["location"] == "/ui/"
        page = await client.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<script type="module" src="app.js">' in page.text
        script = await client.get("/ui/app.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert (await client.get("/ui/missing.js")).status_code == 404
        assert (await client.get("/api/v1/models")).status_code == 401
        # Only /ui and what is below it is open, not every path that starts so.
        assert (await client.get("/uinstall")).status_code == 401
    await app.state.backends.close()


def test_every_module_imported_exists_and_nothing_comes_from_elsewhere():
    files = sorted(STATIC.iterdir())
    assert {"index.html", "app.js", "style.css"} <= {f.name for f in files}
    for path in files:
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path.name
        assert "https://" not in text and "//cdn" not in text, path.name
        for module in IMPORT.findall(text):
            assert (STATIC / module).is_file(), f"{path.name} imports {module}"
