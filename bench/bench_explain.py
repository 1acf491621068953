"""What explanations cost single-film predictions: `POST /v1/predict/<model>` with and
without `explain=true`, against `GET /health`, in one run.

    .venv/bin/python -m bench.bench_explain [--artifacts-dir artifacts] [--rounds 6]
        [--per-round 100]

What it does, all on this machine and in one run:

1. starts a throwaway FerretDB and this service (uvicorn, 1 worker) on the active revenue,
   hit and engagement versions under the artifacts directory;
2. with one keep-alive client, round by round: `GET /health`, then for each model a
   single-film prediction without explanations and one with `explain=true` (real films,
   cycled; the three series of a model alternate their order round by round, so load from
   other jobs on this shared machine hits them alike);
3. checks that each explained answer carries contributions of the method the model's card
   names (`shap` for schema-2 tree models), and writes the p50 ratios to `/health` under
   "Explanation latency" in bench/RESULTS.md (the issue's targets: at most 3x without
   explanations, at most 10x with SHAP).

`--profile PATH` runs the server under cProfile (stats to PATH; the figures are then not
representative and RESULTS.md is left alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.localdb import free_port  # noqa: E402
from app.ml import artifacts  # noqa: E402
from bench.bench_predict import films, summary, timed  # noqa: E402
from bench.common import (  # noqa: E402
    scratch_database,
    server_process,
    service_command,
    wait_until,
    write_section,
)

SECTION = "explain-bench"
ADMIN_KEY = "bench-admin-key-0123456789abcdef0123456789abcdef"
MODELS = ("revenue", "hit", "engagement")
SERIES = ("plain", "explained")
TARGETS = {"plain": 3.0, "explained": 10.0}


def explanations(model_info: dict[str, Any]) -> str | None:
    """How `explain=true` works for a model (its card's `explanations`), wherever the model
    view nests the card."""
    for value in (model_info, model_info.get("card") or {}, model_info.get("active") or {}):
        if isinstance(value, dict) and value.get("explanations"):
            return str(value["explanations"])
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.artifacts_dir).resolve()
    versions = {m: artifacts.read_active(root, m) for m in MODELS}
    models = [m for m in MODELS if versions[m] is not None]
    if not models:
        raise SystemExit(f"no trained model under {root}: run tmdb-analytics train")
    items, _ = films(1000)
    bodies = [{"items": [item]} for item in items]

    with scratch_database("bench-explain-") as (work, db):
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {
            "PYTHONPATH": str(REPO),
            "APP_ENV": "development",
            "MONGODB_URI": db.uri,
            "MONGODB_DB": "bench_explain",
            "ARTIFACTS_DIR": str(root),
            "ADMIN_API_KEY": ADMIN_KEY,
            "RATE_LIMIT_PER_MINUTE": str(10**9),
            "LOG_LEVEL": "warning",
            "PREDICTION_LOG_SAMPLE": "0",
            "DRIFT_REFRESH_SECONDS": "0",
        }
        url = f"http://127.0.0.1:{port}"
        results: dict[str, Any] = {"versions": {m: versions[m] for m in models}, "models": {}}
        command = service_command(port)
        if args.profile is not None:
            command = [sys.executable, "-m", "bench.profile_server", str(args.profile), str(port)]
        with server_process(command, env, work / "service.log") as proc:
            wait_until(f"{url}/ready", proc, work / "service.log", timeout=600)
            client = httpx.Client(base_url=url, headers={"X-API-Key": ADMIN_KEY}, timeout=60)
            methods = {m: explanations(client.get(f"/v1/models/{m}").json()) for m in models}
            position = 0

            def predict(model: str, explain: bool) -> httpx.Response:
                nonlocal position
                position += 1
                response = client.post(
                    f"/v1/predict/{model}",
                    params={"explain": "true"} if explain else None,
                    json=bodies[position % len(bodies)],
                )
                response.raise_for_status()
                return response

            for model in models:  # the explained answer is what the card says it is
                explained = predict(model, True).json()
                if not explained["predictions"][0].get("contributions"):
                    raise RuntimeError(f"{model}: explain=true returned no contributions")
                per_output = explained.get("explanation_methods")  # engagement: per output
                if per_output:
                    methods[model] = ", ".join(f"{k}: {v}" for k, v in per_output.items())
            health: list[float] = []
            times: dict[str, dict[str, list[float]]] = {m: {s: [] for s in SERIES} for m in models}
            for r in range(args.rounds):
                health += timed(lambda: client.get("/health"), args.per_round, 10)
                for model in models:
                    for series in SERIES if r % 2 == 0 else SERIES[::-1]:
                        times[model][series] += timed(
                            lambda m=model, s=series: predict(m, s == "explained"),  # type: ignore[misc]
                            args.per_round,
                            10,
                        )
            results["health"] = summary(health)
            for model in models:
                results["models"][model] = {s: summary(times[model][s]) for s in SERIES} | {
                    "method": methods[model]
                }
    return results


def markdown(results: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    health = results["health"]["p50_ms"]
    lines = [
        "## Explanation latency",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other jobs (compare within a run). One service "
        "process (uvicorn, 1 worker) on a throwaway FerretDB, prediction log off; one "
        f"keep-alive client, {args.rounds} rounds of {args.per_round} requests per series, "
        "`/health` and each model's two series interleaved round by round. Single real films, "
        "cycled.",
        "",
        f"Command: `{command}`",
        "",
        f"`GET /health` p50 {health:.2f} ms.",
        "",
        "| model (version) | explanations | p50 ms plain | p50 ms `explain=true` | p95 ms "
        "`explain=true` | plain / health | explained / health |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    verdicts: list[str] = []
    for model, figures in results["models"].items():
        plain, explained = figures["plain"], figures["explained"]
        ratios = {s: figures[s]["p50_ms"] / health for s in SERIES}
        lines.append(
            f"| {model} (`{results['versions'][model]}`) | {figures['method']} | "
            f"{plain['p50_ms']:.2f} | {explained['p50_ms']:.2f} | {explained['p95_ms']:.2f} | "
            f"{ratios['plain']:.2f}x | {ratios['explained']:.2f}x |"
        )
        for series in SERIES:
            ok = ratios[series] <= TARGETS[series]
            verdicts.append(
                f"{model} {series} {ratios[series]:.2f}x "
                f"({'met' if ok else 'NOT met'}, target {TARGETS[series]:g}x)"
            )
    lines += ["", "Targets: " + "; ".join(verdicts) + "."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", default=str(REPO / "artifacts"))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--results", default=str(REPO / "bench" / "RESULTS.md"))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--profile", type=Path, help="run the server under cProfile, stats here")
    args = parser.parse_args()
    results = run(args)
    command = "python -m bench.bench_explain " + " ".join(sys.argv[1:])
    text = markdown(results, args, command.strip())
    print(text)
    if not args.no_write and args.profile is None:
        write_section(SECTION, text, Path(args.results))


if __name__ == "__main__":
    main()
