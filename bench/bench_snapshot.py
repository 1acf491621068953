"""Snapshot benchmark at catalogue scale (issue 15, parts 1, 2 and 4).

A synthetic catalogue (the generator of `bench.bench_analytics`) is loaded once into a local
FerretDB kept in `--dir` (default /tmp/bench-1m), because loading a million films takes the
best part of an hour on a 2-core machine; every later run reuses it. FerretDB must be the
patched build (`_id` lookups through the index, issue 15 part 3): point FERRETDB_BIN at it.

    nice .venv/bin/python -m bench.bench_snapshot generate --films 1000000   # once
    .venv/bin/python -m bench.bench_snapshot run                             # the figures

`run` measures, in one run, against the service under uvicorn (one worker, real HTTP):

(a) the first start on the catalogue: a full read, then the snapshot persisted (the time
    every restart and write batch used to cost); skipped when a persisted snapshot exists
    (the figure of the run that made it is kept in --dir and reported with its date);
(b) restarts: process start to the first analytics answer and the first title search
    answered at the database's current data version (persisted snapshot loaded, checked,
    caught up from the change log);
(c) 1,000 changed films (500 updated, 500 new) written through the service's own writer
    while the service is idle: from the end of the writes to analytics and search showing
    all of them; then a restart that catches up with them from the log;
(d) in process, on the persisted 1M snapshot: title search vs DuckDB on the same query,
    an incremental apply of 1,000 films, saving and loading the file.

Results go to bench/RESULTS.md under "Snapshot at scale".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import numpy as np
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.models.movie import MovieDocument
from app.services.analytics import Lineage, Snapshot, SnapshotStore
from app.services.analytics.incremental import apply_changes
from app.services.analytics.persist import read_snapshot, write_snapshot
from app.services.analytics.snapshot import SNAPSHOT_PROJECTION
from app.services.filters import CatalogFilter
from app.services.indexes import ensure_indexes
from app.services.meta_repo import bump_data_version, catalogue_state, get_data_version
from app.services.movies_query import MovieQuery, PreparedSearch, prepare
from app.services.movies_repo import MOVIES, find_movies
from app.services.movies_snapshot import search_snapshot
from app.services.movies_store import upsert_movies
from app.services.normalize import to_movie
from bench.bench_analytics import PAGE_COLUMNS, duckdb_from_snapshot, synthetic_films
from bench.bench_detail import detail_vs_health
from bench.common import server_process, service_command, wait_until, write_section

DB_NAME = "bench_catalogue"
DEFAULT_DIR = Path("/tmp/bench-1m")
SECTION = "snapshot-bench"
API_KEY = "bench-snapshot-admin-key-0123456789abcdef"
CHANGED = 1000
BATCH = 50  # films per write: 25 updated (in place on FerretDB, under its rewrite threshold)
POLL_SECONDS = 0.05
# Title searches compared with DuckDB: common words, a rare title, two words, a short needle
# (no trigram: a scan), and one found nowhere.
TITLE_QUERIES = ["love", "night", "dark city", "king 12345", "st", "zzqx"]


def catalogue_server(directory: Path) -> LocalServer:
    """The FerretDB holding the generated catalogue; its port is kept beside the data."""
    port_file = directory / "port"
    if port_file.exists():
        port = int(port_file.read_text())
    else:
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        port_file.write_text(str(port))
    return LocalServer(directory=directory / "ferretdb", port=port)


def loaded_films(directory: Path) -> int:
    """How many films the kept catalogue holds (0: none finished loading)."""
    marker = directory / "loaded.json"
    return int(json.loads(marker.read_text())["films"]) if marker.exists() else 0


async def generate(directory: Path, films: int) -> dict[str, Any]:
    if loaded_films(directory) == films:
        print(f"{directory} already holds {films:,} films")
        return {}
    server = catalogue_server(directory)
    server.directory.mkdir(parents=True, exist_ok=True)
    server.start()
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.uri, tz_aware=True)
    try:
        await client.drop_database(DB_NAME)
        db = client[DB_NAME]
        started = time.perf_counter()
        await ensure_indexes(db)
        for batch in synthetic_films(films):
            await db[MOVIES].insert_many(batch, ordered=False)
            done = int(batch[-1]["id"])
            if done % 50_000 == 0:
                print(f"{done:,} films in {time.perf_counter() - started:.0f} s", flush=True)
        await bump_data_version(db)
        load_s = time.perf_counter() - started
        info = {"films": films, "load_s": load_s, "at": time.time()}
        (directory / "loaded.json").write_text(json.dumps(info))
        print(f"loaded {films:,} films in {time.perf_counter() - started:.0f} s")
        return info
    finally:
        await client.close()
        server.stop()


# --- (a), (b), (c): the service over HTTP --------------------------------------------------


def service_env(uri: str, directory: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DB": DB_NAME,
        "ADMIN_API_KEY": API_KEY,
        "APP_ENV": "development",
        "RATE_LIMIT_PER_MINUTE": str(10**9),
        "REQUEST_TIMEOUT_SECONDS": "0",
        "LOG_LEVEL": "INFO",
        "LOCAL_DB_DIR": str(directory / "service-localdb"),
        "ARTIFACTS_DIR": str(directory / "service-artifacts"),
        "SNAPSHOT_DIR": str(directory / "snapshots"),
    }


async def current_answers(
    http: httpx.AsyncClient, version: int, check: Callable[[dict[str, Any], dict[str, Any]], bool]
) -> bool:
    """Whether analytics and title search both answer at `version` and pass `check`."""
    summary = await http.get("/v1/analytics/summary")
    search = await http.get("/v1/movies", params={"q": "love", "limit": 20})
    if summary.status_code != 200 or search.status_code != 200:
        return False
    versions = {int(summary.headers["X-Data-Version"]), int(search.headers["X-Data-Version"])}
    return versions == {version} and check(summary.json(), search.json())


async def until(
    http: httpx.AsyncClient,
    version: int,
    timeout: float,  # noqa: ASYNC109 (a deadline for polling, not for one call)
    check: Callable[[dict[str, Any], dict[str, Any]], bool] = lambda _s, _m: True,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await current_answers(http, version, check):
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(POLL_SECONDS)
    raise TimeoutError(f"no current answer within {timeout:g} s")


def log_lines(log: Path, *needles: str) -> list[str]:
    """The service's JSON log messages containing one of `needles`."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        if any(n in msg for n in needles):
            found.append(msg)
    return found


