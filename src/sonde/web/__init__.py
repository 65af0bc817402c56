"""The dashboard: static files under ``/ui/`` that call the JSON API from the browser.

No templates and no server-side state: the page keeps the management key (localStorage)
and sends it as a header like any other API client, so the UI needs no auth of its own
and a key never appears in a URL the server sees. docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).with_name("static")
PATH = "/ui"

# The page has no inline script or style, so the policy can forbid both: log lines are
# untrusted text rendered into the page, and the page holds a key worth stealing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # Revalidate every load (ETag/Last-Modified make that a 304), so an upgraded server
    # never runs against a cached older script.
    "Cache-Control": "no-cache",
}


class _Static(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/`` (``/ui`` redirects there)."""
    app.mount(PATH, _Static(directory=STATIC, html=True), name="ui")
