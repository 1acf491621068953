"""Movie search: the catalogue filters, a title search, sorting on a numeric field and
pagination by offset or by cursor, each page with the total.

A query is validated once (`prepare`) and then answered by either backend, with the same
order, totals and cursors:

- the database (`search_movies`), on the `movies` indexes: the path on MongoDB;
- the analytics snapshot (`app.services.movies_snapshot`): the path on FerretDB v1 (SQLite),
  which pushes no filter, sort or limit down (`explain` says so), so that every page there
  would read the whole collection, about 1 s per page at 3.8k films.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, get_args

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.errors import InvalidQueryError, NotFoundError
from app.models.movies_api import MovieDetail, MovieList, MovieSummary, SortField
from app.services import signed_cursor
from app.services.filters import CatalogFilter
from app.services.movies_repo import find_movie, find_page
from app.services.normalize import normalize_title

SORT_FIELDS: frozenset[str] = frozenset(get_args(SortField))
# Stored as integers; cursors carry them as integers whichever backend answered.
INTEGER_SORT_FIELDS = frozenset({"id", "budget", "revenue", "profit", "vote_count", "release_year"})
DEFAULT_SORT = "-popularity"
MAX_LIMIT = 100
# Deep offsets make the database skip (and, on FerretDB, read) ever more documents; past
# this, clients page with the cursor, whose cost does not grow with depth on MongoDB.
MAX_OFFSET = 10_000
# BSON stores integers in 64 bits; a larger one in a query is an error, not a miss.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LIST_PROJECTION: dict[str, int] = {"_id": 0, **dict.fromkeys(MovieSummary.model_fields, 1)}
DETAIL_PROJECTION: dict[str, int] = {"_id": 0, "content_hash": 0, "source": 0}
SortValue = int | float | None


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
    field: str  # a stored field; ties are broken by `id`, ascending
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
            field=name, direction=direction, text=("-" if direction == DESCENDING else "") + name
        )

    @property
    def descending(self) -> bool:
        return self.direction == DESCENDING

    def spec(self) -> list[tuple[str, int]]:
        # `id` last makes the order total, so that pages neither repeat nor skip films.
        if self.field == "id":
            return [("id", self.direction)]
        return [(self.field, self.direction), ("id", ASCENDING)]


@dataclass(frozen=True, slots=True)
class PreparedSearch:
    """A validated query, hashable (the snapshot backend caches answers by it)."""

    filters: CatalogFilter
    needle: str | None  # normalized title text
    sort: Sort
    limit: int
    offset: int
    # (sort value, id) of the last film of the previous page, from the cursor.
    after: tuple[SortValue, int] | None
    fingerprint: str
    cursor_key: bytes = field(repr=False)  # signs the next page's cursor

    def mongo_filter(self) -> dict[str, Any]:
        query = self.filters.to_mongo()
        if self.needle is not None:
            # `title_normalized` holds only [a-z0-9 ], so the escaped needle is a literal.
            query["title_normalized"] = {"$regex": re.escape(self.needle)}
        return query


def title_needle(q: str) -> str:
    """Case-, accent- and punctuation-insensitive form of a title search."""
    needle = normalize_title(q)
    if not needle:
        raise InvalidQueryError("q: give at least one letter or digit")
    return needle


def _fingerprint(filters: CatalogFilter, needle: str | None, sort: Sort) -> str:
    blob = json.dumps([filters.echo(), needle, sort.text], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cursor_value(field: str, value: Any) -> SortValue:
    """A sort value as a cursor carries it: integers for integer fields, on either backend."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if field in INTEGER_SORT_FIELDS:
        return int(value)
    return float(value)


def encode_cursor(movie_id: int, value: SortValue, fingerprint: str, key: bytes) -> str:
    """A signed cursor (`app.services.signed_cursor`): clients can read it but not forge it."""
    return signed_cursor.encode({"f": fingerprint, "i": movie_id, "v": value}, key)


