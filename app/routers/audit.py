"""`GET /v1/audit`: the audit log, newest first, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Query

from app.deps import State
from app.errors import problem_responses
from app.models.accounts import AuditEntry, AuditPage
from app.routers.json_body import json_router
from app.services import audit

router = json_router(prefix="/v1/audit", tags=["admin"])


@router.get(
    "",
    summary="The audit log",
    response_model=AuditPage,
    responses=problem_responses(400, 422, 503),
)
async def list_audit(
    state: State,
    actor: Annotated[
        str | None,
        Query(max_length=200, description="Exactly: `user:alice`, `key:3f9c2a7b1d04`, ..."),
    ] = None,
    action: Annotated[
        str | None, Query(max_length=100, description="Exactly, e.g. `auth.login`")
    ] = None,
    outcome: Annotated[Literal["success", "failure"] | None, Query()] = None,
    since: Annotated[
        datetime | None, Query(description="From this time (inclusive; ISO 8601, UTC if naive)")
    ] = None,
    until: Annotated[datetime | None, Query(description="Before this time (exclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE, description="Page size")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page")
    ] = None,
) -> AuditPage:
    """Who did what, when, from where, and how it ended: logins, user and key changes, password
    changes, token revocations, model activations, imports and ingests. Newest first; page
    with `next_cursor` (bound to the filters)."""
    query = audit.AuditQuery(
        action=action,
        actor=actor,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    docs, next_cursor = await audit.list_entries(state.db, query, state.settings.cursor_keys)
    return AuditPage(items=[AuditEntry.of(d) for d in docs], next_cursor=next_cursor)
