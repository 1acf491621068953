"""The analytics engine's behaviour (snapshot versioning, stale-while-rebuilding, cache,
single flight, failure modes) on small factory catalogues, and its numpy kernels against
pandas on random data."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, get_args

import httpx
import numpy as np
import pandas as pd
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.localdb import LocalServer, free_port
from app.models.analytics import GenresResponse, StatField, TopMetric
from app.models.movie import ImdbInfo, MovieDocument
from app.services import analytics
from app.services.analytics import AnalyticsEngine, Snapshot, aggregates
from app.services.columnar import average_ranks, correlation_matrix, expand, grouped_stats
from app.services.filters import CatalogFilter
from app.services.meta_repo import get_data_version
from app.services.movies_store import set_imdb, upsert_movies
from app.services.normalize import to_movie
from tests.analytics_support import app_settings, serve


def film(movie_id: int, **fields: Any) -> MovieDocument:
    record: dict[str, Any] = {
        "id": movie_id,
        "title": f"Film {movie_id}",
        "release_date": "2001-05-04",
        "genres": [{"id": 28, "name": "Action"}],
        "original_language": "en",
        "vote_average": 6.0,
        "vote_count": 100,
        "popularity": 1.0,
        **fields,
    }
    return to_movie(record, "tmdb-api")


async def test_snapshot_follows_the_data_version(db: AsyncDatabase[Document]) -> None:
    await upsert_movies(db, [film(1, budget=10_000_000, revenue=30_000_000), film(2)])
    engine = AnalyticsEngine(db, check_seconds=0)
    engine.start()
    try:
        first = await engine.settled()
        assert first.size == 2 and first.version == await get_data_version(db)
        answer = await engine.run(analytics.summary, CatalogFilter())
        assert not answer.cache_hit
        assert (await engine.run(analytics.summary, CatalogFilter())).cache_hit

        await upsert_movies(db, [film(3, revenue=5_000_000)])
        # The version check notices the write and starts a rebuild, but this answer comes
        # from the snapshot in hand rather than waiting for a scan.
        assert await engine.snapshot() is first
        fresh = await engine.settled()
        assert fresh is not first and fresh.size == 3
        assert fresh.version == await get_data_version(db) > first.version
        answer = await engine.run(analytics.summary, CatalogFilter())
        assert not answer.cache_hit and answer.data_version == fresh.version
    finally:
        await engine.close()


async def test_ready_only_once_a_first_snapshot_exists(db: AsyncDatabase[Document]) -> None:
    await upsert_movies(db, [film(1)])
    engine = AnalyticsEngine(db, check_seconds=0)
    assert (await engine.readiness()).startswith("not ready: no catalogue snapshot")
    engine.start()
    try:
        # Waits briefly for the build in progress, which a one-film catalogue completes.
        assert await engine.readiness(wait_seconds=30) == "ok"
    finally:
        await engine.close()


async def test_version_is_checked_at_most_every_interval(db: AsyncDatabase[Document]) -> None:
    await upsert_movies(db, [film(1)])
    engine = AnalyticsEngine(db, check_seconds=3600)
    engine.start()
    try:
        first = await engine.settled()
        await upsert_movies(db, [film(2)])
        assert await engine.snapshot() is first  # checked just now; the next check is in 1h
        assert engine.current is first
    finally:
        await engine.close()


async def test_an_idle_engine_applies_writes_without_being_asked(
    db: AsyncDatabase[Document],
) -> None:
    """No request comes, yet a write reaches the snapshot within a few check intervals: the
    first request after a burst of writes does not pay for reading and merging them all."""
    await upsert_movies(db, [film(1)])
    engine = AnalyticsEngine(db, check_seconds=0.2)
    engine.start()
    try:
        first = await engine.settled()
        await upsert_movies(db, [film(2)])
        version = await get_data_version(db)
        deadline = time.monotonic() + 20
        while (engine.current is None or engine.current.version != version) and (  # noqa: ASYNC110
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)  # only looking: `current` never checks the database
        current = engine.current
        assert current is not None and current is not first and current.version == version
        assert sorted(current.ids.tolist()) == [1, 2]
    finally:
        await engine.close()


async def test_identical_concurrent_queries_share_one_computation(
    db: AsyncDatabase[Document],
) -> None:
    await upsert_movies(db, [film(i, revenue=i * 1_000_000) for i in range(1, 6)])
    engine = AnalyticsEngine(db, check_seconds=3600)
    calls: list[int] = []

    def slow_genres(snap: Snapshot, f: CatalogFilter) -> GenresResponse:
        calls.append(1)
        time.sleep(0.05)
        return analytics.genres(snap, f)

    try:
        await engine.settled()
        results = await asyncio.gather(
            *(engine.run(slow_genres, CatalogFilter.build(["Action"])) for _ in range(8))
        )
        assert len(calls) == 1
        assert len({r.body for r in results}) == 1
        assert (await engine.run(slow_genres, CatalogFilter.build([" Action "]))).cache_hit
        assert len(calls) == 1
    finally:
        await engine.close()


async def test_people_merge_credits_and_imdb(db: AsyncDatabase[Document]) -> None:
    await upsert_movies(
        db,
        [
            film(
                1,
                revenue=100_000_000,
                crew=[{"name": "Ann Director", "job": "Director"}],
                cast=[{"name": "Bo Actor", "order": 0}, {"name": "Cy Actor", "order": 1}],
            ),
            film(2, revenue=50_000_000, release_date="2005-01-01"),
            film(3, release_date="1999-01-01", vote_average=8.0),
        ],
    )
    await set_imdb(
        db,
        {
            1: ImdbInfo(director="Ann Director", actors=["Bo Actor", "Di Actor"]),
            2: ImdbInfo(director="Ann Director", actors=["Bo Actor"]),
            3: ImdbInfo(director="Eve Director"),
        },
    )
    engine = AnalyticsEngine(db, check_seconds=0)
    try:
        snap = await engine.settled()
        directors = analytics.people(snap, CatalogFilter(), "director", "films", 10, 1)
        assert [(p.name, p.films) for p in directors.items] == [
            ("Ann Director", 2),  # crew and IMDB name the same person once per film
            ("Eve Director", 1),
        ]
        ann = directors.items[0]
        assert ann.revenue.n == 2 and ann.revenue.sum == 150_000_000
        assert (ann.first_year, ann.last_year) == (2001, 2005)
        actors = analytics.people(snap, CatalogFilter(), "actor", "films", 10, 1)
        assert [(p.name, p.films) for p in actors.items] == [
            ("Bo Actor", 2),
            ("Cy Actor", 1),
            ("Di Actor", 1),
        ]
        best = analytics.people(snap, CatalogFilter(), "director", "vote_average", 1, 1)
        assert best.items[0].name == "Eve Director"
        revenue = analytics.people(snap, CatalogFilter(), "director", "revenue", 10, 1)
        assert [p.name for p in revenue.items] == ["Ann Director", "Eve Director"]
        assert revenue.items[1].revenue.n == 0 and revenue.items[1].revenue.sum == 0
    finally:
        await engine.close()


async def test_empty_catalogue_answers_with_zeros(
    db: AsyncDatabase[Document], mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    async with serve(app_settings(mongodb_uri, db_name, tmp_path)) as api:
        for path in (
            "summary",
            "genres",
            "trends",
            "seasonality",
            "top",
            "distribution?scale=log",
            "correlations",
            "people",
            "companies",
            "languages",
        ):
            response = await api.get(f"/v1/analytics/{path}")
            assert response.status_code == 200, (path, response.text)
            body = response.json()
            assert body["films"] == 0 and body["data_version"] == 0
            assert response.headers["X-Data-Version"] == "0"


async def test_database_down_before_first_snapshot_is_503(tmp_path: Path) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/"
    settings = app_settings(dead, "nowhere", tmp_path, mongodb_timeout_ms=200)
    async with serve(settings) as api:
        response = await api.get("/v1/analytics/genres")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["Retry-After"]


async def test_answers_over_http_carry_the_version(
    db: AsyncDatabase[Document], mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    await upsert_movies(db, [film(1, budget=1_000_000), film(2, budget=3_000_000)])
    settings = app_settings(mongodb_uri, db_name, tmp_path, snapshot_check_seconds=0)
    async with serve(settings) as api:
        first = await api.get("/v1/analytics/summary")
        assert first.json()["totals"]["budget"] == 4_000_000
        version = int(first.headers["X-Data-Version"])
        await upsert_movies(db, [film(3, budget=5_000_000)])
        deadline = time.monotonic() + 30
        while True:
            response = await api.get("/v1/analytics/summary")
            if int(response.headers["X-Data-Version"]) > version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert response.json()["totals"]["budget"] == 9_000_000
        assert response.headers["X-Analytics-Cache"] == "miss"


async def test_snapshot_search_follows_writes_and_says_which_version(
    db: AsyncDatabase[Document], mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    await upsert_movies(db, [film(1, title="Alpha", popularity=5.0), film(2, popularity=9.0)])
    settings = app_settings(mongodb_uri, db_name, tmp_path, snapshot_check_seconds=0)
    async with serve(settings) as api:
        first = await api.get("/v1/movies", params={"sort": "-popularity"})
        assert first.headers["X-Search-Backend"] == "snapshot"
        assert [m["id"] for m in first.json()["items"]] == [2, 1]
        version = int(first.headers["X-Data-Version"])
        await upsert_movies(db, [film(1, title="Alpha", popularity=50.0), film(3)])
        deadline = time.monotonic() + 30
        while True:
            response = await api.get("/v1/movies", params={"sort": "-popularity"})
            if int(response.headers["X-Data-Version"]) > version or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        body = response.json()
        assert [m["id"] for m in body["items"]] == [1, 2, 3] and body["total"] == 3
        assert body["items"][0]["popularity"] == 50.0
        # The detail is read from the database, so it is current at once.
        assert (await api.get("/v1/movies/3")).json()["title"] == "Film 3"


# --- kernels -------------------------------------------------------------------------------


def test_expand_concatenates_ranges() -> None:
    out = expand(np.array([5, 0, 9, 2]), np.array([2, 0, 3, 1]))
    assert out.tolist() == [5, 6, 9, 10, 11, 2]
    assert expand(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).size == 0


@pytest.mark.parametrize("n_groups", [1, 7, 40_000])  # 40k: beyond 16-bit radix codes
def test_grouped_stats_match_pandas(n_groups: int) -> None:
    rng = np.random.default_rng(n_groups)
    values = rng.lognormal(10, 2, 5000).round(-2)  # rounding creates ties
    values[rng.random(5000) < 0.2] = np.nan
    groups = rng.integers(0, n_groups, 5000)
    known = np.flatnonzero(~np.isnan(values))
    rows = known[np.argsort(values[known], kind="stable")]
    stats = grouped_stats(rows, groups[rows], values, n_groups)
    frame = pd.DataFrame({"g": groups, "v": values}).dropna()
    ref = frame.groupby("g")["v"]
    expected = pd.DataFrame(
        {
            "n": ref.size(),
            "sum": ref.sum(),
            "min": ref.min(),
            "max": ref.max(),
            "p25": ref.quantile(0.25),
            "median": ref.median(),
            "p75": ref.quantile(0.75),
        }
    ).reindex(range(n_groups))
    assert stats.n.tolist() == expected["n"].fillna(0).astype(int).tolist()
    for name in ("sum", "min", "max", "p25", "median", "p75"):
        np.testing.assert_allclose(getattr(stats, name), expected[name], rtol=1e-12)
    np.testing.assert_allclose(stats.mean, expected["sum"] / expected["n"], rtol=1e-12)


def test_average_ranks_and_correlations_match_pandas() -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(0, 20, 300).astype(float)  # many ties
    b = a * 2 + rng.normal(0, 5, 300)
    np.testing.assert_allclose(average_ranks(a), pd.Series(a).rank(method="average"))
    matrix = correlation_matrix([a, b, np.full(300, 3.0)])
    expected = pd.DataFrame({"a": a, "b": b}).corr()
    np.testing.assert_allclose(matrix[:2, :2], expected.to_numpy(), rtol=1e-12)
    assert np.isnan(matrix[2]).all()  # a constant column has no correlation
    assert np.isnan(correlation_matrix([np.array([1.0]), np.array([2.0])])).all()


async def test_filter_normalization_is_one_cache_key() -> None:
    a = CatalogFilter.build(["Drama", "Action", "Drama"], language="EN ")
    b = CatalogFilter.build(["Action", " Drama"], language="en")
    assert a == b and hash(a) == hash(b)
    assert a.to_mongo() == {"genres": {"$in": ["Action", "Drama"]}, "original_language": "en"}


async def test_http_client_sees_problem_for_bad_filters(
    db: AsyncDatabase[Document], mongodb_uri: str, db_name: str, tmp_path: Path
) -> None:
    async with serve(app_settings(mongodb_uri, db_name, tmp_path)) as api:
        response: httpx.Response = await api.get(
            "/v1/analytics/summary", params={"year_from": 2001, "year_to": 1999}
        )
    assert response.status_code == 400
    assert "year_from" in response.json()["detail"]


@pytest.mark.parametrize("desc", [True, False])
@pytest.mark.parametrize("k", [1, 5, 50, 5000])
def test_extreme_rows_match_a_full_sort(desc: bool, k: int) -> None:
    rng = np.random.default_rng(k)
    values = rng.integers(0, 300, 20_000).astype(float)  # heavy ties
    values[rng.random(values.size) < 0.1] = np.nan
    mask = rng.random(values.size) < 0.3
    known = np.flatnonzero(~np.isnan(values))
    ranked = known[np.argsort(values[known], kind="stable")].astype(np.int32)
    rows = aggregates._extreme_rows(ranked, mask, values, k, desc)
    eligible = np.flatnonzero(mask & ~np.isnan(values))
    ordered = sorted(eligible, key=lambda r: -values[r] if desc else values[r])
    if len(ordered) > k:
        cut = values[ordered[k - 1]]
        expected = {r for r in eligible if (values[r] >= cut if desc else values[r] <= cut)}
    else:
        expected = set(eligible)
    assert set(rows.tolist()) == expected


async def test_answers_survive_a_database_outage(tmp_path: Path) -> None:
    """With a snapshot in hand, analytics keep answering while the database is down."""
    if os.environ.get("TEST_MONGODB_URI"):
        pytest.skip("needs a database of its own to stop")
    server = LocalServer(directory=tmp_path / "db", port=free_port())
    server.start()
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        server.uri, serverSelectionTimeoutMS=300, connectTimeoutMS=300
    )
    engine = AnalyticsEngine(client["outage"], check_seconds=0)
    try:
        await upsert_movies(client["outage"], [film(1, revenue=7_000_000), film(2)])
        await engine.settled()
        before = await engine.run(analytics.summary, CatalogFilter())
        server.stop()
        started = time.monotonic()
        during = await engine.run(analytics.genres, CatalogFilter())  # a miss: computed
        again = await engine.run(analytics.genres, CatalogFilter())
        assert time.monotonic() - started < 3
        assert during.data_version == before.data_version and again.cache_hit
        assert b'"films":2' in during.body
        # Once the version check has failed, answers say they come from the last snapshot.
        assert not before.stale
        deadline = time.monotonic() + 3
        latest = again
        while not latest.stale and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            latest = await engine.run(analytics.genres, CatalogFilter())
        assert latest.stale and latest.body == during.body
    finally:
        await engine.close()
        await client.close()
        server.stop()


def test_schema_literals_match_the_engine() -> None:
    assert set(analytics.DOC_NUMERIC) < set(analytics.SNAPSHOT_PROJECTION)
    assert set(get_args(TopMetric)) <= set(analytics.NUMERIC_FIELDS)
    assert set(get_args(StatField)) == set(analytics.STAT_FIELDS)
