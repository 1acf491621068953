"""`/v1/dashboards`: saved dashboards of analytics widgets, their share links and export.

A dashboard belongs to the credential that created it (a user, or an API key); every other
caller, admins included, gets 404 for it. Replacing one needs `If-Match` with its version
(the `ETag`): 428 without it, 412 when someone saved in between.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import httpx
from fastapi import Depends, Header, Path, Request, Response
from fastapi.responses import HTMLResponse
from starlette.convertors import StringConvertor, register_url_convertor

from app.deps import Db
from app.errors import problem_responses
from app.models.dashboards import (
    MAX_DASHBOARDS_PER_OWNER,
    Dashboard,
    DashboardIn,
    DashboardList,
    SharedDashboard,
    ShareLink,
    Widget,
    WidgetCatalogInfo,
)
from app.routers.json_body import json_router
from app.security import Principal, current_principal
from app.services import dashboard_export
from app.services import dashboards as service
from app.services.widget_catalog import WidgetCatalog


class _DashboardIdConvertor(StringConvertor):
    """Dashboard ids are 24 hex digits, so `/catalog` and `/default` are never taken for one:
    a PUT to `/v1/dashboards/catalog` is not routed to "replace dashboard 'catalog'", and a
    405 there names only the methods the documented path has."""

    regex = "[0-9a-f]{24}"


register_url_convertor("dashboard_id", _DashboardIdConvertor())

router = json_router(prefix="/v1/dashboards", tags=["dashboards"])

DashboardId = Annotated[
    str, Path(pattern="^[0-9a-f]{24}$", description="Dashboard id (24 hex digits)")
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        max_length=200,
        description='The version last read, as its ETag (`"3"`); required',
    ),
]
ETAG_HEADER = {"ETag": {"description": "The dashboard's version", "schema": {"type": "string"}}}


def owner_of(principal: Principal) -> str:
    """Who owns what a caller creates: a user by name, a stored API key by its id (so a
    renamed key keeps its dashboards), the operator's key as such. Prefixed, so that no
    username can pass for a key."""
    if principal.method == "api_key" and principal.key_id:
        return f"key:{principal.key_id}"
    if principal.method == "admin_key":
        return "admin-key"
    return f"user:{principal.subject}"


async def get_owner(principal: Annotated[Principal, Depends(current_principal)]) -> str:
    return owner_of(principal)


async def get_catalog(request: Request) -> WidgetCatalog:
    """Built once per app from its own routes, on first use (all routers are included)."""
    catalog: WidgetCatalog | None = getattr(request.app.state, "widget_catalog", None)
    if catalog is None:
        catalog = WidgetCatalog(request.app.routes)
        request.app.state.widget_catalog = catalog
    return catalog


Owner = Annotated[str, Depends(get_owner)]
Catalog = Annotated[WidgetCatalog, Depends(get_catalog)]


def _with_etag(response: Response, dashboard: Dashboard) -> Dashboard:
    response.headers["ETag"] = service.etag(dashboard.version)
    return dashboard


@router.get(
    "/catalog",
    summary="What widgets can show",
    response_model=WidgetCatalogInfo,
    responses=problem_responses(503),
)
async def catalog(catalog: Catalog) -> Response:
    """Endpoints a widget may query, their parameters, charts and measures, and the filters."""
    return Response(catalog.info_json(), media_type="application/json")


@router.get(
    "", summary="List my dashboards", response_model=DashboardList, responses=problem_responses(503)
)
async def list_dashboards(db: Db, owner: Owner) -> DashboardList:
    """The caller's own dashboards, most recently changed first."""
    items = await service.list_dashboards(db, owner)
    return DashboardList(items=items, limit=MAX_DASHBOARDS_PER_OWNER)


@router.post(
    "",
    status_code=201,
    summary="Create a dashboard",
    response_model=Dashboard,
    responses={201: {"headers": ETAG_HEADER}, **problem_responses(409, 422, 503)},
)
async def create_dashboard(
    db: Db, owner: Owner, catalog: Catalog, body: DashboardIn, response: Response
) -> Dashboard:
    """Save a new dashboard owned by the caller; 422 names any bad widget field."""
    dashboard = await service.create_dashboard(db, owner, body, catalog)
    response.headers["Location"] = f"{router.prefix}/{dashboard.id}"
    return _with_etag(response, dashboard)


@router.post(
    "/default",
    summary="Create my starter dashboard",
    response_model=DashboardList,
    responses={201: {"description": "Created"}, **problem_responses(409, 503)},
)
async def create_default(
    db: Db, owner: Owner, catalog: Catalog, response: Response
) -> DashboardList:
    """Create "the catalogue at a glance" when the caller has no dashboard; list them."""
    created = await service.create_default_dashboard(db, owner, catalog)
    response.status_code = 201 if created is not None else 200
    return DashboardList(
        items=await service.list_dashboards(db, owner), limit=MAX_DASHBOARDS_PER_OWNER
    )


