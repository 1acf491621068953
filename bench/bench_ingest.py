"""TMDB ingest benchmark: a full ingest against a TMDB stand-in that enforces a rate cap.

The stand-in is the test suite's fake TMDB (`tests/fake_tmdb.py`, a real HTTP server on
127.0.0.1, run in a process of its own as TMDB runs elsewhere): 429 with `Retry-After: 1`
past `--cap` requests in any sliding second, as TMDB does, and a 503 for a random
`--error-rate` of the requests it lets through. The client is
the service's own (`TmdbClient`, `TMDB_RATE_LIMIT`/`TMDB_CONCURRENCY` defaults) and the films
go into a throwaway local FerretDB, as `tmdb-analytics ingest tmdb` would write them.

Per run: wall time of `ingest_tmdb`, requests the server let through its rate limit (200,
404 and 503) per second against the cap, films per second, 429s and 503s, the most 429s in
any one second (a burst would show here), and the seconds in which the server saw no request
at all (the client pausing, or waiting on the database).

    .venv/bin/python -m bench.bench_ingest                 # 3 runs of 999 films, cap 40/s

Results go to bench/RESULTS.md under "TMDB ingest" (between markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from starlette.requests import Request
from starlette.responses import Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services.movies_repo import MOVIES
from app.services.tmdb_client import TmdbClient
from app.services.tmdb_ingest import IngestOptions, ingest_tmdb
from app.settings import Settings
from bench.common import RESULTS, write_section
from tests.fake_tmdb import TOKEN, FakeTmdb, catalogue

SECTION = "ingest-bench"


class TimedTmdb(FakeTmdb):
    """The fake TMDB, noting when each request reached its gate and what it answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[float, int]] = []

    def _gate(self, request: Request) -> Response | None:
        refused = super()._gate(request)
        self.log.append((time.monotonic(), 200 if refused is None else refused.status_code))
        return refused


def films(n: int) -> list[Any]:
    """n films spread over the years 1990-2026, as the discover listing finds them."""
    years = list(range(1990, 2027))
    per_year = {y: n // len(years) + (1 if i < n % len(years) else 0) for i, y in enumerate(years)}
    return catalogue(per_year)


def analyse(log: list[tuple[float, int]], started: float, ended: float, cap: int) -> dict[str, Any]:
    times = [t for t, _ in log]
    let_through = [t for t, status in log if status != 429]
    throttled = [t for t, status in log if status == 429]
    worst = 0
    j = 0
    for i, t in enumerate(throttled):  # most 429s in any sliding second
        while throttled[j] <= t - 1.0:
            j += 1
        worst = max(worst, i - j + 1)
    silent = 0.0
    previous = started
    for t in [*times, ended]:
        gap = t - previous
        if gap > 0.1:  # at 40/s the next request is due within 25 ms
            silent += gap
        previous = t
    elapsed = ended - started
    return {
        "elapsed_s": elapsed,
        "requests": len(log),
        "let_through": len(let_through),
        "rate": len(let_through) / elapsed,
        "of_cap": len(let_through) / elapsed / cap,
        "throttled": len(throttled),
        "errors_503": sum(1 for _, s in log if s == 503),
        "worst_429_second": worst,
        "silent_s": silent,
    }


@contextmanager
def local_db(workdir: Path) -> Iterator[LocalServer]:
    server = LocalServer(directory=workdir / "ferretdb", port=free_port())
    server.directory.mkdir(parents=True)
    server.start(wait_seconds=120)
    try:
        yield server
    finally:
        server.stop()


def serve_fake(
    films_n: int, cap: int, error_rate: float, seed: int, ready: Any, stop: Any, out: str
) -> None:
    """The stand-in, in a child process: serve until `stop`, then write its request log."""
    fake = TimedTmdb(
        films(films_n), rate_limit=cap, retry_after=1, error_rate=error_rate, seed=seed
    )
    with fake.serve() as base_url:
        ready.put(base_url)
        stop.wait()
    Path(out).write_text(json.dumps(fake.log))


async def one_run(uri: str, run: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    ready, stop = spawn.Queue(), spawn.Event()
    log_path = workdir / f"fake-{run}.json"
    child = spawn.Process(
        target=serve_fake,
        args=(args.films, args.cap, args.error_rate, run, ready, stop, str(log_path)),
    )
    child.start()
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    name = f"bench_ingest_{run}"
    try:
        base_url = await asyncio.to_thread(ready.get, True, 120)
        await client.drop_database(name)
        db = client[name]
        async with TmdbClient(
            TOKEN, base_url, rate_limit=args.rate_limit, concurrency=args.concurrency
        ) as tmdb:
            started = time.monotonic()
            summary = await ingest_tmdb(db, tmdb, IngestOptions(batch_size=args.batch_size))
            ended = time.monotonic()
        stored = await db[MOVIES].count_documents({})
        assert summary.status == "done" and stored == args.films, (summary, stored)
    finally:
        stop.set()
        child.join(60)
        await client.drop_database(name)
        await client.close()
    log = [(float(t), int(status)) for t, status in json.loads(log_path.read_text())]
    row = analyse(log, started, ended, args.cap)
    row["films_per_s"] = args.films / row["elapsed_s"]
    row["client_paused_s"] = tmdb.stats.waited_s
    print(f"run {run}: {row}", flush=True)
    return row


def report(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    out = [
        "## TMDB ingest",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}. A full ingest (`ingest_tmdb`, discover listing, batches "
        f"of {args.batch_size}) of {args.films} films from the fake TMDB of the test suite "
        f"(real HTTP on 127.0.0.1): at most {args.cap} requests in any sliding second, past "
        f"that 429 with `Retry-After: 1`; a 503 for {args.error_rate:.0%} of the requests it "
        f"lets through. Client: `TmdbClient(rate_limit={args.rate_limit:g}, "
        f"concurrency={args.concurrency})`; films written into a local FerretDB.",
        "",
        "| run | wall s | requests | let through /s | of the cap | films/s | 429s | most 429s "
        "in 1 s | 503s | s without a request | client paused s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rows, start=1):
        out.append(
            f"| {i} | {r['elapsed_s']:.1f} | {r['requests']} | {r['rate']:.1f} | "
            f"**{r['of_cap']:.0%}** | {r['films_per_s']:.1f} | {r['throttled']} | "
            f"{r['worst_429_second']} | {r['errors_503']} | {r['silent_s']:.1f} | "
            f"{r['client_paused_s']:.1f} |"
        )
    median = statistics.median(r["of_cap"] for r in rows)
    out += ["", f"Median: **{median:.0%} of the cap**."]
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=999)
    parser.add_argument("--cap", type=int, default=40, help="the stand-in's requests/s")
    parser.add_argument("--error-rate", type=float, default=0.02, help="share of 503s")
    parser.add_argument(
        "--rate-limit", type=float, default=Settings().tmdb_rate_limit, help="TMDB_RATE_LIMIT"
    )
    parser.add_argument(
        "--concurrency", type=int, default=Settings().tmdb_concurrency, help="TMDB_CONCURRENCY"
    )
    parser.add_argument("--batch-size", type=int, default=IngestOptions().batch_size)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp, local_db(Path(tmp)) as db:
        rows = [await one_run(db.uri, run, args, Path(tmp)) for run in range(1, args.runs + 1)]
    markdown = report(rows, args, "python -m bench.bench_ingest " + " ".join(sys.argv[1:]))
    print(markdown)
    if not args.no_write:
        write_section(SECTION, markdown, args.results)
        print(f"written to {args.results}")


if __name__ == "__main__":
    asyncio.run(main())
