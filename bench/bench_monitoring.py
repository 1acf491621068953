"""What the prediction log costs single-film predictions: the same service with the log off
(`PREDICTION_LOG_SAMPLE=0`) and on (`=1`, every film logged), in one run.

    .venv/bin/python -m bench.bench_monitoring [--model revenue] [--rounds 8] [--per-round 250]

What it does, all on this machine and in one run:

1. starts a throwaway FerretDB and two service processes (uvicorn, 1 worker each, the active
   `artifacts/<model>` version) that differ only in `PREDICTION_LOG_SAMPLE` (each writes its
   own database on that FerretDB);
2. sends single-film `POST /v1/predict/<model>` requests (real films, each with its TMDB
   `id`, so the log also records the film in `predicted_films`): sequentially with one
   keep-alive client, then with 8 requests in flight; the two servers take turns, round by
   round, in the order off-on, on-off, ... so that load from other jobs on this shared machine
   hits both alike;
3. checks that the logging server wrote every prediction it answered and dropped none, and
   writes the ratios under "Prediction log overhead" in bench/RESULTS.md (the issue's target:
   logging costs at most 10% of single-prediction throughput and p50).

The drift refresh is off in both (`DRIFT_REFRESH_SECONDS=0`): it reads the log every five
minutes, not per request, and is not what is measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.localdb import free_port  # noqa: E402
from app.ml import artifacts  # noqa: E402
from bench.bench_predict import concurrent_rps, films, summary, timed  # noqa: E402
from bench.common import (  # noqa: E402
    scratch_database,
    server_process,
    service_command,
    wait_until,
    write_section,
)

SECTION = "monitoring-bench"
ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789abcdef"
SERIES = ("off", "on")
SAMPLE = {"off": "0", "on": "1"}
TARGET = 0.10  # at most 10% slower


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (Linux `/proc`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def order(round_no: int) -> tuple[str, ...]:
    """off-on, on-off, off-on, ...: neither series always goes first."""
    return SERIES if round_no % 2 == 0 else SERIES[::-1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.artifacts_dir).resolve()
    version = artifacts.read_active(root, args.model)
    if version is None:
        raise SystemExit(f"no trained {args.model} model under {root}: run tmdb-analytics train")
    items, _ = films(1000, with_ids=True)
    # Encoded once: the client's JSON encoder is not what is measured.
    bodies = [orjson.dumps({"items": [item]}) for item in items]

    with scratch_database("bench-monitoring-") as (work, db):
        ports = {name: free_port() for name in SERIES}
        base_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        envs = {
            name: base_env
            | {
                "PYTHONPATH": str(REPO),
                "APP_ENV": "development",
                "MONGODB_URI": db.uri,
                "MONGODB_DB": f"bench_monitoring_{name}",
                "ARTIFACTS_DIR": str(root),
                "ADMIN_API_KEY": ADMIN_KEY,
                "RATE_LIMIT_PER_MINUTE": str(10**9),
                "LOG_LEVEL": "warning",
                "PREDICTION_LOG_SAMPLE": SAMPLE[name],
                "DRIFT_REFRESH_SECONDS": "0",
            }
            for name in SERIES
        }
        urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERIES}
        path = f"/v1/predict/{args.model}"
        headers = {"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"}
        results: dict[str, Any] = {"model": args.model, "version": version}
        with (
            server_process(service_command(ports["off"]), envs["off"], work / "off.log") as p0,
            server_process(service_command(ports["on"]), envs["on"], work / "on.log") as p1,
        ):
            wait_until(f"{urls['off']}/ready", p0, work / "off.log", timeout=600)
            wait_until(f"{urls['on']}/ready", p1, work / "on.log", timeout=600)
            clients = {
                n: httpx.Client(base_url=urls[n], headers=headers, timeout=60) for n in SERIES
            }
            position = dict.fromkeys(SERIES, 0)
            answered = dict.fromkeys(SERIES, 0)

            def one(name: str) -> httpx.Response:
                position[name] += 1
                answered[name] += 1
                return clients[name].post(path, content=bodies[position[name] % len(bodies)])

            singles: dict[str, list[float]] = {n: [] for n in SERIES}
            # CPU is counted per process, so it does not depend on what else the machine runs,
            # and over the whole phase for every process: the log writer flushes every 0.5 s,
            # about a round's length, so counting a server over its own rounds only caught one
            # flush or none (its figure moved by +-6 points from run to run). The database's
            # too (the server without the log sends it nothing per request).
            pids = {"off": p0.pid, "on": p1.pid}
            db_pid = int(db.pidfile.read_text().split()[0])
            # The database's idle rate (both servers' once-a-second model version checks) is
            # measured first and taken off what it spends during the phase.
            idle_from, idle_cpu = time.perf_counter(), cpu_seconds(db_pid)
            time.sleep(5.0)
            idle_rate = (cpu_seconds(db_pid) - idle_cpu) / (time.perf_counter() - idle_from)
            db_before, logged_before = cpu_seconds(db_pid), answered["on"]
            service_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            requests_before = dict(answered)
            phase_from = time.perf_counter()
            for r in range(args.rounds):
                for name in order(r):
                    singles[name] += timed(lambda n=name: one(n), args.per_round, 20)  # type: ignore[misc]
            time.sleep(1.0)  # the last batch of the log is written
            db_cpu = cpu_seconds(db_pid) - db_before
            db_cpu -= idle_rate * (time.perf_counter() - phase_from)
            results["cpu_ms"] = {
                name: 1000
                * (cpu_seconds(pid) - service_before[name])
                / (answered[name] - requests_before[name])
                for name, pid in pids.items()
            } | {"database_per_logged": 1000 * db_cpu / (answered["on"] - logged_before)}
            rates: dict[str, list[float]] = {n: [] for n in SERIES}
            for r in range(args.concurrent_rounds):
                for name in order(r):
                    rates[name].append(
                        asyncio.run(
                            concurrent_rps(urls[name] + path, bodies, headers, args.per_round)
                        )
                    )
                    # `concurrent_rps` sends 8 warm-up requests before the timed ones.
                    answered[name] += args.per_round + 8
            # Everything the logging server answered is written (its writer flushes within
            # about half a second); nothing dropped, nothing logged by the other one.
            deadline = time.monotonic() + 60
            while True:
                log = {n: clients[n].get(f"/v1/models/{args.model}").json() for n in SERIES}
                written = {n: log[n]["prediction_log"]["written"] for n in SERIES}
                if written["on"] >= answered["on"] or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            results["answered"] = answered
            results["log"] = {n: log[n]["prediction_log"] for n in SERIES}
            for name in SERIES:
                results[name] = summary(singles[name]) | {
                    "concurrent_rps": statistics.mean(rates[name]),
                    "concurrent_rounds": rates[name],
                }
    return results


def markdown(results: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    off, on = results["off"], results["on"]
    log_on = results["log"]["on"]
    cpu = results["cpu_ms"]
    p50_cost = on["p50_ms"] / off["p50_ms"] - 1
    rps_cost = 1 - on["rps"] / off["rps"]
    conc_cost = 1 - on["concurrent_rps"] / off["concurrent_rps"]

    def verdict(cost: float) -> str:
        return "within" if cost <= TARGET else "over"

    lines = [
        "## Prediction log overhead",
        "",
        f"Model `{results['model']}` version `{results['version']}`; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (compare within a run). Two service "
        "processes (uvicorn, 1 worker each) on one FerretDB, differing only in "
        "`PREDICTION_LOG_SAMPLE` (0: nothing logged; 1: every film logged, each with its TMDB "
        "`id`); drift refresh off in both. Single-film `POST /v1/predict/"
        f"{results['model']}` with real films; sequential with one keep-alive client in "
        f"{args.rounds} rounds of {args.per_round} requests, then {args.concurrent_rounds} rounds "
        f"of {args.per_round} requests with 8 in flight; the two servers alternate round by "
        "round (off-on, on-off, ...).",
        "",
        f"Command: `{command}`",
        "",
        "| series | p50 ms | p95 ms | requests/s sequential | requests/s, 8 in flight |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("off", "log off (`SAMPLE=0`)"), ("on", "log on (`SAMPLE=1`)")):
        st = results[name]
        lines.append(
            f"| {label} | {st['p50_ms']:.2f} | {st['p95_ms']:.2f} | {st['rps']:,.1f} | "
            f"{st['concurrent_rps']:,.1f} |"
        )
    lines += [
        "",
        f"- p50 on / off: **{on['p50_ms'] / off['p50_ms']:.3f}x** "
        f"({p50_cost:+.1%}; {verdict(p50_cost)} the 10% target).",
        f"- Sequential throughput on / off: **{on['rps'] / off['rps']:.3f}x** "
        f"({-rps_cost:+.1%}; {verdict(rps_cost)} the 10% target).",
        f"- Throughput with 8 in flight on / off: "
        f"**{on['concurrent_rps'] / off['concurrent_rps']:.3f}x** ({-conc_cost:+.1%}; per round: "
        + ", ".join(
            f"{a:,.0f} vs {b:,.0f}"
            for a, b in zip(on["concurrent_rounds"], off["concurrent_rounds"], strict=True)
        )
        + ").",
        f"- The logging server answered {results['answered']['on']:,} predictions and wrote "
        f"{log_on['written']:,} to the log ({log_on['dropped']} dropped); the other wrote "
        f"{results['log']['off']['written']}.",
        f"- CPU per sequential request (counted per process over the whole sequential phase, "
        f"warm-ups and background work included, so independent of other load on the "
        f"machine): service {cpu['off']:.3f} ms without the log, {cpu['on']:.3f} ms with it "
        f"({cpu['on'] / cpu['off'] - 1:+.1%}); the database spent "
        f"{cpu['database_per_logged']:.3f} ms per logged prediction (beyond its idle rate, "
        "measured first: both servers' once-a-second model version checks).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["revenue", "hit"], default="revenue")
    parser.add_argument("--artifacts-dir", default=str(REPO / "artifacts"))
    parser.add_argument("--rounds", type=int, default=8, help="sequential rounds per series")
    parser.add_argument("--per-round", type=int, default=250, help="requests per round")
    parser.add_argument("--concurrent-rounds", type=int, default=4)
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    command = "python -m bench.bench_monitoring " + " ".join(sys.argv[1:])
    results = run(args)
    section = markdown(results, args, command.strip())
    print(section)
    if not args.no_write:
        write_section(SECTION, section, Path(args.results))


if __name__ == "__main__":
    main()
