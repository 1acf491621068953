"""Saved dashboards: the only module that reads or writes `dashboards` and `dashboard_shares`.

* `dashboards`: `_id` a random hex string (FerretDB pushes down only string `_id` equality),
  `owner` (opaque: `user:<name>`, `key:<key id>` or `admin-key`), `name`, `widgets`,
  `filters`, `version`, `created_at`, `updated_at`, and `share_token` while shared.
* `dashboard_shares`: `_id` the share token, `dashboard_id`: finds a shared dashboard with
  one `_id` lookup per collection.

Every read and write of a dashboard is filtered by its owner, and anything that is not the
caller's answers 404, exactly as if it did not exist. There are no transactions (FerretDB v1
has none): a replace is one conditional `update_one` on (`_id`, `owner`, `version`), which is
the optimistic concurrency check, and the two-collection share is written so that a crash
between its two writes leaves at worst an unusable share record (a share works only while the
dashboard names the same token).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from app.db import Document
from app.errors import ConflictError, DomainError, NotFoundError
from app.models.dashboards import (
    MAX_DASHBOARDS_PER_OWNER,
    Dashboard,
    DashboardIn,
    DashboardSummary,
    SharedDashboard,
    ShareLink,
    Widget,
)
from app.services.widget_catalog import FieldProblem, InvalidDashboardError, WidgetCatalog

DASHBOARDS = "dashboards"
SHARES = "dashboard_shares"
SHARE_PAGE = "/ui/shared/"
SHARE_API = "/v1/dashboards/shared/"
_INDEXED: set[tuple[int, str]] = set()


class PreconditionFailedError(DomainError):
    status = 412
    title = "Precondition Failed"


class PreconditionRequiredError(DomainError):
    status = 428
    title = "Precondition Required"


async def _ensure_indexes(db: AsyncDatabase[Document]) -> None:
    key = (id(db.client), db.name)
    if key in _INDEXED:
        return
    await db[DASHBOARDS].create_indexes(
        [IndexModel([("owner", ASCENDING), ("updated_at", DESCENDING)], name="owner_updated")]
    )
    _INDEXED.add(key)


# --- documents <-> models ------------------------------------------------------------------


def _share(doc: Document) -> ShareLink | None:
    token = doc.get("share_token")
    if not token:
        return None
    return ShareLink(
        token=token,
        url=SHARE_PAGE + token,
        api_url=SHARE_API + token,
        created_at=doc.get("shared_at") or doc["updated_at"],
    )


def _dashboard(doc: Document) -> Dashboard:
    return Dashboard(
        id=doc["_id"],
        name=doc["name"],
        widgets=[Widget.model_validate(w) for w in doc.get("widgets", [])],
        filters=doc.get("filters") or {},
        version=doc["version"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
        share=_share(doc),
    )


def _content(spec: DashboardIn, catalog: WidgetCatalog) -> dict[str, Any]:
    """The stored fields of a dashboard, validated: widgets with their parameters and
    measures made explicit, filters normalized. Keys come only from validated names, so no
    stored key can contain `.` or start with `$`."""
    name = spec.name.strip()
    if not name:
        raise InvalidDashboardError(
            [
                FieldProblem(
                    field="name", loc=["body", "name"], msg="must not be blank", type="value_error"
                )
            ]
        )
    widgets, filters = catalog.validate(spec.widgets, spec.filters)
    return {
        "name": name,
        "widgets": [w.model_dump(mode="json") for w in widgets],
        "filters": filters,
    }


# --- owner operations ----------------------------------------------------------------------


async def create_dashboard(
    db: AsyncDatabase[Document],
    owner: str,
    spec: DashboardIn,
    catalog: WidgetCatalog,
    *,
    dashboard_id: str | None = None,
) -> Dashboard:
    """Store a new dashboard (version 1). 409 past the per-owner limit."""
    content = _content(spec, catalog)
    await _ensure_indexes(db)
    if await db[DASHBOARDS].count_documents({"owner": owner}) >= MAX_DASHBOARDS_PER_OWNER:
        raise _too_many()
    now = _now()
    doc: Document = {
        "_id": dashboard_id or secrets.token_hex(12),
        "owner": owner,
        **content,
        "version": 1,
        "created_at": now,
        "updated_at": now,
    }
    await db[DASHBOARDS].insert_one(doc)
    # Counted again after the insert: two concurrent creates cannot both slip under the limit.
    if await db[DASHBOARDS].count_documents({"owner": owner}) > MAX_DASHBOARDS_PER_OWNER:
        await db[DASHBOARDS].delete_one({"_id": doc["_id"], "owner": owner})
        raise _too_many()
    return _dashboard(doc)


def _too_many() -> ConflictError:
    return ConflictError(
        f"at most {MAX_DASHBOARDS_PER_OWNER} dashboards per owner; delete one first"
    )


async def create_default_dashboard(
    db: AsyncDatabase[Document], owner: str, catalog: WidgetCatalog
) -> Dashboard | None:
    """The starter dashboard, when the owner has none; None when they already have some.
    Its id is derived from the owner, so two first visits at once create it only once."""
    if await db[DASHBOARDS].count_documents({"owner": owner}, limit=1):
        return None
    digest = hashlib.sha256(f"default-dashboard:{owner}".encode()).hexdigest()[:24]
    try:
        return await create_dashboard(db, owner, default_dashboard(), catalog, dashboard_id=digest)
    except DuplicateKeyError:
        return None


async def list_dashboards(db: AsyncDatabase[Document], owner: str) -> list[DashboardSummary]:
    projection = {"name": 1, "widgets": 1, "version": 1, "updated_at": 1, "share_token": 1}
    cursor = db[DASHBOARDS].find({"owner": owner}, projection)
    docs = [d async for d in cursor]
    docs.sort(key=lambda d: (d["updated_at"], d["_id"]), reverse=True)
    return [
        DashboardSummary(
            id=d["_id"],
            name=d["name"],
            widgets=len(d.get("widgets", [])),
            version=d["version"],
            updated_at=d["updated_at"],
            shared=bool(d.get("share_token")),
        )
        for d in docs
    ]


async def _owned(db: AsyncDatabase[Document], owner: str, dashboard_id: str) -> Document:
    doc = await db[DASHBOARDS].find_one({"_id": dashboard_id})
    if doc is None or doc.get("owner") != owner:
        raise NotFoundError(f"dashboard {dashboard_id!r} not found")
    return doc


async def get_dashboard(db: AsyncDatabase[Document], owner: str, dashboard_id: str) -> Dashboard:
    return _dashboard(await _owned(db, owner, dashboard_id))


def parse_if_match(header: str | None) -> list[int]:
    """The versions an `If-Match` header names (`"3"`, `W/"3"`, `3`, comma-separated).
    428 when missing; `*` is refused too, since it would skip the very check it is for."""
    if header is None or not header.strip():
        raise PreconditionRequiredError(
            'send If-Match with the dashboard\'s current ETag (its version), e.g. If-Match: "3"'
        )
    versions: list[int] = []
    for part in header.split(","):
        tag = part.strip().removeprefix("W/").strip('"')
        if tag == "*":
            raise PreconditionRequiredError("If-Match: * is not accepted; name the version")
        if tag.isdigit() and len(tag) < 12:
            versions.append(int(tag))
    return versions


async def replace_dashboard(
    db: AsyncDatabase[Document],
    owner: str,
    dashboard_id: str,
    spec: DashboardIn,
    if_match: str | None,
    catalog: WidgetCatalog,
) -> Dashboard:
    """Replace name, widgets and filters when the caller has seen the current version."""
    versions = parse_if_match(if_match)
    content = _content(spec, catalog)
    now = _now()
    for version in versions:
        result = await db[DASHBOARDS].update_one(
            {"_id": dashboard_id, "owner": owner, "version": version},
            {"$set": {**content, "updated_at": now}, "$inc": {"version": 1}},
        )
        if result.matched_count:
            return await get_dashboard(db, owner, dashboard_id)
    current = await _owned(db, owner, dashboard_id)  # 404 before 412: exists only for its owner
    raise PreconditionFailedError(
        f"the dashboard changed since you read it: it is at version {current['version']}; "
        "reload it and apply your change again",
        headers={"ETag": etag(current["version"])},
    )


async def delete_dashboard(
    db: AsyncDatabase[Document], owner: str, dashboard_id: str, if_match: str | None = None
) -> None:
    """Delete it (and its share link). `If-Match` is optional here; when sent, it must match."""
    query: dict[str, Any] = {"_id": dashboard_id, "owner": owner}
    if if_match is not None:
        query["version"] = {"$in": parse_if_match(if_match)}
    doc = await db[DASHBOARDS].find_one_and_delete(query)
    if doc is None:
        current = await _owned(db, owner, dashboard_id)
        raise PreconditionFailedError(
            f"the dashboard is at version {current['version']}",
            headers={"ETag": etag(current["version"])},
        )
    await db[SHARES].delete_many({"dashboard_id": dashboard_id})


def _now() -> datetime:
    """Now, at the millisecond precision BSON stores, so answers match what is read back."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def etag(version: int) -> str:
    return f'"{version}"'


