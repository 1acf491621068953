"""Film detail benchmark: `GET /v1/movies/{id}` on the local FerretDB as the catalogue grows.

For each size, synthetic films (the analytics benchmark's generator) are loaded into a local
FerretDB kept in `--data-dir` (reused by later runs: 1M films take about 20 minutes to
insert), then measured in one run:

(a) the database alone: `find_one({"_id": ...})` p50 through pymongo, with the FerretDB this
    project builds (`tools/ferretdb/patches` applied) and, given `--upstream-bin`, with an
    unpatched v1.24.2 binary on the same SQLite file;
(b) over HTTP (uvicorn on a local port, keep-alive client, an API key): the detail p50 and
    p99 against `/health`, round-robin, after the service's first analytics snapshot (so
    its background build does not share the CPU with the measurement).

    .venv/bin/python -m bench.bench_detail --sizes 10000 300000 \\
        --upstream-bin ~/.cache/tmdb-analytics/ferretdb/v1.24.2/ferretdb

Results go to bench/RESULTS.md under "Film detail" (between markers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, ferretdb_binary, free_port
from app.services.movies_repo import MOVIES, movie_key
from bench.bench_analytics import load_films
from bench.common import (
    RESULTS,
    percentile,
    server_process,
    service_command,
    wait_until,
    write_section,
)

SECTION = "detail-bench"
API_KEY = "bench-detail-admin-key-0123456789abcdef"


@contextlib.contextmanager
def ferretdb(directory: Path, binary: Path) -> Iterator[LocalServer]:
    """A FerretDB from `binary` over the SQLite files in `directory`, stopped on exit."""
    server = LocalServer(directory=directory, port=free_port())
    directory.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("FERRETDB_BIN")
    os.environ["FERRETDB_BIN"] = str(binary)
    try:
        server.start(wait_seconds=120)
    finally:
        if previous is None:
            os.environ.pop("FERRETDB_BIN", None)
        else:
            os.environ["FERRETDB_BIN"] = previous
    try:
        yield server
    finally:
        server.stop()


async def ensure_loaded(uri: str, name: str, n: int) -> float | None:
    """`n` films in database `name` (loaded unless a previous run left exactly those);
    returns the load time, or None when they were there."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[name]
        if await db[MOVIES].estimated_document_count() == n:
            return None
        await client.drop_database(name)
        print(f"[{n:,}] loading synthetic films...", flush=True)
        return await load_films(db, n)
    finally:
        await client.close()


async def db_lookups(uri: str, name: str, n: int, requests: int) -> list[float]:
    """Seconds per `find_one` by `_id`, random films, one at a time."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    rng = random.Random(7)
    times: list[float] = []
    try:
        movies = client[name][MOVIES]
        await movies.find_one({"_id": movie_key(1)})  # connection and first-touch costs
        for _ in range(requests):
            key = movie_key(rng.randint(1, n))
            t = time.perf_counter()
            doc = await movies.find_one({"_id": key})
            times.append(time.perf_counter() - t)
            assert doc is not None and doc["_id"] == key
    finally:
        await client.close()
    return times


def wait_for_snapshot(
    http: httpx.Client, server: subprocess.Popen[bytes], log: Path, timeout: float = 7200
) -> None:
    """Until `/ready` (asked as admin, so it says which check fails) reports the analytics
    snapshot `ok`; no model is trained here, so `/ready` as a whole stays 503."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the service exited (see {log})")
        if http.get("/ready").json().get("checks", {}).get("analytics") == "ok":
            return
        time.sleep(1)
    raise RuntimeError(f"no analytics snapshot after {timeout:g}s (see {log})")


def http_lookups(uri: str, name: str, n: int, requests: int, workdir: Path) -> dict[str, Any]:
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": uri,
        "MONGODB_DB": name,
        "ADMIN_API_KEY": API_KEY,
        "APP_ENV": "development",
        "RATE_LIMIT_PER_MINUTE": str(10**9),
        "REQUEST_TIMEOUT_SECONDS": "0",
        "LOCAL_DB_DIR": str(workdir / "unused-localdb"),
        "ARTIFACTS_DIR": str(workdir / "artifacts"),
    }
    rng = random.Random(11)
    log = workdir / f"service-{n}.log"
    with (
        server_process(service_command(port), env, log) as server,
        httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": API_KEY}, timeout=600
        ) as http,
    ):
        wait_until(f"http://127.0.0.1:{port}/health", server, log, timeout=1800)
        started = time.perf_counter()
        # The first snapshot (minutes at 300k films) builds in the background: wait it out.
        wait_for_snapshot(http, server, log)
        print(f"[{n:,}] service ready after {time.perf_counter() - started:.0f}s", flush=True)
        return detail_vs_health(http, n, requests, rng)