@router.get(
    "/shared/{token}",
    summary="Read a shared dashboard",
    response_model=SharedDashboard,
    responses=problem_responses(404, 503),
)
async def read_shared(
    db: Db, token: Annotated[str, Path(min_length=1, max_length=100)]
) -> SharedDashboard:
    """A dashboard shared by link, read-only, for any authenticated caller."""
    return await service.get_shared(db, token)


@router.get(
    "/{dashboard_id:dashboard_id}",
    summary="Read a dashboard",
    response_model=Dashboard,
    responses={200: {"headers": ETAG_HEADER}, **problem_responses(404, 503)},
)
async def read_dashboard(
    db: Db, owner: Owner, dashboard_id: DashboardId, response: Response
) -> Dashboard:
    """One of the caller's dashboards, with its version as the ETag."""
    return _with_etag(response, await service.get_dashboard(db, owner, dashboard_id))


@router.put(
    "/{dashboard_id:dashboard_id}",
    summary="Replace a dashboard",
    response_model=Dashboard,
    responses={200: {"headers": ETAG_HEADER}, **problem_responses(404, 412, 422, 428, 503)},
)
async def replace_dashboard(
    db: Db,
    owner: Owner,
    catalog: Catalog,
    dashboard_id: DashboardId,
    body: DashboardIn,
    response: Response,
    if_match: IfMatch = None,
) -> Dashboard:
    """Replace name, widgets and filters; needs If-Match with the current version."""
    dashboard = await service.replace_dashboard(db, owner, dashboard_id, body, if_match, catalog)
    return _with_etag(response, dashboard)


@router.delete(
    "/{dashboard_id:dashboard_id}",
    status_code=204,
    summary="Delete a dashboard",
    response_class=Response,
    responses=problem_responses(404, 412, 428, 503),
)
async def delete_dashboard(
    db: Db, owner: Owner, dashboard_id: DashboardId, if_match: IfMatch = None
) -> None:
    """Delete it and its share link (If-Match optional; checked when sent)."""
    await service.delete_dashboard(db, owner, dashboard_id, if_match)


@router.post(
    "/{dashboard_id:dashboard_id}/share",
    summary="Share a dashboard by link",
    response_model=ShareLink,
    responses={201: {"description": "Link created"}, **problem_responses(404, 503)},
)
async def share(db: Db, owner: Owner, dashboard_id: DashboardId, response: Response) -> ShareLink:
    """A read-only link for any authenticated user: 201 when made, 200 when it existed."""
    link, created = await service.share_dashboard(db, owner, dashboard_id)
    response.status_code = 201 if created else 200
    return link


@router.delete(
    "/{dashboard_id:dashboard_id}/share",
    status_code=204,
    summary="Revoke the share link",
    response_class=Response,
    responses=problem_responses(404, 503),
)
async def unshare(db: Db, owner: Owner, dashboard_id: DashboardId) -> None:
    """Revoke the dashboard's share link at once (nothing to do when it has none)."""
    await service.unshare_dashboard(db, owner, dashboard_id)


_FORWARDED = ("authorization", "x-api-key")


@router.get(
    "/{dashboard_id:dashboard_id}/export",
    summary="Export as one HTML file",
    response_class=HTMLResponse,
    responses={
        200: {"content": {"text/html": {}}, "description": "A self-contained HTML file"},
        **problem_responses(404, 503),
    },
)
async def export(
    request: Request, db: Db, owner: Owner, catalog: Catalog, dashboard_id: DashboardId
) -> HTMLResponse:
    """One HTML file with plotly.js and every widget's data inside: opens offline."""
    dashboard = await service.get_dashboard(db, owner, dashboard_id)
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=request.app), base_url="http://export.internal"
    ) as client:
        # Each widget's data from its own endpoint, in-process, with the caller's credential:
        # the same code, checks and numbers as the page gets over HTTP.
        async def fetch(widget: Widget, query: list[tuple[str, str]]) -> tuple[int, Any]:
            answer = await client.get(widget.endpoint, params=tuple(query), headers=headers)
            return answer.status_code, answer.json()

        html = await dashboard_export.render(dashboard, catalog, fetch)
    slug = re.sub(r"[^a-z0-9]+", "-", dashboard.name.lower()).strip("-") or "dashboard"
    return HTMLResponse(
        html,
        headers={
            "Content-Disposition": f'attachment; filename="{slug[:60]}.html"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
