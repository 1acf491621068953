"""How the read endpoints answer: JSON or CSV, with an entity tag, and 304 to a client that
holds the current answer already (see `app.http_cache`).

`Answer` is the dependency a route takes; `await answer(compute, *args)` answers from the
analytics snapshot. The tag is decided on the snapshot's version before anything is computed
or serialized, so a conditional GET that hits costs a digest and an empty response.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.types import Scope

from app.conditional_memo import MEMO_ENTRY, ConditionalMemo
from app.deps import State
from app.errors import problem_responses
from app.http_cache import (
    CSV_MEDIA_TYPE,
    JSON_TYPE,
    VARY,
    Format,
    attachment,
    cache_headers,
    entity_tag,
    negotiate,
    none_match,
    not_modified,
)
from app.services.analytics import Result
from app.services.analytics.engine import AnalyticsEngine, Render, to_json
from app.services.tabular import to_csv
from app.settings import Settings

RENDERERS: dict[Format, Render] = {"json": to_json, "csv": to_csv}

ANALYTICS_HEADERS: dict[str, dict[str, Any]] = {
    "X-Data-Version": {
        "description": "Catalogue version the answer was computed on",
        "schema": {"type": "integer"},
    },
    "X-Analytics-Cache": {
        "description": "`hit` when served from the result cache, else `miss`",
        "schema": {"type": "string"},
    },
    "X-Data-Stale": {
        "description": "`true` while the database is unreachable and the answer comes from "
        "the last snapshot taken",
        "schema": {"type": "string"},
    },
}
CACHE_HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": "Tag of this answer (data version, query, representation); send it "
        "back in `If-None-Match` to get 304 while it is current",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`private, max-age=N, must-revalidate` (N: `HTTP_CACHE_SECONDS`)",
        "schema": {"type": "string"},
    },
    "Vary": {"description": VARY, "schema": {"type": "string"}},
    "Content-Disposition": {
        "description": 'CSV only: `attachment; filename="<name>-v<version>.csv"`',
        "schema": {"type": "string"},
    },
}


def read_responses(headers: dict[str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a read endpoint: JSON or CSV, 304, and its errors."""
    return {
        200: {
            "headers": {**headers, **CACHE_HEADERS},
            "content": {
                "text/csv": {
                    "schema": {"type": "string"},
                    "example": "genre,count,revenue_n,revenue_mean\r\nDrama,1795,1041,5.0e7\r\n",
                }
            },
        },
        304: {
            "description": "Not Modified: the tag in `If-None-Match` is current (no body)",
            "headers": CACHE_HEADERS,
        },
        **problem_responses(400, 406, 422, 503),
    }


@dataclass(frozen=True, slots=True)
class Answer:
    """What a read endpoint needs to answer one request."""

    format: Format
    if_none_match: str | None
    settings: Settings
    engine: AnalyticsEngine
    memo: ConditionalMemo
    scope: Scope
    name: str  # the download's base name: the last segment of the path

    def headers(self, tag: str, version: int) -> dict[str, str]:
        headers = cache_headers(tag, self.settings.http_cache_seconds)
        headers["X-Data-Version"] = str(version)
        return headers

    def body(self, content: bytes, headers: dict[str, str], version: int) -> Response:
        if self.format == "csv":
            headers["Content-Disposition"] = attachment(f"{self.name}-v{version}.csv")
            return Response(content, media_type=CSV_MEDIA_TYPE, headers=headers)
        return Response(content, media_type=JSON_TYPE, headers=headers)

    def render(self, answer: BaseModel) -> bytes:
        return RENDERERS[self.format](answer)

    async def __call__(
        self,
        compute: Callable[..., BaseModel],
        *args: Hashable,
        salt: str = "",
        extra_headers: dict[str, str] | None = None,
    ) -> Response:
        """`compute(snapshot, *args)` from the analytics engine, or 304. `salt`: anything
        else the bytes depend on (e.g. the key signing search cursors)."""
        snap = await self.engine.snapshot()
        key = (compute.__module__, compute.__qualname__, args, salt)
        tag = entity_tag(snap.version, self.format, *key)
        headers = self.headers(tag, snap.version) | (extra_headers or {})
        # What a 304 of this very query sends, for the next one, answered before routing.
        not_modified_headers = dict(headers)
        if self.engine.stale:
            headers["X-Data-Stale"] = "true"
        if none_match(self.if_none_match, tag):
            self.memo.remember(self.scope, tag, snap.build_id, not_modified_headers)
            return not_modified(headers)
        result: Result = await self.engine.run(
            compute, *args, snap=snap, render=RENDERERS[self.format]
        )
        entry = self.memo.remember(self.scope, tag, snap.build_id, not_modified_headers)
        # The middleware keeps this 200's bytes in the entry, to send them again before routing.
        self.scope.setdefault("state", {})[MEMO_ENTRY] = entry
        headers["X-Analytics-Cache"] = "hit" if result.cache_hit else "miss"
        if result.stale:
            headers["X-Data-Stale"] = "true"
        return self.body(result.body, headers, result.data_version)

    async def from_database(
        self, version: int, key: tuple[Hashable, ...], fetch: Callable[[], Awaitable[BaseModel]]
    ) -> Response:
        """An answer read from the database at data version `version` (read before the
        query: a write landing in between gives the answer a tag older than its data,
        so the client only refetches once more), or 304."""
        tag = entity_tag(version, self.format, *key)
        headers = self.headers(tag, version)
        if none_match(self.if_none_match, tag):
            return not_modified(headers)
        return self.body(self.render(await fetch()), headers, version)


async def answer(
    request: Request,
    state: State,
    requested: Annotated[
        Literal["json", "csv"] | None,
        Query(
            alias="format",
            description="`csv` for a CSV download (as with `Accept: text/csv`); default: by "
            "`Accept`, else JSON. Overrides `Accept`.",
        ),
    ] = None,
    if_none_match: Annotated[
        str | None,
        Header(
            alias="If-None-Match",
            max_length=2000,
            description="The `ETag` of the answer held; 304 while it is current",
        ),
    ] = None,
) -> Answer:
    return Answer(
        format=negotiate(request.headers.get("accept"), requested),
        if_none_match=if_none_match,
        settings=state.settings,
        engine=state.analytics,
        memo=state.conditional,
        scope=request.scope,
        name=str(request.scope["path"]).rstrip("/").rsplit("/", 1)[-1] or "answer",
    )


Answerer = Annotated[Answer, Depends(answer)]
