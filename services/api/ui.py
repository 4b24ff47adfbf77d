"""The web console at ``/ui/``: static files shipped in this package, served with a strict Content-Security-Policy.

The console calls the API with relative URLs from the same origin, so it needs no CORS and
works under any path prefix an ingress adds. The policy lets the page load and call nothing
but its own origin, and no inline script or style.
"""

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

FILES = Path(__file__).with_name("console")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The token travels in the URL's fragment, which is never sent; no referrer at all is simpler still.
    "Referrer-Policy": "no-referrer",
    # Revalidate every time, so a new release of the console is picked up at once.
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """StaticFiles (index.html for the folder) with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """StaticFiles' answer for ``path`` with ``HEADERS`` added; its errors (404, 405) are raised as they are."""
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the console at ``/ui/``; ``/ui`` redirects there with a relative Location (prefix-safe)."""

    @app.get("/ui", include_in_schema=False)
    async def ui_folder() -> Response:
        return RedirectResponse("ui/", status_code=307, headers=HEADERS)

    app.mount("/ui", ConsoleFiles(directory=FILES, html=True), name="ui")
