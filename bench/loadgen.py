"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending its next
request as soon as the previous answer is read (no think time), for a fixed time.

    python -m bench.loadgen --port P --requests FILE --connections 100 --seconds 20 --out F

FILE holds raw requests separated by NUL bytes; connection i sends them in turn starting at
request i. It runs on uvloop (when installed) over raw sockets and parses only the status
line and `Content-Length`, so that one process can drive the service from its own core.
The output (JSON) has every latency measured inside the window (after `--warmup` seconds)
and which request it was, the status codes, and this process's CPU time, to judge whether
the generator itself was the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections import Counter
from pathlib import Path

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    uvloop = None  # type: ignore[assignment]


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one Content-Length response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    start = head.find(b"content-length:")
    if start < 0:
        start = head.lower().find(b"content-length:")
    if start >= 0:
        end = head.index(b"\r\n", start)
        length = int(head[start + 15 : end])
    if length:
        await reader.readexactly(length)
    return status


async def connection(
    port: int,
    requests: list[bytes],
    offset: int,
    window: tuple[float, float],
    latencies: list[float],
    indices: list[int],
    conns: list[int],
    statuses: Counter[int],
    errors: list[str],
) -> None:
    start, stop = window
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = offset
    try:
        while True:
            sent = time.perf_counter()
            if sent >= stop:
                return
            index = i % len(requests)
            writer.write(requests[index])
            i += 1
            try:
                status = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                errors.append(type(exc).__name__)
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            done = time.perf_counter()
            if sent >= start:
                latencies.append(done - sent)
                indices.append(index)
                conns.append(offset)
                statuses[status] += 1
    finally:
        writer.close()


async def run(
    port: int, requests: list[bytes], connections: int, warmup: float, seconds: float
) -> dict[str, object]:
    latencies: list[float] = []
    indices: list[int] = []
    conns: list[int] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    now = time.perf_counter()
    window = (now + warmup, now + warmup + seconds)
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(
        *(
            connection(port, requests, i, window, latencies, indices, conns, statuses, errors)
            for i in range(connections)
        )
    )
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    elapsed = time.perf_counter() - now
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "latencies": latencies,
        "indices": indices,  # which request (position in the file) each latency measured
        "connections": conns,  # and on which connection
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": errors,
        "seconds": seconds,
        "cpu_share": cpu / elapsed,  # of one core, over the whole run (warm-up included)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    requests = [r for r in args.requests.read_bytes().split(b"\0") if r]
    loop_factory = uvloop.new_event_loop if uvloop is not None else None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args.port, requests, args.connections, args.warmup, args.seconds))
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