# --- share links ---------------------------------------------------------------------------


async def share_dashboard(
    db: AsyncDatabase[Document], owner: str, dashboard_id: str
) -> tuple[ShareLink, bool]:
    """The dashboard's read-only link, made if it has none; (link, created)."""
    doc = await _owned(db, owner, dashboard_id)
    existing = _share(doc)
    if existing is not None:
        return existing, False
    token = secrets.token_urlsafe(32)
    now = _now()
    # The share record first: it works only once the dashboard names the token too.
    await db[SHARES].insert_one({"_id": token, "dashboard_id": dashboard_id, "created_at": now})
    result = await db[DASHBOARDS].update_one(
        {"_id": dashboard_id, "owner": owner, "share_token": None},
        {"$set": {"share_token": token, "shared_at": now}},
    )
    if not result.matched_count:
        # Shared meanwhile by another request, or deleted: keep whatever won.
        await db[SHARES].delete_one({"_id": token})
        doc = await _owned(db, owner, dashboard_id)
        link = _share(doc)
        if link is None:
            raise ConflictError("the dashboard changed while it was being shared; try again")
        return link, False
    link = _share({**doc, "share_token": token, "shared_at": now})
    assert link is not None
    return link, True


async def unshare_dashboard(db: AsyncDatabase[Document], owner: str, dashboard_id: str) -> None:
    """Revoke the link (idempotent). The dashboard forgets the token first, which already
    makes the link dead; the share record is removed after."""
    await _owned(db, owner, dashboard_id)
    await db[DASHBOARDS].update_one(
        {"_id": dashboard_id, "owner": owner}, {"$set": {"share_token": None, "shared_at": None}}
    )
    await db[SHARES].delete_many({"dashboard_id": dashboard_id})


