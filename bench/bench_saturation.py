"""Tails under saturation: 100 busy connections on one worker, p99 next to p50.

    .venv/bin/python -m bench.bench_saturation [--seconds 20] [--connections 100]

Starts a throwaway FerretDB (by PID, stopped at the end), loads the 3,804 real train films
from ../shared/data, creates a stored predictor API key, runs the service in uvicorn (one
worker, the defaults: access log and metrics on; models from `--artifacts-dir`) and drives it
with `bench/loadgen.py` in a separate process: `--connections` keep-alive connections, each
sending its next request as soon as the previous answer is read. One scenario at a time:

* `POST /v1/predict/revenue`, one film per request (50 real films in turn);
* `GET /v1/analytics/genres`, a cached aggregate (the same query every time);
* the two interleaved (every other request), to see one starve the other.

Each runs `--warmup` seconds unmeasured, then `--seconds` measured. Target: p99 at most 5x
p50 for single predictions and cached aggregates, no error. The machine has 2 cores and the
generator needs one of them: its CPU share and the server's are reported with the figures.
`--profile PATH` runs the server under cProfile (stats to PATH; figures then not
representative). Figures go to bench/RESULTS.md between the `saturation-bench` markers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `bench.common`

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services.credentials import Role, create_api_key
from app.services.csv_io import import_tmdb_csv
from app.services.indexes import ensure_indexes
from bench.common import REPO, percentile, server_process, service_command, wait_until
from bench.common import write_section as write_results

SECTION = "saturation-bench"
TMDB_CSV = REPO.parent / "shared" / "data" / "tmdb_5000_movies.train.csv"
GENRES = "/v1/analytics/genres"
PREDICT = "/v1/predict/revenue"
TARGET_RATIO = 5.0
FILMS = 50


async def load(uri: str, db_name: str) -> tuple[int, str]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        db = client[db_name]
        await ensure_indexes(db)
        report = await import_tmdb_csv(db, TMDB_CSV)
        _, key = await create_api_key(db, "bench-saturation", Role.predictor)
        return report.summary.inserted, key
    finally:
        await client.close()


def raw_get(path: str, key: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n".encode()


def raw_post(path: str, key: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def predict_requests(key: str) -> list[bytes]:
    from bench.bench_predict import films

    items, _ = films(FILMS)
    return [raw_post(PREDICT, key, orjson.dumps({"items": [item]})) for item in items]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_scenario(
    port: int,
    server_pid: int,
    requests: list[bytes],
    args: argparse.Namespace,
    work: Path,
    name: str,
) -> dict[str, Any]:
    request_file = work / f"{name}.requests"
    request_file.write_bytes(b"\0".join(requests))
    out = work / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(port),
        "--requests",
        str(request_file),
        "--connections",
        str(args.connections),
        "--warmup",
        str(args.warmup),
        "--seconds",
        str(args.seconds),
        "--out",
        str(out),
    ]
    cpu_before, started = cpu_seconds(server_pid), time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, timeout=args.warmup + args.seconds + 120)
    server_cpu = (cpu_seconds(server_pid) - cpu_before) / (time.perf_counter() - started)
    result: dict[str, Any] = json.loads(out.read_text())
    result["server_cpu_share"] = server_cpu
    return result


def connection_spread(result: dict[str, Any], latencies: list[float]) -> float:
    """The slowest connection's median latency over the fastest one's: 1.0 when every
    connection is served alike, whatever the noise."""
    by: dict[int, list[float]] = {}
    for latency, conn in zip(latencies, result["connections"], strict=True):
        by.setdefault(conn, []).append(latency)
    medians = [percentile(v, 50) for v in by.values()]
    return max(medians) / min(medians)


def row(name: str, result: dict[str, Any], latencies: list[float]) -> tuple[str, float]:
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ok = result["statuses"]
    errors = sum(v for k, v in ok.items() if not k.startswith("2")) + len(result["errors"])
    ratio = p99 / p50
    cells = [
        name,
        f"{len(latencies) / result['seconds']:,.0f}",
        f"{p50 * 1000:.1f}",
        f"{percentile(latencies, 90) * 1000:.1f}",
        f"{p99 * 1000:.1f}",
        f"{percentile(latencies, 99.9) * 1000:.1f}",
        f"{max(latencies) * 1000:.1f}",
        f"**{ratio:.2f}**",
        f"{connection_spread(result, latencies):.2f}",
        str(errors),
        f"{result['server_cpu_share']:.0%}",
        f"{result['cpu_share']:.0%}",
    ]
    return "| " + " | ".join(cells) + " |", ratio if errors == 0 else float("inf")


def report(
    results: dict[str, dict[str, Any]],
    films: int,
    args: argparse.Namespace,
    load: str,
    baseline: dict[str, dict[str, Any]],
) -> str:
    lines = [
        "## Tails under saturation",
        "",
        f"`python -m bench.bench_saturation --connections {args.connections} --seconds "
        f"{args.seconds:g}{' --compare-gc' if baseline else ''}`, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
        f"Python {platform.python_version()}; {films} real films in a local FerretDB; uvicorn "
        "1 worker with the defaults (access log, metrics); load average before the run: "
        f"{load}. Load: `bench/loadgen.py` in its own process (uvloop, raw sockets), "
        f"{args.connections} keep-alive connections in a closed loop (no think time), "
        f"{args.warmup:g} s warm-up then {args.seconds:g} s measured per scenario; a stored "
        "predictor API key. CPU columns: share of one core used by the server process "
        "(event loop and threads) and by the generator during the scenario. `connections`: "
        "the slowest connection's median latency over the fastest one's (1.00: every "
        "connection served alike).",
        "",
        "| scenario | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | p99 / p50 "
        "| connections | errors | server CPU | generator CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    worst = 0.0
    for name, result in baseline.items():
        lines.append(row(f"`{name}` (GC_FREEZE=false: before)", result, result["latencies"])[0])
    for name, result in results.items():
        text, ratio = row(f"`{name}`", result, result["latencies"])
        lines.append(text)
        worst = max(worst, ratio)
    verdict = "met" if worst <= TARGET_RATIO else "NOT met"
    lines += [
        "",
        f"Worst p99 / p50 as shipped: **{worst:.2f}** (target <= {TARGET_RATIO:g} with no "
        f"error: {verdict}).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--artifacts-dir", default=str(REPO / "artifacts"))
    parser.add_argument("--only", choices=["predict", "genres", "mixed"], action="append")
    parser.add_argument(
        "--compare-gc",
        action="store_true",
        help="first run every scenario with GC_FREEZE=false (as before the fix), then as shipped",
    )
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, stats here")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md alone")
    args = parser.parse_args()
    if not TMDB_CSV.exists():
        sys.exit(f"needs the real data at {TMDB_CSV}")
    work = Path(tempfile.mkdtemp(prefix="bench-saturation-"))
    server = LocalServer(directory=work / "ferretdb", port=free_port())
    server.start()
    results: dict[str, dict[str, Any]] = {}
    baseline: dict[str, dict[str, Any]] = {}
    try:
        films, key = asyncio.run(load(server.uri, "bench_saturation"))
        env = {
            **os.environ,
            "MONGODB_URI": server.uri,
            "MONGODB_DB": "bench_saturation",
            "APP_ENV": "development",
            "RATE_LIMIT_PER_MINUTE": str(10**9),
            "LOCAL_DB_DIR": str(work / "unused-localdb"),
            "ARTIFACTS_DIR": str(Path(args.artifacts_dir).resolve()),
        }
        env.pop("ADMIN_API_KEY", None)
        env.pop("GC_FREEZE", None)
        load_average = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        if args.compare_gc:
            baseline = serve_and_load({**env, "GC_FREEZE": "false"}, key, args, work)
        results = serve_and_load(env, key, args, work)
    finally:
        server.stop()
    text = report(results, films, args, load_average, baseline)
    print(text)
    if not args.no_write and args.profile is None and not args.only:
        write_results(SECTION, text)


def serve_and_load(
    env: dict[str, str], key: str, args: argparse.Namespace, work: Path
) -> dict[str, dict[str, Any]]:
    """Start the service with `env`, run the scenarios against it, stop it."""
    results: dict[str, dict[str, Any]] = {}
    port = free_port()
    cmd = service_command(port)
    if args.profile is not None:
        cmd = [sys.executable, "-m", "bench.profile_server", str(args.profile), str(port)]
    predict = predict_requests(key)
    genres = [raw_get(GENRES, key)]
    scenarios = {
        "predict": ("POST /v1/predict/revenue, 1 film", predict),
        "genres": ("GET /v1/analytics/genres (cached)", genres),
        "mixed": (
            "both, interleaved",
            [r for pair in zip(predict, genres * len(predict), strict=True) for r in pair],
        ),
    }
    log = work / "service.log"
    with server_process(cmd, env, log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_until(f"{base}/health", proc, log)
        with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=120) as http:
            http.get(GENRES).raise_for_status()  # the first snapshot, then the cache
            http.post(
                PREDICT,
                content=predict[0].split(b"\r\n\r\n", 1)[1],
                headers={"Content-Type": "application/json"},
            ).raise_for_status()
        for name in args.only or list(scenarios):
            label, requests = scenarios[name]
            result = run_scenario(port, proc.pid, requests, args, work, name)
            if name == "mixed":
                results[label + ": predictions"] = split(result, 0)
                results[label + ": aggregates"] = split(result, 1)
            else:
                results[label] = result
    return results


def split(result: dict[str, Any], parity: int) -> dict[str, Any]:
    """One half of the interleaved scenario (even requests predict, odd ones read)."""
    indices: list[int] = result["indices"]
    part = dict(result)
    keep = [i % 2 == parity for i in indices]
    part["latencies"] = [x for x, k in zip(result["latencies"], keep, strict=True) if k]
    part["connections"] = [c for c, k in zip(result["connections"], keep, strict=True) if k]
    return part


if __name__ == "__main__":
    main()