async def start_service(
    uri: str, directory: Path, version: int, wait_s: float, label: str
) -> dict[str, Any]:
    """Start the service, wait for current answers, stop it; times from the process start."""
    port = free_port()
    log = directory / f"service-{label}.log"
    started = time.perf_counter()
    with server_process(service_command(port), service_env(uri, directory), log) as proc:
        base = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(wait_until, f"{base}/health", proc, log, wait_s)
        up = time.perf_counter() - started
        async with httpx.AsyncClient(
            base_url=base, headers={"X-API-Key": API_KEY}, timeout=wait_s
        ) as http:
            await until(http, version, wait_s)
            ready = time.perf_counter() - started
            if label == "first":  # wait until the snapshot is on disk
                while not log_lines(log, "persisted:"):  # noqa: ASYNC110 (another process)
                    await asyncio.sleep(1)
    return {
        "label": label,
        "http_up_s": up,
        "current_s": ready,
        "log": log_lines(log, "snapshot", "persisted"),
    }


def changed_film(doc: dict[str, Any], token: str, movie_id: int) -> MovieDocument:
    """A synthetic film as TMDB would send it, its title marked with `token`."""
    title = f"{doc['title']} {token}"
    return to_movie(
        {
            "id": movie_id,
            "title": title,
            "release_date": doc["release_date"],
            "genres": list(reversed(doc["genres"])),
            "original_language": doc["original_language"],
            "budget": (doc["budget"] or 1_000_000) * 2,
            "revenue": doc["revenue"],
            "runtime": doc["runtime"],
            "popularity": doc["popularity"],
            "vote_average": doc["vote_average"],
            "vote_count": (doc["vote_count"] or 0) + 1,
            "production_companies": doc["production_companies"],
            "cast": doc["cast"][:5],
            "crew": doc["crew"],
        },
        "tmdb-api",
    )


