"""Movie search served by the database: the catalogue filters, a title search, sorting on a
numeric field and pagination by offset or by cursor, each page with the total.

On MongoDB these run on the `movies` indexes. FerretDB v1 (SQLite) pushes none of them down
(`explain` reports no filter/sort/limit pushdown, even for `_id` equality), so there every
query that must look at all matches (a sort, a count, a late `_id`) reads the whole
collection; the page and the total are fetched concurrently to pay that once in wall time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, get_args

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from app.db import MOVIES, Document
from app.errors import InvalidQueryError, NotFoundError
from app.models.movies_api import MovieDetail, MovieList, MovieSummary, SortField
from app.services.filters import CatalogFilter
from app.services.normalize import normalize_title

SORT_FIELDS: frozenset[str] = frozenset(get_args(SortField))
DEFAULT_SORT = "-popularity"
MAX_LIMIT = 100
# Deep offsets make the database skip (and, on FerretDB, read) ever more documents; past
# this, clients page with the cursor, whose cost does not grow with depth on MongoDB.
MAX_OFFSET = 10_000
LIST_PROJECTION: dict[str, int] = {"_id": 1, **dict.fromkeys(MovieSummary.model_fields, 1)}
DETAIL_PROJECTION: dict[str, int] = {"_id": 0, "content_hash": 0, "source": 0}


@dataclass(frozen=True, slots=True)
class MovieQuery:
    filters: CatalogFilter
    q: str | None = None
    sort: str = DEFAULT_SORT
    limit: int = 20
    offset: int = 0
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class Sort:
    field: str  # as stored; `id` sorts on `_id`, which equals it
    direction: int
    text: str

    @classmethod
    def parse(cls, text: str) -> Sort:
        raw = text.strip()
        direction = DESCENDING if raw.startswith("-") else ASCENDING
        name = raw[1:] if raw[:1] in ("-", "+") else raw
        if name not in SORT_FIELDS:
            raise InvalidQueryError(
                f"sort: unknown field {name!r}; choose from {', '.join(sorted(SORT_FIELDS))} "
                "(prefix with - for descending)"
            )
        return cls(
            field="_id" if name == "id" else name,
            direction=direction,
            text=("-" if direction == DESCENDING else "") + name,
        )

    def spec(self) -> list[tuple[str, int]]:
        # `_id` last makes the order total, so that pages neither repeat nor skip films.
        if self.field == "_id":
            return [("_id", self.direction)]
        return [(self.field, self.direction), ("_id", ASCENDING)]


def title_condition(q: str) -> dict[str, Any]:
    """Case-, accent- and punctuation-insensitive substring match on the title."""
    needle = normalize_title(q)
    if not needle:
        raise InvalidQueryError("q: give at least one letter or digit")
    # `title_normalized` holds only [a-z0-9 ], so the escaped needle is a literal search.
    return {"title_normalized": {"$regex": re.escape(needle)}}


def _fingerprint(query: dict[str, Any], sort: Sort) -> str:
    blob = json.dumps([query, sort.text], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def encode_cursor(doc: Document, sort: Sort, fingerprint: str) -> str:
    payload = {"f": fingerprint, "i": doc["_id"], "v": doc.get(sort.field)}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fingerprint: str) -> tuple[Any, int]:
    """(last sort value, last `_id`) from a cursor issued for this very query and sort."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        value, last_id, issued_for = payload["v"], payload["i"], payload["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise InvalidQueryError("cursor: malformed; use next_cursor as returned") from None
    if issued_for != fingerprint:
        raise InvalidQueryError("cursor: issued for different filters or sort; start over")
    if not isinstance(last_id, int) or isinstance(last_id, bool):
        raise InvalidQueryError("cursor: malformed; use next_cursor as returned")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise InvalidQueryError("cursor: malformed; use next_cursor as returned")
    return value, last_id


def after(sort: Sort, value: Any, last_id: int) -> dict[str, Any]:
    """Films strictly after (value, last_id) in the order of `sort.spec()`.

    MongoDB orders null (and missing) before every number, so ascending pages end with the
    numbers and descending pages end with the nulls; comparisons such as `$lt` never match
    null, hence the explicit null branches.
    """
    if sort.field == "_id":
        return {"_id": {"$gt" if sort.direction == ASCENDING else "$lt": last_id}}
    name = sort.field
    same = {name: value, "_id": {"$gt": last_id}}
    if value is None:
        if sort.direction == ASCENDING:
            return {"$or": [same, {name: {"$ne": None}}]}
        return same
    if sort.direction == ASCENDING:
        return {"$or": [{name: {"$gt": value}}, same]}
    return {"$or": [{name: {"$lt": value}}, same, {name: None}]}


async def search_movies(db: AsyncDatabase[Document], query: MovieQuery) -> MovieList:
    if query.cursor is not None and query.offset:
        raise InvalidQueryError("give either offset or cursor, not both")
    if query.offset > MAX_OFFSET:
        raise InvalidQueryError(f"offset: at most {MAX_OFFSET}; page further with the cursor")
    sort = Sort.parse(query.sort)
    base = query.filters.to_mongo()
    if query.q is not None:
        base.update(title_condition(query.q))
    fingerprint = _fingerprint(base, sort)
    page_filter = base
    if query.cursor is not None:
        value, last_id = decode_cursor(query.cursor, fingerprint)
        keyset = after(sort, value, last_id)
        page_filter = {"$and": [base, keyset]} if base else keyset
    cursor = (
        db[MOVIES]
        .find(page_filter, LIST_PROJECTION)
        .sort(sort.spec())
        .skip(query.offset)
        .limit(query.limit + 1)  # one more tells whether a next page exists
    )
    docs, total = await asyncio.gather(cursor.to_list(), db[MOVIES].count_documents(base))
    more = len(docs) > query.limit
    docs = docs[: query.limit]
    return MovieList(
        items=[MovieSummary.model_validate({"id": d["_id"], **d}) for d in docs],
        total=total,
        limit=query.limit,
        offset=query.offset,
        sort=sort.text,
        next_cursor=encode_cursor(docs[-1], sort, fingerprint) if more and docs else None,
    )


async def get_movie(db: AsyncDatabase[Document], movie_id: int) -> MovieDetail:
    doc = await db[MOVIES].find_one({"_id": movie_id}, DETAIL_PROJECTION)
    if doc is None:
        raise NotFoundError(f"movie {movie_id} not found")
    return MovieDetail.model_validate({"id": movie_id, **doc})
