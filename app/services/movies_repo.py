"""`movies` (one document per film) and its staging copy: the only module that reads or writes
them. What to write and when (hashes, the write lock, rewrites) is decided by the services
that call it (`movies_store`, `movies_rewrite`); this module only speaks to the database.

A film's `_id` is its TMDB id as a string (`movie_key`): FerretDB v1 (SQLite) pushes `_id`
equality down to SQLite only for a string `_id` (about 10x faster lookups and updates); the
integer `id` field stays the public id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING, IndexModel, UpdateOne
from pymongo.asynchronous.cursor import AsyncCursor, AsyncRawBatchCursor
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document, absent_indexes, create_missing_indexes, is_ferretdb

MOVIES = "movies"
STAGING = "movies_staging"

# Films read by id at once: `_id` lookups in flight on FerretDB, ids per `$in` on MongoDB.
LOOKUPS_IN_FLIGHT = 8
IDS_PER_QUERY = 1000

MOVIE_INDEXES = [
    IndexModel([("id", ASCENDING)], name="id_unique", unique=True),
    IndexModel([("release_year", ASCENDING)], name="release_year"),
    IndexModel([("genres", ASCENDING)], name="genres"),
    IndexModel([("original_language", ASCENDING)], name="original_language"),
    IndexModel([("production_companies", ASCENDING)], name="production_companies"),
    IndexModel([("vote_count", DESCENDING)], name="vote_count"),
    IndexModel([("revenue", DESCENDING)], name="revenue"),
    IndexModel([("popularity", DESCENDING)], name="popularity"),
    IndexModel([("title_normalized", ASCENDING)], name="title_normalized"),
]

Projection = Mapping[str, Any]


def movie_key(movie_id: int) -> str:
    """The `_id` of a film: its TMDB id as a string."""
    return str(movie_id)


# --- reads ----------------------------------------------------------------------------------


async def find_movie(
    db: AsyncDatabase[Document], movie_id: int, projection: Projection
) -> Document | None:
    """One film by `_id`: indexed on MongoDB, the one lookup FerretDB pushes down to SQLite."""
    return await db[MOVIES].find_one({"_id": movie_key(movie_id)}, projection)


async def find_movies(
    db: AsyncDatabase[Document], movie_ids: Collection[int], projection: Projection
) -> list[Document]:
    """The stored films among `movie_ids` (any order; absent ones are left out). On FerretDB
    one `_id` lookup each, a few in flight (it evaluates `$in` by reading every film; an
    `_id` equality goes to SQLite, an index seek with the patched build); on MongoDB `$in`
    queries on the `_id` index."""
    keys = [movie_key(i) for i in movie_ids]
    if not await is_ferretdb(db):
        found: list[Document] = []
        for start in range(0, len(keys), IDS_PER_QUERY):
            query = {"_id": {"$in": keys[start : start + IDS_PER_QUERY]}}
            found.extend(await db[MOVIES].find(query, projection).to_list())
        return found
    slots = asyncio.Semaphore(LOOKUPS_IN_FLIGHT)

    async def one(key: str) -> Document | None:
        async with slots:
            return await db[MOVIES].find_one({"_id": key}, projection)

    docs = await asyncio.gather(*(one(k) for k in keys))
    return [d for d in docs if d is not None]


async def find_page(
    db: AsyncDatabase[Document],
    page_filter: Document,
    count_filter: Document,
    projection: Projection,
    sort: list[tuple[str, int]],
    skip: int,
    limit: int,
) -> tuple[list[Document], int]:
    """One page of films and how many match `count_filter`, read concurrently: FerretDB reads
    the whole collection for each, so wall time pays it once."""
    cursor = db[MOVIES].find(page_filter, projection).sort(sort).skip(skip).limit(limit)
    docs, total = await asyncio.gather(cursor.to_list(), db[MOVIES].count_documents(count_filter))
    return docs, total


def scan(
    db: AsyncDatabase[Document],
    projection: Projection | None,
    query: Document | None = None,
    *,
    sort: str | None = None,
    batch_size: int = 0,
) -> AsyncCursor[Document]:
    """Every film (matching `query`) with `projection` (None: whole documents), in natural
    order or ascending by field `sort`."""
    cursor = db[MOVIES].find(query or {}, projection, batch_size=batch_size)
    return cursor.sort(sort, ASCENDING) if sort else cursor


def scan_raw_batches(
    db: AsyncDatabase[Document], projection: Projection
) -> AsyncRawBatchCursor[Document]:
    """Every film with `projection`, as raw BSON batches (the caller closes the cursor)."""
    return db[MOVIES].find_raw_batches({}, projection)


async def estimated_count(db: AsyncDatabase[Document]) -> int:
    """How many films are stored, from the collection's metadata (no scan)."""
    return int(await db[MOVIES].estimated_document_count())