async def write_changes(db: AsyncDatabase[Document], films: int, token: str) -> dict[str, Any]:
    """500 stored films updated and 500 new ones, in batches through `upsert_movies`."""
    rng = random.Random(token)
    updated = rng.sample(range(1, films + 1), CHANGED // 2)
    first_new = 10**7 + rng.randrange(10**9)  # far above the generated ids, new every run
    fresh = list(range(first_new, first_new + CHANGED // 2))
    template = next(iter(synthetic_films(1, seed=rng.randrange(10**6))))[0]
    started = time.perf_counter()
    written = 0
    half = BATCH // 2
    for k in range(0, CHANGED // 2, half):
        ids = updated[k : k + half] + fresh[k : k + half]
        summary = await upsert_movies(db, [changed_film(template, token, i) for i in ids])
        written += summary.inserted + summary.updated
    return {"write_s": time.perf_counter() - started, "written": written}


# --- (d): in process ------------------------------------------------------------------------


def median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def title_search(snap: Snapshot, reps: int) -> list[dict[str, Any]]:
    con = duckdb_from_snapshot(snap)
    rows = []
    for q in TITLE_QUERIES:
        search = prepare(MovieQuery(filters=CatalogFilter(), q=q, limit=20), b"bench")
        ours = search_snapshot(snap, search)
        where = f"contains(title_normalized, '{q}')"
        sql = [
            f"SELECT count(*) FROM films WHERE {where}",
            f"SELECT {PAGE_COLUMNS} FROM films WHERE {where} "
            "ORDER BY popularity DESC NULLS LAST, id LIMIT 21",
        ]
        total = con.execute(sql[0]).fetchone()
        page = con.execute(sql[1]).fetchall()
        assert total is not None and ours.total == total[0], q
        assert [m.id for m in ours.items] == [r[0] for r in page[:20]], q

        def engine(prepared: PreparedSearch = search) -> None:
            search_snapshot(snap, prepared)

        def duck(statements: list[str] = sql) -> None:
            for statement in statements:
                con.execute(statement).fetchall()

        rows.append(
            {
                "q": q,
                "matches": ours.total,
                "engine_s": median_time(engine, reps),
                "duckdb_s": median_time(duck, reps),
            }
        )
    con.close()
    return rows


async def in_process(
    db: AsyncDatabase[Document], store: SnapshotStore, directory: Path, reps: int
) -> dict[str, Any]:
    state = await catalogue_state(db)
    t = time.perf_counter()
    snap = await asyncio.to_thread(read_snapshot, store.path(state.catalogue), state.catalogue, 1)
    load_s = time.perf_counter() - t
    ids = np.random.default_rng(0).choice(snap.ids, CHANGED, replace=False)
    t = time.perf_counter()
    docs = await find_movies(db, ids.tolist(), SNAPSHOT_PROJECTION)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    apply_changes(snap, ids.tolist(), docs, version=snap.version, build_id=2, lineage=Lineage())
    apply_s = time.perf_counter() - t
    path = directory / "bench-copy.snapshot"
    t = time.perf_counter()
    size = write_snapshot(snap, path)
    save_s = time.perf_counter() - t
    path.unlink()
    return {
        "films": snap.size,
        "load_s": load_s,
        "read_1000_s": read_s,
        "apply_1000_s": apply_s,
        "save_s": save_s,
        "file_mb": size / 1e6,
        "title": await asyncio.to_thread(title_search, snap, reps),
    }


# --- the run --------------------------------------------------------------------------------


def detail_at(base: str, films: int, requests: int) -> dict[str, dict[str, float]]:
    """Film detail against `/health` on the running service (keep-alive, the API key)."""
    with httpx.Client(base_url=base, headers={"X-API-Key": API_KEY}, timeout=60) as http:
        return detail_vs_health(http, films, requests, random.Random(15))


async def run(
    directory: Path, restarts: int, reps: int, wait_s: float, detail_requests: int
) -> dict[str, Any]:
    films = loaded_films(directory)
    if not films:
        raise SystemExit(f"no catalogue in {directory}: run `generate` first")
    server = catalogue_server(directory)
    server.start()
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.uri, tz_aware=True)
    db = client[DB_NAME]
    store = SnapshotStore(directory / "snapshots", DB_NAME)
    first_file = directory / "first-start.json"
    out: dict[str, Any] = {"films": films, "starts": []}
    try:
        state = await catalogue_state(db)
        if not store.path(state.catalogue).exists():
            print("(a) first start: a full read of the catalogue...", flush=True)
            first = await start_service(server.uri, directory, state.version, 4 * 3600, "first")
            first["at"] = datetime.now(UTC).isoformat(timespec="minutes")
            first_file.write_text(json.dumps(first))
        out["first"] = json.loads(first_file.read_text()) if first_file.exists() else None
        version = await get_data_version(db)
        for k in range(restarts):
            print(f"(b) restart {k + 1}...", flush=True)
            out["starts"].append(
                await start_service(server.uri, directory, version, wait_s, f"restart-{k + 1}")
            )
        # (c) the service up and idle while 1,000 films are written, then polled.
        token = f"zq{int(time.time()) % 10**6}"
        before = (await catalogue_state(db)).version
        port = free_port()
        log = directory / "service-changes.log"
        env = service_env(server.uri, directory)
        with server_process(service_command(port), env, log) as proc:
            base = f"http://127.0.0.1:{port}"
            await asyncio.to_thread(wait_until, f"{base}/health", proc, log, wait_s)
            async with httpx.AsyncClient(
                base_url=base, headers={"X-API-Key": API_KEY}, timeout=wait_s
            ) as http:
                await until(http, before, wait_s)
                print("(c) film detail vs /health...", flush=True)
                detail = await asyncio.to_thread(detail_at, base, films, detail_requests)
                summary = (await http.get("/v1/analytics/summary")).json()
                print("(c) writing 1,000 changed films...", flush=True)
                written = await write_changes(db, films, token)
                version = await get_data_version(db)
                expected = summary["catalogue_films"] + CHANGED // 2
                t = time.perf_counter()

                def shows(s: dict[str, Any], _m: dict[str, Any]) -> bool:
                    return bool(int(s["catalogue_films"]) == expected)

                await until(http, version, wait_s, shows)
                marked = await http.get("/v1/movies", params={"q": token, "limit": 1})
                lag = time.perf_counter() - t
                assert marked.json()["total"] == CHANGED, marked.text[:300]
        out["detail"] = detail
        out["changes"] = {
            **written,
            "lag_s": lag,
            "versions": version - before,
            "log": log_lines(log, "films changed"),
        }
        print("(c) restart after the changes...", flush=True)
        out["starts"].append(
            await start_service(server.uri, directory, version, wait_s, "after-changes")
        )
        print("(d) in process...", flush=True)
        out["in_process"] = await in_process(db, store, directory, reps)
        return out
    finally:
        await client.close()
        server.stop()


def report(r: dict[str, Any], command: str) -> str:
    def s(x: float) -> str:
        return f"{x:.2f}"

    lines = [
        "## Snapshot at scale",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs), Python "
        f"{platform.python_version()}, numpy {np.__version__}, DuckDB {duckdb.__version__}, "
        f"FerretDB v1.24.2 (SQLite, patched `_id` lookups) local, {r['films']:,} synthetic "
        "films (the generator of `bench_analytics`). The service: uvicorn, one worker"
        + (", loading the trained models at every start." if r.get("models") else "."),
        "",
    ]
    first = r.get("first")
    if first:
        lines += [
            "### (a) First start: a full read (what every restart and write batch cost before)",
            "",
            f"Process start to current answers: **{first['current_s']:.0f} s** "
            f"(measured {first['at']}, when the persisted snapshot was first made).",
            "",
        ]
    lines += [
        "### (b) Restarts: process start to current answers",
        "",
        "Seconds from spawning the process to `/health`, and to both an analytics answer "
        "(`/v1/analytics/summary`) and a title search (`/v1/movies?q=love`) carrying the "
        "database's current data version.",
        "",
        "| start | /health s | current answers s | what the service logged |",
        "|---|---:|---:|---|",
    ]
    for start in r["starts"]:
        lines.append(
            f"| {start['label']} | {s(start['http_up_s'])} | **{s(start['current_s'])}** | "
            f"{'; '.join(start['log'])[:300]} |"
        )
    c = r["changes"]
    lines += [
        "",
        f"### (c) {CHANGED:,} changed films written into the catalogue",
        "",
        f"{CHANGED // 2} stored films updated and {CHANGED // 2} new ones, {BATCH} per "
        f"`upsert_movies` batch ({c['versions']} data versions), written in "
        f"{c['write_s']:.1f} s while the service was idle. From the end of the writes to "
        "analytics and title search showing all of them: "
        f"**{c['lag_s']:.2f} s** ({'; '.join(c['log'])[:300]}). "
        "The `after-changes` restart above caught up with them from the change log.",
        "",
    ]
    detail = r.get("detail")
    if detail:
        health, film = detail["/health"], detail["/v1/movies/{id}"]
        lines += [
            f"### (c2) Film detail at {r['films']:,} films, the service idle and current",
            "",
            "`GET /v1/movies/{id}` (random ids) and `/health` asked alternately over one "
            "keep-alive connection with the API key (`bench_detail.detail_vs_health`):",
            "",
            "| path | p50 ms | p99 ms |",
            "|---|---:|---:|",
            f"| `/health` | {health['p50'] * 1000:.2f} | {health['p99'] * 1000:.2f} |",
            f"| `/v1/movies/{{id}}` | {film['p50'] * 1000:.2f} | {film['p99'] * 1000:.2f} |",
            "",
            f"Detail p50 / `/health` p50: **{film['p50'] / health['p50']:.2f}x**.",
            "",
        ]
    p = r["in_process"]
    lines += [
        f"### (d) In process, on the persisted {p['films']:,}-film snapshot",
        "",
        f"Load (map, check every byte, decode strings): {s(p['load_s'])} s; save: "
        f"{s(p['save_s'])} s ({p['file_mb']:.0f} MB); {CHANGED:,} films read by `_id`: "
        f"{s(p['read_1000_s'])} s; applied to the snapshot: {s(p['apply_1000_s'])} s.",
        "",
        "Title search (`/v1/movies?q=...&limit=20`, sorted by popularity: the total and one "
        "page) vs DuckDB's `contains` over the same columns in its own tables, median of "
        "repetitions after a warm-up; the answers were checked equal.",
        "",
        "| q | matches | engine ms | DuckDB ms | engine / DuckDB |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in p["title"]:
        lines.append(
            f"| `{row['q']}` | {row['matches']:,} | {row['engine_s'] * 1000:.2f} | "
            f"{row['duckdb_s'] * 1000:.2f} | **{row['engine_s'] / row['duckdb_s']:.2f}x** |"
        )
    worst = max(p["title"], key=lambda row: row["engine_s"] / row["duckdb_s"])
    restart = max(x["current_s"] for x in r["starts"])
    lines += [
        "",
        "### Targets",
        "",
        f"- Restart at {r['films']:,} films, current answers <= 10 s from process start: "
        f"worst **{restart:.1f} s**.",
        f"- {CHANGED:,} changed films reflected <= 5 s: **{c['lag_s']:.2f} s**.",
        *(
            [
                f"- Film detail p50 <= 3x `/health`: **"
                f"{detail['/v1/movies/{id}']['p50'] / detail['/health']['p50']:.2f}x**."
            ]
            if detail
            else []
        ),
        f"- Title search <= 1x DuckDB: worst **{worst['engine_s'] / worst['duckdb_s']:.2f}x** "
        f"(`{worst['q']}`).",
        "",
    ]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="load the synthetic catalogue once into --dir")
    gen.add_argument("--films", type=int, default=1_000_000)
    gen.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    run_p = sub.add_parser("run", help="measure (a)-(d) on the catalogue in --dir")
    run_p.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    run_p.add_argument("--restarts", type=int, default=3)
    run_p.add_argument("--reps", type=int, default=7)
    run_p.add_argument("--timeout", type=float, default=600.0)
    run_p.add_argument("--detail-requests", type=int, default=500, help="(c2) pairs")
    run_p.add_argument(
        "--artifacts-dir",
        type=Path,
        help="trained models for the service to load at every start, as in production",
    )
    run_p.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.command == "generate":
        await generate(args.dir, args.films)
        return
    if args.artifacts_dir:
        shutil.rmtree(args.dir / "service-artifacts", ignore_errors=True)
        shutil.copytree(args.artifacts_dir, args.dir / "service-artifacts")
    results = await run(args.dir, args.restarts, args.reps, args.timeout, args.detail_requests)
    results["models"] = args.artifacts_dir is not None
    (args.dir / "last-run.json").write_text(json.dumps(results))
    markdown = report(results, "python -m bench.bench_snapshot " + " ".join(sys.argv[1:]))
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown)


if __name__ == "__main__":
    asyncio.run(main())
