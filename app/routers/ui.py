"""`/ui`: the dashboard page for people, and the files it loads.

The page itself is public HTML with no data in it: it logs the user in against
`POST /v1/auth/token` and draws every chart from the public JSON API with the user's own
token. A content policy allows scripts, styles and requests from the service's own origin
only; the page has no inline script (its settings travel in `data-` attributes).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.errors import NotFoundError
from app.routers.json_body import json_router
from app.services.ui_assets import assets, by_url_name, templates

router = json_router(tags=["ui"], include_in_schema=False)

# plotly.js adds a <style> element of its own (a violation without it, which the browser tests
# would report), hence 'unsafe-inline' for styles only; scripts stay 'self' (no inline script,
# no eval). `blob:`/`data:` images: the PNG downloads of the charts.
CONTENT_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # Shared links carry their token in the path: never send it to another site.
    "Referrer-Policy": "no-referrer",
}
ASSET_CACHE = "public, max-age=31536000, immutable"


def _page(share_token: str | None = None) -> HTMLResponse:
    html = (
        templates()
        .get_template("ui.html")
        .render(plotly_url=assets()["plotly.min.js"].url, share_token=share_token or "")
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)


@router.get("/", summary="The service's address: to the dashboard page")
async def root(request: Request) -> RedirectResponse:
    """Someone opening the service's address in a browser lands on the dashboards (the API is
    under `/v1`, its docs under `/docs`), not on a 404. The target stays relative to this
    host: a Location built from the Host header would send the browser wherever that
    header says."""
    return RedirectResponse(f"{request.scope.get('root_path', '')}/ui", status_code=307)


@router.get("/ui", summary="Dashboard page", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    """The dashboard page: log in, open, edit and share dashboards."""
    return _page()


@router.get("/ui/shared/{token}", summary="Shared dashboard page", response_class=HTMLResponse)
async def shared_page(
    token: Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")],
) -> HTMLResponse:
    """The page showing a dashboard shared by link, read-only, to any logged-in user."""
    return _page(token)


@router.get("/ui/assets/{name}", summary="Page asset")
async def asset(request: Request, name: Annotated[str, Path(max_length=100)]) -> Response:
    """A script or style sheet of the page, by fingerprinted name, cached for a year."""
    found = by_url_name().get(name)
    if found is None:
        raise NotFoundError(f"no asset {name!r}")
    headers = {
        "Cache-Control": ASSET_CACHE,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if "gzip" in request.headers.get("accept-encoding", ""):
        body = await asyncio.to_thread(found.gzipped)
        headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=found.media_type, headers=headers)
    return Response(found.body, media_type=found.media_type, headers=headers)
