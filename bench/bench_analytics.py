"""Analytics benchmark: synthetic films shaped like the real TMDB 5000 ones, loaded into a
throwaway local FerretDB (started and stopped here, by PID), measuring in one run:

(a) snapshot build vs the raw driver reading the same documents with the same projection;
(b) per aggregate, the uncached engine time on a built snapshot (compute + JSON) vs the same
    group-by in DuckDB over the same in-memory data (tables made from the snapshot's columns);
(c) warm p50/p99 over real HTTP (uvicorn on a local port, keep-alive client) vs `/health`.

    .venv/bin/python -m bench.bench_analytics                      # 10k and 100k films
    .venv/bin/python -m bench.bench_analytics --with-1m            # + 1M (many minutes)
    .venv/bin/python -m bench.bench_analytics --sizes 10000 --compute-sizes 1000000

`--compute-sizes` runs (b) alone on snapshots built in memory from the same generator (no
database), which is how the 1M compute figures are obtained cheaply. Results go to
bench/RESULTS.md under "Analytics" (between markers, other sections are left alone).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
import numpy.typing as npt
import pandas as pd
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services import analytics
from app.services.analytics import (
    DEFAULT_CORRELATION_FIELDS,
    SNAPSHOT_PROJECTION,
    STAT_FIELDS,
    Snapshot,
    SnapshotBuilder,
    load_snapshot,
)
from app.services.filters import CatalogFilter
from app.services.indexes import ensure_indexes
from app.services.meta_repo import bump_data_version
from app.services.movies_query import MovieQuery, prepare
from app.services.movies_repo import MOVIES, movie_key
from app.services.movies_snapshot import search_snapshot
from app.services.normalize import normalize_title
from bench.common import (
    RESULTS,
    percentile,
    server_process,
    service_command,
    wait_until,
    write_section,
)

ROOT = Path(__file__).resolve().parent.parent
SECTION = "analytics-bench"
API_KEY = "bench-analytics-admin-key-0123456789abcdef"
CHUNK = 2000
BENCH_CURSOR_KEY = b"bench-cursor-key"  # cursors signed in-process only

# Shapes measured on ../shared/data/tmdb_5000_movies.train.csv (3,804 films).
GENRE_SHARE = {
    "Drama": 0.4782, "Comedy": 0.3583, "Thriller": 0.2631, "Action": 0.2429,
    "Romance": 0.1848, "Adventure": 0.1698, "Crime": 0.1433, "Science Fiction": 0.1104,
    "Horror": 0.1094, "Family": 0.1052, "Fantasy": 0.0904, "Mystery": 0.0699,
    "Animation": 0.0465, "History": 0.0397, "Music": 0.0376, "War": 0.0289,
    "Documentary": 0.0221, "Western": 0.0181, "Foreign": 0.0071, "TV Movie": 0.0016,
}  # fmt: skip
LANGUAGE_SHARE = {
    "en": 0.9369, "fr": 0.0158, "es": 0.0074, "de": 0.0063, "zh": 0.0055, "it": 0.0034,
    "hi": 0.0034, "ja": 0.0029, "cn": 0.0024, "ko": 0.0024, "ru": 0.0018, "da": 0.0018,
    "pt": 0.0015, "sv": 0.0012, "nl": 0.0010, "fa": 0.0008, "th": 0.0008, "he": 0.0006,
    "ta": 0.0006, "ar": 0.0005, "te": 0.0005, "id": 0.0004, "ro": 0.0004, "xx": 0.0004,
}  # fmt: skip
MONTH_SHARE = [0.082, 0.068, 0.079, 0.074, 0.077, 0.079, 0.074, 0.085, 0.125, 0.097, 0.066, 0.094]
BUDGET_KNOWN, REVENUE_KNOWN = 0.782, 0.699
LOG_BUDGET, LOG_REVENUE, LOG_CORR = (16.68, 1.51), (17.46, 1.87), 0.62
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "night star dark love last city lost king war river shadow house girl man blood "
    "road summer secret dream ghost iron heart world time fire dead wild little big "
    "final return rise fall silent golden black white red blue empire planet island "
    "storm edge zero"
).split()


def _zipf(rng: np.random.Generator, pool: int, size: int | tuple[int, ...]) -> npt.NDArray[Any]:
    """Indexes into a pool where a few names are very common (studios, stars), most rare."""
    u = rng.random(size)
    return np.minimum((pool**u - 1).astype(np.int64), pool - 1)  # ~ log-uniform ranks


def synthetic_films(n: int, seed: int = 42) -> Iterator[list[Document]]:
    """`n` films as stored (the importer's document shape), in chunks."""
    rng = np.random.default_rng(seed)
    genres = np.array(list(GENRE_SHARE))
    genre_p = np.array(list(GENRE_SHARE.values()))
    langs = np.array(list(LANGUAGE_SHARE))
    lang_p = np.array(list(LANGUAGE_SHARE.values()))
    lang_p /= lang_p.sum()
    companies, directors, actors = max(n, 50), max(n // 2, 20), max(n * 3, 100)
    now = datetime.now(UTC)
    for first in range(0, n, CHUNK):
        k = min(CHUNK, n - first)
        has_genre = rng.random((k, genres.size)) < genre_p
        has_genre[~has_genre.any(axis=1), 0] = True
        year = np.clip(2016 - rng.gamma(1.3, 9.0, k).astype(int), 1916, 2016)
        month = rng.choice(12, size=k, p=MONTH_SHARE) + 1
        day = rng.integers(1, 29, k)
        z_budget, z_noise = rng.standard_normal(k), rng.standard_normal(k)
        budget = np.exp(LOG_BUDGET[0] + LOG_BUDGET[1] * z_budget).round(-3)
        z_revenue = LOG_CORR * z_budget + np.sqrt(1 - LOG_CORR**2) * z_noise
        revenue = np.exp(LOG_REVENUE[0] + LOG_REVENUE[1] * z_revenue).round()
        budget_known = rng.random(k) < BUDGET_KNOWN
        revenue_known = rng.random(k) < REVENUE_KNOWN
        runtime = np.clip(rng.normal(107.6, 20.8, k), 40, 300).round()
        vote_average = np.clip(rng.normal(6.08, 1.19, k), 0, 10).round(1)
        vote_count = np.exp(rng.normal(5.2, 1.9, k)).astype(int)
        popularity = np.exp(rng.normal(2.23, 1.64, k)).round(6)
        language = rng.choice(langs, size=k, p=lang_p)
        n_companies = np.minimum(rng.poisson(2.84, k), 12)
        company_ix = _zipf(rng, companies, (k, 12))
        director_ix = _zipf(rng, directors, k)
        cast_ix = _zipf(rng, actors, (k, 10))
        words = rng.integers(0, len(WORDS), (k, 45))
        batch: list[Document] = []
        for i in range(k):
            movie_id = first + i + 1
            title = f"{WORDS[words[i, 0]].title()} {WORDS[words[i, 1]].title()} {movie_id}"
            released = date(int(year[i]), int(month[i]), int(day[i]))
            b = int(budget[i]) if budget_known[i] and budget[i] > 0 else None
            r = int(revenue[i]) if revenue_known[i] and revenue[i] > 0 else None
            profit = r - b if b and r else None
            cast = [
                {"name": f"Actor {a}", "character": f"Role {j}", "order": j}
                for j, a in enumerate(dict.fromkeys(int(x) for x in cast_ix[i]))
            ]
            director = f"Director {director_ix[i]}"
            doc: Document = {
                "_id": movie_key(movie_id),
                "id": movie_id,
                "title": title,
                "title_normalized": normalize_title(title),
                "original_title": title,
                "original_language": str(language[i]),
                "overview": " ".join(WORDS[w] for w in words[i, 2:]),
                "tagline": None,
                "homepage": None,
                "status": "Released",
                "release_date": released.isoformat(),
                "release_year": released.year,
                "release_month": released.month,
                "release_weekday": released.weekday(),
                "budget": b,
                "revenue": r,
                "profit": profit,
                "roi": round(profit / b, 6) if profit is not None and b else None,
                "runtime": float(runtime[i]),
                "popularity": float(popularity[i]),
                "vote_average": float(vote_average[i]),
                "vote_count": int(vote_count[i]),
                "genres": [str(g) for g in genres[has_genre[i]]],
                "keywords": [WORDS[w] for w in words[i, 2:7]],
                "production_companies": list(
                    dict.fromkeys(f"Studio {c}" for c in company_ix[i, : n_companies[i]])
                ),
                "production_countries": ["US"],
                "spoken_languages": [str(language[i])],
                "belongs_to_collection": None,
                "cast": cast,
                "crew": [
                    {"name": director, "job": "Director", "department": "Directing"},
                    {"name": f"Writer {director_ix[i]}", "job": "Screenplay"},
                ],
                "quality_flags": [],
                "source": "tmdb-api",
                "content_hash": f"{movie_id:040x}",
                "updated_at": now - timedelta(seconds=movie_id),
            }  # fmt: skip
            if rng.random() < 0.95:
                doc["imdb"] = {
                    "imdb_id": f"tt{movie_id:07d}",
                    "director": director,
                    "actors": [c["name"] for c in cast[:3]],
                    "score": float(np.clip(vote_average[i] + rng.normal(0.3, 0.5), 1, 10).round(1)),
                    "votes": int(vote_count[i]) * 20,
                    "content_rating": "PG-13",
                    "gross_us": int(r * 0.4) if r else None,
                }
            batch.append(doc)
        yield batch


# --- helpers -------------------------------------------------------------------------------


def median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up (first-touch costs on both sides)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}" if seconds < 10 else f"{seconds * 1000:,.0f}"


# --- (a) snapshot build vs raw read -------------------------------------------------------


async def load_films(db: AsyncDatabase[Document], n: int) -> float:
    await ensure_indexes(db)
    started = time.perf_counter()
    for batch in synthetic_films(n):
        await db[MOVIES].insert_many(batch, ordered=False)
    await bump_data_version(db)
    return time.perf_counter() - started


async def raw_read(db: AsyncDatabase[Document]) -> int:
    """The driver alone: every document with the snapshot's projection, decoded, dropped."""
    count = 0
    async for _ in db[MOVIES].find({}, SNAPSHOT_PROJECTION):
        count += 1
    return count


async def measure_build(db: AsyncDatabase[Document], reps: int) -> tuple[dict[str, Any], Snapshot]:
    raw_times, build_times = [], []
    snap: Snapshot | None = None
    for _ in range(reps):  # interleaved, so background load hits both alike
        t = time.perf_counter()
        await raw_read(db)
        raw_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        snap = await load_snapshot(db)
        build_times.append(time.perf_counter() - t)
    assert snap is not None
    raw, build = min(raw_times), min(build_times)
    return {
        "raw_s": raw,
        "build_s": build,
        "raw_all": raw_times,
        "build_all": build_times,
        "ratio": build / raw,
        "docs_per_s": snap.size / raw,
    }, snap


# --- (b) engine vs DuckDB ------------------------------------------------------------------


def duckdb_from_snapshot(snap: Snapshot) -> duckdb.DuckDBPyConnection:
    """The snapshot's data as DuckDB tables (materialized, DuckDB's native storage)."""
    con = duckdb.connect()
    films = pd.DataFrame(
        {
            "row": np.arange(snap.size, dtype=np.int32),
            "id": snap.ids,
            "title": snap.titles,
            "title_normalized": snap.titles_normalized,
            "language": np.asarray([*snap.language.labels, None], dtype=object)[
                snap.language.codes
            ],  # code -1 (unknown) picks the trailing None
            **snap.num,
        }
    )
    con.register("films_df", films)
    con.execute("CREATE TABLE films AS SELECT * FROM films_df")
    con.unregister("films_df")
    for table, dim in (
        ("film_genre", snap.genre),
        ("film_company", snap.company),
        ("film_director", snap.director),
        ("film_actor", snap.actor),
    ):
        frame = pd.DataFrame(
            {"row": dim.rows, "label": np.asarray(dim.labels, dtype=object)[dim.codes]}
        )
        con.register("dim_df", frame)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM dim_df")
        con.unregister("dim_df")
    return con


def _stats_sql(fields: tuple[str, ...], prefix: str = "") -> str:
    parts = []
    for f in fields:
        x = prefix + f
        parts += [
            f"count({x})",
            f"avg({x})",
            f"quantile_cont({x}, [0.25, 0.5, 0.75])",
            f"min({x})",
            f"max({x})",
            f"sum({x})",
        ]
    return ", ".join(parts)


ECON = _stats_sql(STAT_FIELDS, "f.")
FILTER_2000S = "f.release_year BETWEEN 2000 AND 2010 AND f.vote_count >= 10"


def _top_groups_sql(table: str, key: str, fields: tuple[str, ...], n: int) -> str:
    order = {"films": "films DESC", "revenue": "coalesce(sum(revenue), 0) DESC, films DESC"}[key]
    return f"""
        WITH d AS (SELECT p.label AS name, f.* FROM {table} p JOIN films f ON f.row = p.row),
        top AS (SELECT name, count(*) AS films FROM d GROUP BY name
                ORDER BY {order}, name LIMIT {n})
        SELECT d.name, any_value(top.films) AS films, {_stats_sql(fields, "d.")},
               min(d.release_year), max(d.release_year)
        FROM d JOIN top USING (name) GROUP BY d.name ORDER BY films DESC, d.name
    """


CORR_FIELDS = DEFAULT_CORRELATION_FIELDS
CORR_SQL = (
    "SELECT count(*), "
    + ", ".join(f"corr({a}, {b})" for i, a in enumerate(CORR_FIELDS) for b in CORR_FIELDS[i + 1 :])
    + " FROM films WHERE "
    + " AND ".join(f"{f} IS NOT NULL" for f in CORR_FIELDS)
)
SUMMARY_SQL = [
    "SELECT count(*), "
    + ", ".join(f"count({f})" for f in analytics.NUMERIC_FIELDS)
    + ", sum(budget), sum(revenue), sum(profit), min(release_year), max(release_year),"
    " count(DISTINCT language) FROM films",
    *(
        f"SELECT count(DISTINCT label), count(DISTINCT row) FROM {t}"
        for t in ("film_genre", "film_company", "film_director", "film_actor")
    ),
]

ALL = CatalogFilter()
FILTERED = CatalogFilter(year_from=2000, year_to=2010, min_votes=10)
# (label, engine function, filter, engine args, DuckDB statements)
CASES: list[tuple[str, Callable[..., Any], CatalogFilter, tuple[Any, ...], list[str]]] = [
    ("summary", analytics.summary, ALL, (), SUMMARY_SQL),
    (
        "genres",
        analytics.genres,
        ALL,
        (),
        [
            f"SELECT g.label, count(*) AS films, {ECON} FROM film_genre g "
            "JOIN films f ON f.row = g.row GROUP BY g.label ORDER BY films DESC, g.label"
        ],
    ),
    (
        "genres, 2000-2010 and min_votes=10",
        analytics.genres,
        FILTERED,
        (),
        [
            f"SELECT g.label, count(*) AS films, {ECON} FROM film_genre g "
            f"JOIN films f ON f.row = g.row WHERE {FILTER_2000S} "
            "GROUP BY g.label ORDER BY films DESC, g.label"
        ],
    ),
    (
        "trends by=year",
        analytics.trends,
        ALL,
        ("year",),
        [
            f"SELECT f.release_year, count(*), {ECON} FROM films f "
            "WHERE f.release_year IS NOT NULL GROUP BY 1 ORDER BY 1"
        ],
    ),
    (
        "seasonality",
        analytics.seasonality,
        ALL,
        (),
        [
            f"SELECT f.release_month, count(*), {ECON} FROM films f "
            "WHERE f.release_month IS NOT NULL GROUP BY 1 ORDER BY 1"
        ],
    ),
    (
        "top metric=revenue n=10",
        analytics.top,
        ALL,
        ("revenue", 10, "desc"),
        [
            "SELECT id, title, release_year, revenue FROM films WHERE revenue IS NOT NULL "
            "ORDER BY revenue DESC, id LIMIT 10"
        ],
    ),
    (
        "distribution budget, 20 log bins",
        analytics.distribution,
        ALL,
        ("budget", 20, "log"),
        [
            "WITH v AS (SELECT budget AS x FROM films WHERE budget > 0), "
            "b AS (SELECT ln(min(x)) AS lo, ln(max(x)) AS hi FROM v) "
            "SELECT least(CAST(floor((ln(x) - lo) / (hi - lo) * 20) AS INTEGER), 19) AS bin, "
            "count(*) FROM v, b GROUP BY bin ORDER BY bin",
            f"SELECT {_stats_sql(('budget',))} FROM films",
        ],
    ),
    (
        "correlations (6 fields, pearson)",
        analytics.correlations,
        ALL,
        (CORR_FIELDS, "pearson"),
        [CORR_SQL],
    ),
    (
        "people director, sort=films n=20",
        analytics.people,
        ALL,
        ("director", "films", 20, 1),
        [_top_groups_sql("film_director", "films", ("revenue", "vote_average"), 20)],
    ),
    (
        "people actor, sort=revenue n=20",
        analytics.people,
        ALL,
        ("actor", "revenue", 20, 1),
        [_top_groups_sql("film_actor", "revenue", ("revenue", "vote_average"), 20)],
    ),
    (
        "companies sort=films n=20",
        analytics.companies,
        ALL,
        ("films", 20, 1),
        [_top_groups_sql("film_company", "films", STAT_FIELDS, 20)],
    ),
    (
        "languages",
        analytics.languages,
        ALL,
        ("films", 100, 1),
        [
            f"SELECT f.language, count(*) AS films, {ECON} FROM films f "
            "WHERE f.language IS NOT NULL GROUP BY 1 ORDER BY films DESC, 1 LIMIT 100"
        ],
    ),
]


def _search(snap: Snapshot, f: CatalogFilter, sort: str, q: str | None, limit: int) -> Any:
    search = prepare(MovieQuery(filters=f, q=q, sort=sort, limit=limit), BENCH_CURSOR_KEY)
    return search_snapshot(snap, search)


PAGE_COLUMNS = "id, title, language, release_year, budget, revenue, popularity, vote_average"
DRAMA_2000S = (
    "row IN (SELECT row FROM film_genre WHERE label = 'Drama') "
    "AND release_year BETWEEN 2000 AND 2010"
)
# Film search from the snapshot (what /v1/movies runs on FerretDB): the total and one page of
# 20 (+1 to know whether more follow), as the same two statements in DuckDB.
CASES += [
    (
        "search sort=-popularity limit=20",
        _search,
        ALL,
        ("-popularity", None, 20),
        [
            "SELECT count(*) FROM films",
            f"SELECT {PAGE_COLUMNS} FROM films ORDER BY popularity DESC NULLS LAST, id LIMIT 21",
        ],
    ),
    (
        "search genre=Drama 2000-2010 sort=-revenue",
        _search,
        CatalogFilter(genres=("Drama",), year_from=2000, year_to=2010),
        ("-revenue", None, 20),
        [
            f"SELECT count(*) FROM films WHERE {DRAMA_2000S}",
            f"SELECT {PAGE_COLUMNS} FROM films WHERE {DRAMA_2000S} "
            "ORDER BY revenue DESC NULLS LAST, id LIMIT 21",
        ],
    ),
    (
        "search q=love sort=-vote_count",
        _search,
        ALL,
        ("-vote_count", "love", 20),
        [
            "SELECT count(*) FROM films WHERE contains(title_normalized, 'love')",
            f"SELECT {PAGE_COLUMNS} FROM films WHERE contains(title_normalized, 'love') "
            "ORDER BY vote_count DESC NULLS LAST, id LIMIT 21",
        ],
    ),
]


def check_agreement(snap: Snapshot, con: duckdb.DuckDBPyConnection) -> None:
    """The two sides answer the same question: genre counts and medians must match."""
    ours = analytics.genres(snap, CatalogFilter())
    theirs = con.execute(
        "SELECT g.label, count(*), quantile_cont(f.revenue, 0.5), sum(f.budget) "
        "FROM film_genre g JOIN films f ON f.row = g.row GROUP BY 1"
    ).fetchall()
    by_genre = {row[0]: row[1:] for row in theirs}
    for item in ours.items:
        count, median, budget = by_genre[item.genre]
        assert item.count == count, item.genre
        assert item.revenue.median is not None and median is not None
        assert abs(item.revenue.median - median) <= 1e-6 * abs(median), item.genre
        assert item.budget.sum is not None and budget is not None
        assert abs(item.budget.sum - budget) <= 1e-9 * abs(budget), item.genre
    people = analytics.people(snap, CatalogFilter(), "director", "films", 20, 1)
    top = con.execute(_top_groups_sql("film_director", "films", ("revenue",), 20)).fetchall()
    assert [p.name for p in people.items] == [row[0] for row in top]
    page = _search(
        snap, CatalogFilter(genres=("Drama",), year_from=2000, year_to=2010), "-revenue", None, 20
    )
    ids = con.execute(
        f"SELECT id FROM films WHERE {DRAMA_2000S} ORDER BY revenue DESC NULLS LAST, id LIMIT 20"
    ).fetchall()
    assert [m.id for m in page.items] == [row[0] for row in ids]


def measure_compute(snap: Snapshot, reps: int) -> list[dict[str, Any]]:
    con = duckdb_from_snapshot(snap)
    check_agreement(snap, con)
    rows = []
    for label, fn, f, args, sql in CASES:

        def engine(fn: Callable[..., Any] = fn, f: CatalogFilter = f, a: Any = args) -> None:
            fn(snap, f, *a).model_dump_json()

        def duck(statements: list[str] = sql) -> None:
            for statement in statements:
                con.execute(statement).fetchall()

        ours, theirs = median_time(engine, reps), median_time(duck, reps)
        rows.append({"aggregate": label, "engine_s": ours, "duckdb_s": theirs})
    con.close()
    return rows


def build_in_memory(n: int) -> Snapshot:
    builder = SnapshotBuilder()
    started = time.perf_counter()
    for batch in synthetic_films(n):
        builder.add(batch)
    return builder.finish(version=1, build_id=1, started=started)


# --- (c) HTTP ------------------------------------------------------------------------------

HTTP_PATHS = [
    "/v1/analytics/summary",
    "/v1/analytics/genres?year_from=2000",
    "/v1/analytics/trends?by=year",
    "/v1/analytics/seasonality",
    "/v1/analytics/top?metric=revenue&n=10",
    "/v1/analytics/distribution?field=budget&bins=20&scale=log",
    "/v1/analytics/correlations?method=spearman",
    "/v1/analytics/people?role=director&sort=revenue",
    "/v1/analytics/companies?n=20",
    "/v1/analytics/languages",
    "/v1/movies?genre=Drama&sort=-revenue&limit=20",
]


def measure_http(uri: str, db_name: str, requests: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DB": db_name,
        "ADMIN_API_KEY": API_KEY,
        "APP_ENV": "development",
        "RATE_LIMIT_PER_MINUTE": str(10**9),
        "REQUEST_TIMEOUT_SECONDS": "0",
        "LOCAL_DB_DIR": str(workdir / "unused-localdb"),
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
    }
    with (
        server_process(service_command(port), env) as server,
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}, timeout=1800
        ) as http,
    ):
        wait_until(f"http://127.0.0.1:{port}/health", server, timeout=60)
        t = time.perf_counter()
        assert http.get("/v1/analytics/summary").status_code == 200
        first_snapshot = time.perf_counter() - t
        cold: dict[str, float] = {}
        for path in HTTP_PATHS:  # the first call of each computes (a cache miss)
            t = time.perf_counter()
            response = http.get(path)
            cold[path] = time.perf_counter() - t
            assert response.status_code == 200, (path, response.text[:200])
        paths = ["/health", *HTTP_PATHS]
        for _ in range(20):
            for path in paths:
                http.get(path)
        samples: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(requests):  # round-robin, so drift and noise hit all paths alike
            for path in paths:
                t = time.perf_counter()
                response = http.get(path)
                samples[path].append(time.perf_counter() - t)
                assert response.status_code == 200
                if path != "/health":
                    assert response.headers["X-Analytics-Cache"] == "hit"
    health = percentile(samples["/health"], 50)
    return {
        "first_snapshot_s": first_snapshot,
        "rows": [
            {
                "path": p,
                "p50": percentile(samples[p], 50),
                "p99": percentile(samples[p], 99),
                "ratio": percentile(samples[p], 50) / health,
                "cold": cold.get(p),
            }
            for p in paths
        ],
    }


