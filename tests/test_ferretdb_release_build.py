"""The local FerretDB is a release build: no leak tracking on every query, and a garbage
collector tuned for a small server.

FerretDB's `resource.Track` records a pprof sample (a stack walk) and sets a finalizer for
every iterator, cursor and connection pool it opens, a leak detector for its own development
that cost about a tenth of a point lookup's CPU. `tools/ferretdb/patches/0003-*` keeps it
for debug builds only. Tracked objects show as `FerretDB/...` profiles on the debug
handler's pprof index, so a binary that answers queries and lists none tracks nothing.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pymongo
import pytest

from app import localdb
from app.localdb import LocalServer, free_port


def test_queries_create_no_leak_tracking_profiles(tmp_path: Path) -> None:
    port, debug_port = free_port(), free_port()
    server = subprocess.Popen(
        [
            str(localdb.ferretdb_binary()),
            "--handler=sqlite",
            f"--sqlite-url=file:{tmp_path}/",
            f"--listen-addr=127.0.0.1:{port}",
            "--telemetry=disable",
            "--state-dir=-",
            f"--debug-addr=127.0.0.1:{debug_port}",
            "--log-level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            f"mongodb://127.0.0.1:{port}", serverSelectionTimeoutMS=30_000
        )
        films = client["release_build"]["films"]
        films.insert_many([{"_id": str(i), "n": i} for i in range(50)])
        assert len(list(films.find({"n": {"$gt": 3}}))) == 46
        assert films.find_one({"_id": "7"}) == {"_id": "7", "n": 7}
        client.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                index = httpx.get(f"http://127.0.0.1:{debug_port}/debug/pprof/", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert index.status_code == 200
        # The runtime's own profiles are there; none of FerretDB's tracked objects is.
        assert "goroutine" in index.text
        assert "FerretDB/" not in index.text
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_local_server_collects_garbage_less_often_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`GOGC` (FERRETDB_GOGC) reaches the server; one set in the environment wins."""
    for preset, expected in ((None, localdb.FERRETDB_GOGC), ("150", "150")):
        if preset is None:
            monkeypatch.delenv("GOGC", raising=False)
        else:
            monkeypatch.setenv("GOGC", preset)
        server = LocalServer(directory=tmp_path / f"gogc-{expected}", port=free_port())
        server.start(wait_seconds=60)
        try:
            pid = server.pid()
            assert pid is not None
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"GOGC={expected}".encode() in environ
        finally:
            server.stop()
