"""Every collection's indexes, created where missing (at startup, and by tests and benches on
a fresh database)."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase

from app.db import (
    INGEST_RUN_INDEXES,
    INGEST_RUNS,
    Document,
    absent_indexes,
    create_missing_indexes,
)
from app.services.movies_repo import index_movies, movies_lack_indexes


async def missing_indexes(db: AsyncDatabase[Document]) -> bool:
    """Whether any collection lacks one of its indexes (read-only: listIndexes only)."""
    return await movies_lack_indexes(db) or bool(
        await absent_indexes(db, INGEST_RUNS, INGEST_RUN_INDEXES)
    )


async def ensure_indexes(db: AsyncDatabase[Document]) -> None:
    """Create every missing index, one at a time."""
    await index_movies(db)
    await create_missing_indexes(db, INGEST_RUNS, INGEST_RUN_INDEXES)