async def get_shared(db: AsyncDatabase[Document], token: str) -> SharedDashboard:
    missing = NotFoundError("no dashboard is shared under this link (it may have been revoked)")
    if not 20 <= len(token) <= 100:
        raise missing
    share = await db[SHARES].find_one({"_id": token})
    if share is None:
        raise missing
    doc = await db[DASHBOARDS].find_one({"_id": share["dashboard_id"]})
    if doc is None or doc.get("share_token") != token:
        raise missing
    dashboard = _dashboard(doc)
    return SharedDashboard(
        name=dashboard.name,
        widgets=dashboard.widgets,
        filters=dashboard.filters,
        version=dashboard.version,
        updated_at=dashboard.updated_at,
    )


# --- the starter dashboard -----------------------------------------------------------------


def default_dashboard() -> DashboardIn:
    """The catalogue at a glance, for a user's first visit."""

    def widget(title: str, endpoint: str, chart: str, measures: list[str], **kw: Any) -> Widget:
        width = kw.pop("width", 1)
        return Widget.model_validate(
            {
                "title": title,
                "endpoint": endpoint,
                "chart": chart,
                "measures": measures,
                "params": kw,
                "width": width,
            }
        )

    return DashboardIn(
        name="The catalogue at a glance",
        widgets=[
            widget("Films per genre", "/v1/analytics/genres", "bar", ["count"]),
            widget("Revenue by genre (total, USD)", "/v1/analytics/genres", "bar", ["revenue.sum"]),
            widget(
                "Releases per year", "/v1/analytics/trends", "line", ["count"], by="year", width=2
            ),
            widget(
                "Seasonality: releases by month",
                "/v1/analytics/seasonality",
                "bar",
                ["count"],
            ),
            widget(
                "Seasonality: median revenue by release month (USD)",
                "/v1/analytics/seasonality",
                "line",
                ["revenue.median"],
            ),
            widget(
                "Budget vs revenue: the 100 most popular films (USD)",
                "/v1/movies",
                "scatter",
                ["budget", "revenue"],
                sort="-popularity",
                limit=100,
                width=2,
            ),
            widget(
                "Top 10 films by revenue",
                "/v1/analytics/top",
                "table",
                ["release_year", "value"],
                metric="revenue",
                n=10,
                width=2,
            ),
        ],
    )