# --- driver --------------------------------------------------------------------------------


async def run_size(
    server: LocalServer, n: int, reps: int, compute_reps: int, http_requests: int, workdir: Path
) -> dict[str, Any]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.uri, tz_aware=True)
    name = f"bench_{n}"
    await client.drop_database(name)
    db = client[name]
    try:
        print(f"[{n:,}] loading synthetic films...", flush=True)
        load_s = await load_films(db, n)
        print(f"[{n:,}] loaded in {load_s:.1f}s; measuring snapshot build...", flush=True)
        build, snap = await measure_build(db, reps)
        print(f"[{n:,}] build {build}", flush=True)
        compute = await asyncio.to_thread(measure_compute, snap, compute_reps)
        print(f"[{n:,}] compute done", flush=True)
        http = (
            await asyncio.to_thread(measure_http, server.uri, name, http_requests, workdir)
            if http_requests
            else None
        )
        return {"n": n, "load_s": load_s, "build": build, "compute": compute, "http": http}
    finally:
        await client.drop_database(name)
        await client.close()


def report(results: list[dict[str, Any]], compute_only: list[dict[str, Any]], command: str) -> str:
    out = [
        "## Analytics",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, numpy {np.__version__}, DuckDB {duckdb.__version__}, "
        f"FerretDB v1.24.2 (SQLite) local. Synthetic films shaped like the real train CSV "
        "(genre, language and month shares, budget/revenue coverage and log-normal spreads, "
        "Zipf-like studios and people, 10 cast + crew + IMDB block per film).",
        "",
    ]
    if results:
        out += [
            "### (a) Snapshot build vs raw driver read (same documents, same projection)",
            "",
            "Best of the interleaved repetitions. The snapshot decodes raw BSON batches in a "
            "worker thread while the driver fetches the next batch.",
            "",
            "| films | load (insert) s | raw read s | snapshot build s | build / raw "
            "| docs/s read |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            b = r["build"]
            out.append(
                f"| {r['n']:,} | {r['load_s']:.1f} | {b['raw_s']:.2f} | {b['build_s']:.2f} | "
                f"**{b['ratio']:.2f}x** | {b['docs_per_s']:,.0f} |"
            )
        out.append("")
    for r in [*results, *compute_only]:
        source = "snapshot read from FerretDB" if "build" in r else "snapshot built in memory"
        out += [
            f"### (b) Uncached aggregate, {r['n']:,} films ({source})",
            "",
            "Median of repetitions after a warm-up. Engine: compute on the built snapshot + "
            "JSON; DuckDB: the same group-by (with percentiles) over tables holding the same "
            "columns, query + fetch.",
            "",
            "| aggregate | engine ms | DuckDB ms | engine / DuckDB |",
            "|---|---:|---:|---:|",
        ]
        for row in r["compute"]:
            ratio = row["engine_s"] / row["duckdb_s"]
            out.append(
                f"| {row['aggregate']} | {ms(row['engine_s'])} | {ms(row['duckdb_s'])} | "
                f"**{ratio:.2f}x** |"
            )
        out.append("")
    for r in results:
        if not r["http"]:
            continue
        h = r["http"]
        out += [
            f"### (c) Warm latency over HTTP, {r['n']:,} films",
            "",
            "uvicorn on 127.0.0.1 (one worker, auth on: admin X-API-Key), one keep-alive "
            "httpx client, paths requested round-robin; warm = served from the result cache. "
            f"First snapshot after start: {h['first_snapshot_s']:.1f} s.",
            "",
            "| path | cold (first) ms | warm p50 ms | warm p99 ms | p50 / health p50 |",
            "|---|---:|---:|---:|---:|",
        ]
        for row in h["rows"]:
            cold = "" if row["cold"] is None else ms(row["cold"])
            out.append(
                f"| `{row['path']}` | {cold} | {row['p50'] * 1000:.2f} | "
                f"{row['p99'] * 1000:.2f} | **{row['ratio']:.2f}x** |"
            )
        out.append("")
    out += _targets(results, compute_only)
    return "\n".join(out)


def _targets(results: list[dict[str, Any]], compute_only: list[dict[str, Any]]) -> list[str]:
    """One line per target of the issue, with the worst ratio measured in this run."""
    lines = ["### Targets", ""]
    if results:
        worst = max(results, key=lambda r: r["build"]["ratio"])
        lines.append(
            "- Snapshot build <= 1.25x the raw driver read: worst "
            f"**{worst['build']['ratio']:.2f}x** ({worst['n']:,} films)."
        )
    if not any(r["n"] >= 1_000_000 for r in results):
        lines.append(
            "- (a) and (c) were not run at 1M films here: at the read rates above one full "
            "read of 1M documents takes about half an hour on this machine (`--with-1m`)."
        )
    for r in [*results, *compute_only]:
        aggregates = [row for row in r["compute"] if not row["aggregate"].startswith("search")]
        searches = [row for row in r["compute"] if row["aggregate"].startswith("search")]
        for what, rows in (("Uncached aggregate <= 2x DuckDB", aggregates), ("Search", searches)):
            if not rows:
                continue
            worst_row = max(rows, key=lambda row: row["engine_s"] / row["duckdb_s"])
            lines.append(
                f"- {what}, {r['n']:,} films: worst "
                f"**{worst_row['engine_s'] / worst_row['duckdb_s']:.2f}x** DuckDB "
                f"({worst_row['aggregate']})."
            )
    for r in results:
        if r["http"]:
            rows = [row for row in r["http"]["rows"] if row["path"] != "/health"]
            worst_http = max(rows, key=lambda row: row["ratio"])
            lines.append(
                f"- Warm aggregate p50 <= 2x `/health` p50, {r['n']:,} films: worst "
                f"**{worst_http['ratio']:.2f}x** (`{worst_http['path']}`)."
            )
    lines.append("")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--with-1m", action="store_true", help="add 1,000,000 (slow)")
    parser.add_argument(
        "--compute-sizes", type=int, nargs="*", default=[], help="(b) only, no database"
    )
    parser.add_argument("--reps", type=int, default=2, help="snapshot/raw read repetitions")
    parser.add_argument("--compute-reps", type=int, default=7)
    parser.add_argument("--http-requests", type=int, default=300, help="0 skips (c)")
    parser.add_argument(
        "--save-json", type=Path, help="also write this run's figures as JSON (to --merge later)"
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="add the figures of earlier runs (--save-json files) to the report",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [*args.sizes, *([1_000_000] if args.with_1m else [])]
    command = "python -m bench.bench_analytics " + " ".join(sys.argv[1:])
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        workdir = Path(tmp)
        if sizes:
            server = LocalServer(directory=workdir / "ferretdb", port=free_port())
            server.directory.mkdir(parents=True)
            server.start()
            try:
                for n in sizes:
                    reps = args.reps if n < 1_000_000 else 1
                    compute_reps = args.compute_reps if n < 1_000_000 else 3
                    results.append(
                        await run_size(server, n, reps, compute_reps, args.http_requests, workdir)
                    )
            finally:
                server.stop()
    compute_only = []
    for n in args.compute_sizes:
        print(f"[{n:,}] building a snapshot in memory...", flush=True)
        snap = build_in_memory(n)
        reps = args.compute_reps if n < 1_000_000 else 3
        compute_only.append({"n": n, "compute": measure_compute(snap, reps)})
    if args.save_json:
        args.save_json.write_text(
            json.dumps({"command": command, "results": results, "compute_only": compute_only})
        )
    for path in args.merge:
        # Sizes too slow to rerun with the rest (1M: about an hour of FerretDB reads).
        earlier = json.loads(path.read_text())
        results += earlier["results"]
        compute_only += earlier["compute_only"]
        command += f" (+ `{earlier['command'].strip()}`)"
    results.sort(key=lambda r: r["n"])
    markdown = report(results, compute_only, command.strip())
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown, args.results)
        print(f"written to {args.results}")


if __name__ == "__main__":
    asyncio.run(main())