async def content_hash_of(db: AsyncDatabase[Document], movie_id: int) -> tuple[bool, str | None]:
    """(whether the film is stored, its stored content hash)."""
    doc = await db[MOVIES].find_one({"_id": movie_key(movie_id)}, {"content_hash": 1})
    return (False, None) if doc is None else (True, doc.get("content_hash"))


async def first_key(db: AsyncDatabase[Document]) -> Any:
    """The `_id` of one film in natural order (None when there are none). FerretDB pushes
    this limit down to SQLite."""
    doc = await db[MOVIES].find_one({}, {"_id": 1})
    return None if doc is None else doc["_id"]


# --- writes ---------------------------------------------------------------------------------


async def insert_movies(db: AsyncDatabase[Document], docs: Sequence[Document]) -> None:
    """Insert new films, unordered (a `BulkWriteError` names the ones already stored)."""
    await db[MOVIES].insert_many(docs, ordered=False)


def _set_fields(movie_id: int, fields: Document) -> Document:
    """The update document: `$set` the fields; a film created by the upsert gets its `id`."""
    if "id" in fields:
        return {"$set": fields}
    return {"$set": fields, "$setOnInsert": {"id": movie_id}}


async def update_in_bulk(db: AsyncDatabase[Document], updates: Mapping[int, Document]) -> None:
    """`$set` fields on films by id in one unordered bulk write (missing films are created)."""
    ops = [
        UpdateOne({"_id": movie_key(i)}, _set_fields(i, f), upsert=True) for i, f in updates.items()
    ]
    await db[MOVIES].bulk_write(ops, ordered=False)


async def update_one_by_one(db: AsyncDatabase[Document], updates: Mapping[int, Document]) -> None:
    """`$set` fields on films by id, one update each (missing films are created)."""
    for movie_id, fields in updates.items():
        await db[MOVIES].update_one(
            {"_id": movie_key(movie_id)}, _set_fields(movie_id, fields), upsert=True
        )


async def delete_movies(db: AsyncDatabase[Document], movie_ids: Collection[int]) -> int:
    """Delete films by id; returns how many were stored. FerretDB: one `_id` delete each for
    a few (an index seek with the patched build), else one `$in` (one pass over the films)."""
    keys = [movie_key(i) for i in movie_ids]
    if await is_ferretdb(db) and len(keys) <= LOOKUPS_IN_FLIGHT * 4:
        deleted = 0
        for key in keys:
            deleted += (await db[MOVIES].delete_one({"_id": key})).deleted_count
        return deleted
    return (await db[MOVIES].delete_many({"_id": {"$in": keys}})).deleted_count


async def index_movies(db: AsyncDatabase[Document]) -> None:
    await create_missing_indexes(db, MOVIES, MOVIE_INDEXES)


async def movies_lack_indexes(db: AsyncDatabase[Document]) -> bool:
    """Whether `movies` lacks one of its indexes (read-only: listIndexes only)."""
    return bool(await absent_indexes(db, MOVIES, MOVIE_INDEXES))


# --- the staging copy (a rewrite of the whole collection) -----------------------------------


async def drop_staging(db: AsyncDatabase[Document]) -> None:
    await db.drop_collection(STAGING)


async def insert_staging(db: AsyncDatabase[Document], docs: Sequence[Document]) -> None:
    await db[STAGING].insert_many(docs)


async def index_staging(db: AsyncDatabase[Document]) -> None:
    """Give the staging copy every index of `movies` (before it is swapped in)."""
    await create_missing_indexes(db, STAGING, MOVIE_INDEXES)


async def staging_exists(db: AsyncDatabase[Document]) -> bool:
    return STAGING in await db.list_collection_names()


async def replace_with_staging(db: AsyncDatabase[Document]) -> None:
    """`movies` becomes the staging copy (no transactions on FerretDB: drop, then rename)."""
    await db.drop_collection(MOVIES)
    await db[STAGING].rename(MOVIES)
