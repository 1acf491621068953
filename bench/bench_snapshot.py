"""Snapshot benchmark at catalogue scale (issue 15, parts 1, 2 and 4).

A synthetic catalogue (the generator of `bench.bench_analytics`) is loaded once into a local
FerretDB kept in `--dir` (default /tmp/bench-1m), because loading a million films takes the
best part of an hour on a 2-core machine; every later run reuses it.

    nice .venv/bin/python -m bench.bench_snapshot generate --films 1000000   # once
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services.indexes import ensure_indexes
from app.services.meta_repo import bump_data_version
from app.services.movies_repo import MOVIES
from bench.bench_analytics import synthetic_films

DB_NAME = "bench_catalogue"
DEFAULT_DIR = Path("/tmp/bench-1m")


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="load the synthetic catalogue once into --dir")
    gen.add_argument("--films", type=int, default=1_000_000)
    gen.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    if args.command == "generate":
        await generate(args.dir, args.films)


if __name__ == "__main__":
    asyncio.run(main())
