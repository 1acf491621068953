"""Warm path benchmark: a cached aggregate over HTTP with an API key, next to `/health`.

    .venv/bin/python -m bench.bench_warm [--rounds 1500] [--profile /tmp/warm.prof]

Starts a throwaway FerretDB (by PID, stopped at the end), loads the 3,804 real train films
from ../shared/data, creates a stored viewer API key (the kind partners use: looked up by id,
checked by hash, then cached), runs the service in uvicorn (1 worker, the production
defaults: access log and metrics on) and measures, in one run and round-robin so that drift
hits every series alike:

* `GET /health` (public, touches nothing) and a few analytics aggregates already in the
  result cache (plus one film search page, for information);
* each with a **fresh connection per request** (connect, send, read, close: what a one-shot
  client pays) and over **one keep-alive connection**.

The client is a minimal blocking HTTP/1.1 client on raw sockets, so that its own cost (the
same for every series) dilutes the ratios as little as possible. Target: every cached
aggregate's p50 at most 1.5x `/health`'s, in both modes. `--profile PATH` runs the server
under cProfile and writes its stats to PATH (then the figures are not representative).
Figures go to bench/RESULTS.md between the `warm-bench` markers (other sections are kept).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services.credentials import Role, create_api_key
from app.services.csv_io import import_tmdb_csv
from app.services.indexes import ensure_indexes
from bench.common import percentile, server_process, service_command, wait_until, write_section

SECTION = "warm-bench"
TMDB_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "tmdb_5000_movies.train.csv"
AGGREGATES = [
    "/v1/analytics/summary",
    "/v1/analytics/genres?year_from=2000",
    "/v1/analytics/people?role=director&sort=revenue",
    "/v1/analytics/trends?by=year",
]
SEARCH = "/v1/movies?genre=Drama&sort=-revenue&limit=20"
TARGET_RATIO = 1.5
MODES = ("fresh", "keep-alive")


async def load(uri: str, db_name: str) -> tuple[int, str]:
    """Import the real films; return how many, and a new viewer API key."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[db_name]
        await ensure_indexes(db)
        report = await import_tmdb_csv(db, TMDB_CSV)
        _, key = await create_api_key(db, "bench-warm", Role.viewer)
        return report.summary.inserted, key
    finally:
        await client.close()


# --- a minimal HTTP/1.1 client -------------------------------------------------------------


def request_bytes(path: str, headers: dict[str, str], *, close: bool) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_response(sock: socket.socket, pending: bytes = b"") -> tuple[int, bytes, bytes]:
    """(status, body, bytes read past the response) of one Content-Length response."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before the response head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed inside the body")
        rest += chunk
    return status, rest[:length], rest[length:]


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class KeepAlive:
    def __init__(self, port: int) -> None:
        self.sock = connect(port)
        self.pending = b""

    def get(self, raw: bytes) -> int:
        self.sock.sendall(raw)
        status, _, self.pending = read_response(self.sock, self.pending)
        return status

    def close(self) -> None:
        self.sock.close()


def fresh_get(port: int, raw: bytes) -> int:
    sock = connect(port)
    try:
        sock.sendall(raw)
        status, _, _ = read_response(sock)
        return status
    finally:
        sock.close()


def measure(port: int, key: str, rounds: int) -> dict[tuple[str, str], list[float]]:
    """p50 series per (mode, path): every path in both modes, interleaved round by round."""
    paths = ["/health", *AGGREGATES, SEARCH]
    raws = {
        (mode, path): request_bytes(
            path, {} if path == "/health" else {"X-API-Key": key}, close=mode == "fresh"
        )
        for mode in MODES
        for path in paths
    }
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in raws}
    keep = KeepAlive(port)
    try:
        for i in range(-100, rounds):  # the first 100 rounds warm up caches and code paths
            for (mode, path), raw in raws.items():
                t = time.perf_counter()
                status = keep.get(raw) if mode == "keep-alive" else fresh_get(port, raw)
                elapsed = time.perf_counter() - t
                assert status == 200, (mode, path, status)
                if i >= 0:
                    samples[(mode, path)].append(elapsed)
    finally:
        keep.close()
    return samples


def report(
    samples: dict[tuple[str, str], list[float]], films: int, rounds: int, load: str
) -> tuple[str, float]:
    lines = [
        "## Warm path: cached aggregates next to `/health`",
        "",
        f"`python -m bench.bench_warm --rounds {rounds}`, {datetime.now(UTC):%Y-%m-%d %H:%M} "
        f"UTC, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}; {films} real films in a local FerretDB; uvicorn "
        "1 worker with the defaults (access log, metrics); load average before the run: "
        f"{load}. One client on raw sockets, {rounds} rounds, every series round-robin in "
        "each round. Aggregates carry a stored viewer API key; `/health` none. `fresh`: a "
        "new TCP connection per request (`Connection: close`); `keep-alive`: one connection.",
        "",
        "| request | mode | p50 ms | p99 ms | p50 / health p50 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    worst = 0.0
    for mode in MODES:
        health = percentile(samples[(mode, "/health")], 50)
        for (m, path), values in samples.items():
            if m != mode:
                continue
            p50 = percentile(values, 50)
            ratio = p50 / health
            if path in AGGREGATES:
                worst = max(worst, ratio)
            lines.append(
                f"| `{path}` | {mode} | {p50 * 1000:.3f} | {percentile(values, 99) * 1000:.3f} "
                f"| {ratio:.2f} |"
            )
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"Worst cached aggregate p50 / `/health` p50, both modes: **{worst:.2f}** "
        f"(target <= {TARGET_RATIO}: {verdict}). The film search row is for information.",
    ]
    return "\n".join(lines), worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1500, help="rounds over every series")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, stats here")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args()
    if not TMDB_CSV.exists():
        sys.exit(f"needs the real data at {TMDB_CSV}")
    work = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    server = LocalServer(directory=work / "ferretdb", port=free_port())
    server.start()
    try:
        films, key = asyncio.run(load(server.uri, "bench_warm"))
        port = free_port()
        env = {
            **os.environ,
            "MONGODB_URI": server.uri,
            "MONGODB_DB": "bench_warm",
            "APP_ENV": "development",
            "RATE_LIMIT_PER_MINUTE": str(10**9),
            "LOCAL_DB_DIR": str(work / "unused-localdb"),
            "ARTIFACTS_DIR": str(work / "artifacts"),
        }
        env.pop("ADMIN_API_KEY", None)
        cmd = service_command(port)
        if args.profile is not None:
            cmd = [sys.executable, "-m", "bench.profile_server", str(args.profile), str(port)]
        log = work / "service.log"
        with server_process(cmd, env, log) as proc:
            wait_until(f"http://127.0.0.1:{port}/health", proc, log)
            load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            samples = measure(port, key, args.rounds)
    finally:
        server.stop()
    text, _ = report(samples, films, args.rounds, load_average)
    print(text)
    if not args.no_write and args.profile is None:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
