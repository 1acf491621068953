"""Turn locust's CSV statistics into the Markdown table kept in bench/RESULTS.md."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stats", type=Path)
    parser.add_argument("failures", type=Path)
    parser.add_argument("--users", default="?")
    parser.add_argument("--duration", default="?")
    parser.add_argument("--server-log", type=Path)
    args = parser.parse_args()

    with args.stats.open(newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"{args.users} concurrent clients for {args.duration}:\n")
    print("| endpoint | requests | errors | req/s | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        name = row["Name"] if row["Name"] != "Aggregated" else "**all**"
        method = f"{row['Type']} " if row["Type"] else ""
        print(
            f"| {method}{name} | {row['Request Count']} | {row['Failure Count']} "
            f"| {float(row['Requests/s']):.1f} | {row['50%']} | {row['95%']} | {row['99%']} "
            f"| {float(row['Max Response Time']):.0f} |"
        )
    failures = []
    if args.failures.exists():
        with args.failures.open(newline="") as f:
            failures = list(csv.DictReader(f))
    print()
    if failures:
        print("Failures:\n")
        for fail in failures:
            print(f"- {fail['Method']} {fail['Name']}: {fail['Error']} x{fail['Occurrences']}")
    else:
        print("Failures: none.")
    if args.server_log and args.server_log.exists():
        errors = 0
        for line in args.server_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "critical"):
                errors += 1
        print(f"Server log: {errors} error lines.")


if __name__ == "__main__":
    main()