def detail_vs_health(
    http: httpx.Client, n: int, requests: int, rng: random.Random
) -> dict[str, dict[str, float]]:
    """p50 and p99 of `/health` and of `GET /v1/movies/{id}` for random ids in 1..n, asked
    alternately so that drift and noise hit both alike."""
    for _ in range(30):  # warm-up
        http.get("/health")
        http.get(f"/v1/movies/{rng.randint(1, n)}")
    samples: dict[str, list[float]] = {"/health": [], "/v1/movies/{id}": []}
    for _ in range(requests):
        t = time.perf_counter()
        assert http.get("/health").status_code == 200
        samples["/health"].append(time.perf_counter() - t)
        movie_id = rng.randint(1, n)
        t = time.perf_counter()
        response = http.get(f"/v1/movies/{movie_id}")
        samples["/v1/movies/{id}"].append(time.perf_counter() - t)
        assert response.status_code == 200 and response.json()["id"] == movie_id
    return {
        path: {"p50": percentile(values, 50), "p99": percentile(values, 99)}
        for path, values in samples.items()
    }


async def run_size(
    n: int, args: argparse.Namespace, patched: Path, upstream: Path | None
) -> dict[str, Any]:
    directory = args.data_dir / f"films-{n}"
    name = f"detail_{n}"
    with ferretdb(directory, patched) as server:
        load_s = await ensure_loaded(server.uri, name, n)
        db_patched = await db_lookups(server.uri, name, n, args.db_requests)
        http = await asyncio.to_thread(
            http_lookups, server.uri, name, n, args.requests, args.data_dir
        )
    db_upstream = None
    if upstream is not None:
        with ferretdb(directory, upstream) as server:
            db_upstream = await db_lookups(server.uri, name, n, args.upstream_requests)
    row = {
        "n": n,
        "load_s": load_s,
        "db_patched_p50": percentile(db_patched, 50),
        "db_upstream_p50": percentile(db_upstream, 50) if db_upstream else None,
        "http": http,
    }
    print(row, flush=True)
    return row


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}"


def report(rows: list[dict[str, Any]], command: str) -> str:
    out = [
        "## Film detail",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, FerretDB v1.24.2 (SQLite) local, built with "
        "`tools/ferretdb/patches` (the `_id` lookup uses the `_id` index). Synthetic films "
        "from `bench.bench_analytics` (about 2 KB each), random ids.",
        "",
        "### (a) `find_one({'_id': ...})` through pymongo, p50",
        "",
        "| films | patched ms | upstream v1.24.2 ms | upstream / patched |",
        "|---:|---:|---:|---:|",
    ]
    for r in rows:
        up, patched = r["db_upstream_p50"], r["db_patched_p50"]
        ratio = f"{up / patched:,.0f}x" if up else "-"
        out.append(f"| {r['n']:,} | {ms(patched)} | {ms(up) if up else '-'} | {ratio} |")
    out += [
        "",
        "### (b) `GET /v1/movies/{id}` over HTTP (keep-alive, API key) vs `/health`",
        "",
        "| films | /health p50 ms | detail p50 ms | detail p99 ms | detail p50 / health p50 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        health, detail = r["http"]["/health"], r["http"]["/v1/movies/{id}"]
        out.append(
            f"| {r['n']:,} | {ms(health['p50'])} | {ms(detail['p50'])} | {ms(detail['p99'])} "
            f"| **{detail['p50'] / health['p50']:.2f}x** |"
        )
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench-detail"))
    parser.add_argument("--requests", type=int, default=500, help="HTTP pairs per size")
    parser.add_argument("--db-requests", type=int, default=500)
    parser.add_argument(
        "--upstream-bin", type=Path, help="an unpatched FerretDB v1.24.2, for (a)'s comparison"
    )
    parser.add_argument("--upstream-requests", type=int, default=20, help="(slow: scans)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    patched = ferretdb_binary()
    rows = [await run_size(n, args, patched, args.upstream_bin) for n in args.sizes]
    markdown = report(rows, "python -m bench.bench_detail " + " ".join(sys.argv[1:]))
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown, args.results)
        print(f"written to {args.results}")


if __name__ == "__main__":
    asyncio.run(main())
