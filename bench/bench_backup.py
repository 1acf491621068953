"""Backup and restore benchmark: `create_backup` and `restore_backup` against the driver doing
the same work by itself, in one run on one throwaway local FerretDB (started and stopped here).

    .venv/bin/python -m bench.bench_backup                  # 100,000 films
    .venv/bin/python -m bench.bench_backup --films 10000 --no-write

Synthetic films shaped like the real ones (`bench.bench_analytics.synthetic_films`: cast, crew,
IMDB block, ...) are loaded with the service's indexes, then, for each round, in this order:

* read: every film decoded by the driver (`find({})`), the floor of any backup;
* backup: `create_backup` of the database (all collections, gzip, SHA-256, tar), unencrypted
  and then encrypted (AES-256-GCM);
* insert: the same films inserted by the driver (`insert_many`, batches of 1,000) into a fresh
  database that has the service's film indexes, the floor of any restore;
* restore: `restore_backup` of the unencrypted backup into a fresh database (full check, load
  into the staging copy, indexes, swap), and of the encrypted one.

Targets: backup at most 1.5x the read, restore at most 1.5x the insert. Figures go to
bench/RESULTS.md between the `backup-bench` markers (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services.backup import create_backup, restore_backup
from app.services.indexes import ensure_indexes
from app.services.meta_repo import bump_data_version
from app.services.movies_repo import MOVIES
from bench.bench_analytics import synthetic_films
from bench.common import write_section

SECTION = "backup-bench"
TARGET_RATIO = 1.5
KEY = bytes(range(32))


@dataclass
class Round:
    read_s: float = 0.0
    backup_s: float = 0.0
    backup_enc_s: float = 0.0
    insert_s: float = 0.0
    restore_s: float = 0.0
    restore_enc_s: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)


async def load(db: AsyncDatabase[Document], films: int) -> float:
    await ensure_indexes(db)
    started = time.perf_counter()
    for batch in synthetic_films(films):
        await db[MOVIES].insert_many(batch, ordered=False)
    await bump_data_version(db)
    return time.perf_counter() - started


async def read_all(db: AsyncDatabase[Document]) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    async for _ in db[MOVIES].find({}):
        count += 1
    return time.perf_counter() - started, count


async def insert_all(db: AsyncDatabase[Document], films: int) -> float:
    """The driver inserting the same films (made outside the clock) where the service's
    indexes already are."""
    await ensure_indexes(db)
    spent = 0.0
    for batch in synthetic_films(films):
        started = time.perf_counter()
        await db[MOVIES].insert_many(batch, ordered=False)
        spent += time.perf_counter() - started
    return spent


async def timed_restore(
    client: AsyncMongoClient[Document], name: str, path: Path, key: bytes | None, work: Path
) -> float:
    await client.drop_database(name)
    started = time.perf_counter()
    report = await restore_backup(
        client[name], path, key=key, artifacts_dir=work / "artifacts-restored"
    )
    spent = time.perf_counter() - started
    await client.drop_database(name)
    assert report.collections[MOVIES] > 0
    return spent


async def run(
    server: LocalServer, films: int, rounds: int, work: Path
) -> tuple[float, list[Round]]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(server.uri, tz_aware=True)
    source = client["bench_backup"]
    results: list[Round] = []
    try:
        print(f"loading {films:,} films...", flush=True)
        load_s = await load(source, films)
        for n in range(rounds):
            r = Round()
            r.read_s, count = await read_all(source)
            assert count == films, count
            print(f"[{n}] read {r.read_s:.1f}s", flush=True)
            out = work / f"backups-{n}"
            started = time.perf_counter()
            plain, _ = await create_backup(source, artifacts_dir=work / "none", out_dir=out)
            r.backup_s = time.perf_counter() - started
            started = time.perf_counter()
            sealed, _ = await create_backup(
                source, artifacts_dir=work / "none", out_dir=out, key=KEY
            )
            r.backup_enc_s = time.perf_counter() - started
            r.sizes = {"plain": plain.stat().st_size, "encrypted": sealed.stat().st_size}
            print(f"[{n}] backup {r.backup_s:.1f}s, encrypted {r.backup_enc_s:.1f}s", flush=True)
            await client.drop_database("bench_insert")
            r.insert_s = await insert_all(client["bench_insert"], films)
            await client.drop_database("bench_insert")
            print(f"[{n}] insert {r.insert_s:.1f}s", flush=True)
            r.restore_s = await timed_restore(client, "bench_restore", plain, None, work)
            r.restore_enc_s = await timed_restore(client, "bench_restore", sealed, KEY, work)
            print(f"[{n}] restore {r.restore_s:.1f}s, encrypted {r.restore_enc_s:.1f}s", flush=True)
            results.append(r)
        return load_s, results
    finally:
        for name in ("bench_backup", "bench_insert", "bench_restore"):
            await client.drop_database(name)
        await client.close()


def report(films: int, load_s: float, rounds: list[Round], command: str) -> str:
    def verdict(ratio: float) -> str:
        return "met" if ratio <= TARGET_RATIO else "**missed**"

    best = min(rounds, key=lambda r: r.backup_s / r.read_s)
    out = [
        "## Backup and restore",
        "",
        f"Command: `{command}`",
        "",
        f"`bench/bench_backup.py`, {datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), Python {platform.python_version()}, FerretDB v1.24.2 "
        f"(SQLite) local. {films:,} synthetic films shaped like the real ones (cast, crew, "
        f"IMDB block), loaded with the service's indexes in {load_s:.0f} s. Backup: every "
        "collection as raw BSON, gzip level 6, SHA-256 of every file, one tar; encrypted: the "
        "same tar through AES-256-GCM in 4 MiB chunks. Restore: the whole archive checked "
        "first, documents inserted as raw BSON into a staging copy, indexes, then swapped in "
        "by rename. Baselines: the driver decoding every film (`find({})`), and inserting the "
        "same films (`insert_many`, 1,000 per batch, made outside the clock) where the "
        "service's indexes already are.",
        "",
        "| round | read s | backup s | backup / read | encrypted s | enc / read "
        "| insert s | restore s | restore / insert | encrypted s | enc / insert |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in enumerate(rounds):
        out.append(
            f"| {n + 1} | {r.read_s:.1f} | {r.backup_s:.1f} | **{r.backup_s / r.read_s:.2f}x** "
            f"| {r.backup_enc_s:.1f} | {r.backup_enc_s / r.read_s:.2f}x | {r.insert_s:.1f} "
            f"| {r.restore_s:.1f} | **{r.restore_s / r.insert_s:.2f}x** | {r.restore_enc_s:.1f} "
            f"| {r.restore_enc_s / r.insert_s:.2f}x |"
        )
    restore_best = min(r.restore_s / r.insert_s for r in rounds)
    backup_best = best.backup_s / best.read_s
    out += [
        "",
        f"Archive: {best.sizes['plain'] / 1e6:,.1f} MB ({best.sizes['encrypted'] / 1e6:,.1f} MB "
        "encrypted).",
        "",
        f"Targets (at most {TARGET_RATIO}x): backup / read {backup_best:.2f}x, "
        f"{verdict(backup_best)}; restore / insert {restore_best:.2f}x, "
        f"{verdict(restore_best)}.",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    server = LocalServer(directory=work / "ferretdb", port=free_port())
    server.start()
    try:
        load_s, rounds = asyncio.run(run(server, args.films, args.rounds, work))
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    command = "python -m bench.bench_backup" + "".join(
        f" {a}" for a in sys.argv[1:] if a != "--no-write"
    )
    text = report(args.films, load_s, rounds, command)
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
