"""Helpers for the persisted and incremental snapshot tests: random films from a small
vocabulary (so that labels, titles and values collide often), a strict comparison of two
snapshots array by array, and waiting for an engine to catch up with the database."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.models.movie import MovieDocument
from app.services import analytics
from app.services.analytics import AnalyticsEngine, Snapshot
from app.services.filters import CatalogFilter
from app.services.meta_repo import get_data_version
from app.services.normalize import to_movie

WORDS = ["Love", "Night", "Star", "Dark", "Île", "Café", "Été", "City", "Lost", "A", "Ünder"]
GENRES = ["Action", "Drama", "Comedy", "Horror", "Science Fiction", "Zeta", "Ärger"]
COMPANIES = ["Studio A", "Studio B", "Studio C", "Ñ Films", "Warner", "Zoo"]
PEOPLE = ["Ann", "Bob", "Cy", "Dee", "Éva", "Fay", "Gus", "Zed", "Ödön"]
LANGUAGES = ["en", "fr", "de", "ja", None]
KEYWORDS = ["heist", "space", "robot", "Überfall", "love", "war", "zombie"]


def random_film(rng: random.Random, movie_id: int) -> MovieDocument:
    """A film with random facts, unknowns included, from a small vocabulary."""
    year = rng.choice([None, 1999, 2000, 2001, 2010])
    record: dict[str, Any] = {
        "id": movie_id,
        "title": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3))),
        "release_date": None if year is None else f"{year}-{rng.randint(1, 12):02d}-01",
        "genres": rng.sample(GENRES, rng.randint(0, 3)),
        "production_companies": rng.sample(COMPANIES, rng.randint(0, 2)),
        "keywords": rng.sample(KEYWORDS, rng.randint(0, 3)),
        "original_language": rng.choice(LANGUAGES),
        "budget": rng.choice([None, 0, 1_000_000, 5_000_000, 5_000_000]),
        "revenue": rng.choice([None, 2_000_000, 5_000_000, 40_000_000]),
        "runtime": rng.choice([None, 90, 120]),
        "vote_average": rng.choice([None, 5.5, 6.1, 7.0]),
        "vote_count": rng.choice([None, 0, 10, 100]),
        "popularity": rng.choice([None, 1.5, 3.25]),
        "cast": [{"name": n, "order": i} for i, n in enumerate(rng.sample(PEOPLE, 2))],
        "crew": [{"name": rng.choice(PEOPLE), "job": "Director"}],
    }
    return to_movie(record, "tmdb-api")


def assert_same_snapshot(got: Snapshot, want: Snapshot) -> None:
    """Every column, order, grouping and the title index equal, dtypes included (an
    incremental snapshot must be the one a full read builds)."""

    def same(a: Any, b: Any, what: str) -> None:
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype, (what, a.dtype, b.dtype)
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), what
        else:
            assert a == b, what

    same(got.version, want.version, "version")
    for name in ("ids", "titles", "titles_normalized", "release_dates"):
        same(getattr(got, name), getattr(want, name), name)
    assert got.num.keys() == want.num.keys()
    for name in want.num:
        same(got.num[name], want.num[name], f"num.{name}")
        same(got.order[name], want.order[name], f"order.{name}")
    for name in ("language", "year", "decade", "year_month", "month"):
        same(getattr(got, name).codes, getattr(want, name).codes, f"{name}.codes")
        same(getattr(got, name).labels, getattr(want, name).labels, f"{name}.labels")
    for name in ("genre", "company", "director", "actor", "keyword"):
        a, b = getattr(got, name), getattr(want, name)
        for part in ("indptr", "codes", "rows", "labels"):
            same(getattr(a, part), getattr(b, part), f"{name}.{part}")
    same(got.title_index.postings, want.title_index.postings, "title_index")


def answers(snap: Snapshot) -> list[str]:
    """A few aggregates as JSON (what clients see), for comparisons across snapshots."""
    f = CatalogFilter()
    return [
        analytics.summary(snap, f).model_dump_json(),
        analytics.genres(snap, f).model_dump_json(),
        analytics.trends(snap, f, "year").model_dump_json(),
        analytics.people(snap, f, "actor", "revenue", 20, 1).model_dump_json(),
        analytics.companies(snap, f, "films", 20, 1).model_dump_json(),
        analytics.top(snap, f, "revenue", 10, "desc").model_dump_json(),
    ]


async def caught_up(engine: AnalyticsEngine, db: AsyncDatabase[Document]) -> Snapshot:
    """The engine's snapshot once it carries the database's current data version."""
    for _ in range(50):
        await engine.snapshot()  # the version check (check_seconds=0) starts a refresh
        snap = await engine.settled()
        if snap.version == await get_data_version(db):
            return snap
    raise AssertionError("the engine did not catch up with the data version")