def decode_cursor(
    cursor: str, fingerprint: str, sort_field: str, keys: signed_cursor.Keys
) -> tuple[SortValue, int]:
    """(last sort value, last id) from a cursor this service signed (with one of `keys`) for
    this very query.

    Anything else (unsigned, tampered, signed by another key, out of range) is a 400: the
    values end up in a database query, where e.g. an integer beyond 64 bits is a server error.
    """
    malformed = InvalidQueryError("cursor: invalid; use next_cursor as returned, or start over")
    try:
        data = signed_cursor.decode(cursor, keys)
    except ValueError:
        raise malformed from None
    if not isinstance(data, dict) or data.keys() != {"f", "i", "v"}:
        raise malformed
    if data["f"] != fingerprint:
        raise InvalidQueryError("cursor: issued for different filters or sort; start over")
    last_id, value = data["i"], data["v"]
    if not _is_int64(last_id) or last_id < 1:
        raise malformed
    if value is not None:
        if sort_field in INTEGER_SORT_FIELDS:
            valid = _is_int64(value)
        else:
            valid = isinstance(value, float) and math.isfinite(value)
        if not valid:
            raise malformed
    return value, last_id


def _is_int64(value: object) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def prepare(query: MovieQuery, cursor_keys: signed_cursor.Keys) -> PreparedSearch:
    """Validate a query; raises `InvalidQueryError` naming the parameter. The first of
    `cursor_keys` signs cursors, any checks them (`Settings.cursor_keys`)."""
    if query.cursor is not None and query.offset:
        raise InvalidQueryError("give either offset or cursor, not both")
    if query.offset > MAX_OFFSET:
        raise InvalidQueryError(f"offset: at most {MAX_OFFSET}; page further with the cursor")
    sort = Sort.parse(query.sort)
    needle = title_needle(query.q) if query.q is not None else None
    fingerprint = _fingerprint(query.filters, needle, sort)
    after = None
    if query.cursor is not None:
        after = decode_cursor(query.cursor, fingerprint, sort.field, cursor_keys)
    return PreparedSearch(
        filters=query.filters,
        needle=needle,
        sort=sort,
        limit=query.limit,
        offset=query.offset,
        after=after,
        fingerprint=fingerprint,
        cursor_key=cursor_keys if isinstance(cursor_keys, bytes) else cursor_keys[0],
    )


def after(sort: Sort, value: SortValue, last_id: int) -> dict[str, Any]:
    """Films strictly after (value, last_id) in the order of `sort.spec()`.

    MongoDB orders null (and missing) before every number, so ascending pages end with the
    numbers and descending pages end with the nulls; comparisons such as `$lt` never match
    null, hence the explicit null branches.
    """
    if sort.field == "id":
        return {"id": {"$lt" if sort.descending else "$gt": last_id}}
    name = sort.field
    same = {name: value, "id": {"$gt": last_id}}
    if value is None:
        if not sort.descending:
            return {"$or": [same, {name: {"$ne": None}}]}
        return same
    if not sort.descending:
        return {"$or": [{name: {"$gt": value}}, same]}
    return {"$or": [{name: {"$lt": value}}, same, {name: None}]}


def page_of(search: PreparedSearch, films: list[MovieSummary], total: int) -> MovieList:
    """The response for `films`: up to limit + 1 films in order (one more says a page follows)."""
    more = len(films) > search.limit
    films = films[: search.limit]
    next_cursor = None
    if more and films:
        last = films[-1]
        value = cursor_value(search.sort.field, getattr(last, search.sort.field))
        next_cursor = encode_cursor(last.id, value, search.fingerprint, search.cursor_key)
    return MovieList(
        items=films,
        total=total,
        limit=search.limit,
        offset=search.offset,
        sort=search.sort.text,
        next_cursor=next_cursor,
    )


async def search_movies(db: AsyncDatabase[Document], search: PreparedSearch) -> MovieList:
    """One page from the database, on the `movies` indexes."""
    base = search.mongo_filter()
    page_filter = base
    if search.after is not None:
        keyset = after(search.sort, *search.after)
        page_filter = {"$and": [base, keyset]} if base else keyset
    docs, total = await find_page(
        db,
        page_filter,
        base,
        LIST_PROJECTION,
        search.sort.spec(),
        search.offset,
        search.limit + 1,  # one more tells whether a next page exists
    )
    return page_of(search, [MovieSummary.model_validate(d) for d in docs], total)


async def get_movie(db: AsyncDatabase[Document], movie_id: int) -> MovieDetail:
    # By `_id` (the id as a string): the one lookup FerretDB v1 pushes down to SQLite.
    doc = await find_movie(db, movie_id, DETAIL_PROJECTION)
    if doc is None:
        raise NotFoundError(f"movie {movie_id} not found")
    return MovieDetail.model_validate({"id": movie_id, **doc})
