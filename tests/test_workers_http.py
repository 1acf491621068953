"""One model version everywhere, over real HTTP: `tmdb-analytics serve --workers 2` against the
test database; an activation or reload on whichever worker answers reaches both within 2 s."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.db import Document
from app.localdb import free_port
from app.ml import artifacts
from tests.ml_support import ADMIN_KEY, FILM, copy_artifacts, versions

REPO = Path(__file__).resolve().parents[1]
SWITCH_LIMIT_S = 2.0  # every process serves a new activation within this
STARTUP_LIMIT_S = 240.0  # two workers importing scikit-learn on a busy 2-core machine
BROKEN = "29990101T000000Z"
MODEL_VERSIONS = "model_versions"  # the collection (and document shape) processes follow


@dataclass(frozen=True)
class Answer:
    sent: float  # seconds after the switch was acknowledged
    version: str
    worker: str | None  # `loaded_at` of GET /v1/models/{name}: one value per process and load


@contextmanager
def running_service(env: dict[str, str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    exe = Path(sys.executable).with_name("tmdb-analytics")
    cmd = [str(exe), "serve", "--workers", "2", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's supervisor stops its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session: the server and its workers
            proc.wait()


async def _burst(http: httpx.AsyncClient, name: str, t0: float) -> list[Answer]:
    """Concurrent requests on fresh connections (`Connection: close`), so that both workers
    take some: two model cards (which name the process) and two predictions."""

    async def card() -> Answer:
        sent = time.monotonic() - t0
        r = await http.get(f"/v1/models/{name}")
        assert r.status_code == 200, r.text
        return Answer(sent, r.json()["active_version"], r.json()["loaded_at"])

    async def predict() -> Answer:
        sent = time.monotonic() - t0
        r = await http.post(f"/v1/predict/{name}", json={"items": [FILM]})
        assert r.status_code == 200, r.text
        return Answer(sent, r.json()["model_version"], None)

    return list(await asyncio.gather(card(), card(), predict(), predict()))


async def _watch_switch(
    http: httpx.AsyncClient, name: str, switch: Callable[[], Awaitable[httpx.Response]], to: str
) -> float:
    """Switch, then ask until both workers have answered after SWITCH_LIMIT_S; every answer
    from then on must name `to`. Returns when the last other version answered (seconds)."""
    response = await switch()
    assert response.status_code == 200, response.text
    assert response.json()["active_version"] == to
    t0 = time.monotonic()
    answers: list[Answer] = []
    while True:
        answers += await _burst(http, name, t0)
        late = [a for a in answers if a.sent >= SWITCH_LIMIT_S]
        if len({a.worker for a in late if a.worker}) >= 2:
            break
        assert time.monotonic() - t0 < 60, "one worker never answered after the switch"
    assert [a for a in late if a.version != to] == []
    return max((a.sent for a in answers if a.version != to), default=0.0)


async def test_two_workers_follow_activation_and_reload_within_two_seconds(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = copy_artifacts(tmp_path_factory)
    old, new = versions(root, "revenue")
    work = tmp_path_factory.mktemp("workers")
    db_name = f"test_{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {
        **os.environ,
        "APP_ENV": "test",
        "MONGODB_URI": mongodb_uri,
        "MONGODB_DB": db_name,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ARTIFACTS_DIR": str(root),
        "DATA_DIR": str(work / "data"),
        "LOCAL_DB_DIR": str(work / "localdb"),
        "RATE_LIMIT_PER_MINUTE": "1000000",
        "LOG_LEVEL": "WARNING",
    }
    log = work / "serve.log"
    client: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_uri, tz_aware=True)
    headers = {"X-API-Key": ADMIN_KEY, "Connection": "close"}
    try:
        with running_service(env, port, log) as proc:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
            ) as http:
                # Both workers up: two processes have answered with the version ACTIVE names.
                started = time.monotonic()
                seen: set[str] = set()
                while len(seen) < 2:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() - started < STARTUP_LIMIT_S, log.read_text()
                    try:
                        answers = await _burst(http, "revenue", started)
                    except httpx.TransportError:
                        await asyncio.sleep(0.5)
                        continue
                    assert {a.version for a in answers} == {new}
                    seen |= {a.worker for a in answers if a.worker}

                lags = [
                    await _watch_switch(
                        http,
                        "revenue",
                        lambda: http.post("/v1/models/revenue/activate", json={"version": old}),
                        old,
                    )
                ]
                # Roll forward the deploy-script way: move ACTIVE, reload on one worker.
                artifacts.write_active(root, "revenue", new)
                lags.append(
                    await _watch_switch(
                        http, "revenue", lambda: http.post("/v1/models/revenue/reload"), new
                    )
                )
                print(f"\nlast answer from the previous version after: {lags} s")
                card = (await http.get("/v1/models/revenue")).json()
                assert card["activation"]["version"] == new
                assert card["activation"]["source"] == "reload" and card["problem"] is None

                # An invalid version is refused before anything changes, anywhere.
                _break(root, "revenue", new)
                refused = await http.post("/v1/models/revenue/activate", json={"version": BROKEN})
                assert refused.status_code == 409
                record = await client[db_name][MODEL_VERSIONS].find_one({"_id": "revenue"})
                assert record is not None and record["version"] == new
                assert record["source"] == "reload"
                assert record["activated_by"] == "admin_key:admin-key"

                # The database names a version these processes cannot load (recorded by a
                # replica that has it): they keep serving theirs, say so, and never 500.
                await client[db_name][MODEL_VERSIONS].update_one(
                    {"_id": "revenue"},
                    {
                        "$set": {
                            "version": BROKEN,
                            "activated_by": "a replica that has it",
                            "activated_at": datetime.now(UTC),
                            "source": "activate",
                        },
                        "$inc": {"seq": 1},
                    },
                )
                await asyncio.sleep(SWITCH_LIMIT_S)
                t0 = time.monotonic()
                for _ in range(4):
                    assert {a.version for a in await _burst(http, "revenue", t0)} == {new}
                    ready = await http.get("/ready")
                    assert ready.status_code == 503
                    assert "cannot load here" in ready.json()["checks"]["models"]
                card = (await http.get("/v1/models/revenue")).json()
                assert card["active_version"] == new and BROKEN in card["problem"]
                metrics = (await http.get("/metrics")).text
                assert 'model_version_behind{model="revenue"} 1.0' in metrics
    finally:
        await client.drop_database(db_name)
        await client.close()


def _break(root: Path, name: str, source: str) -> str:
    """A copy of `source` published as version BROKEN whose model file is garbage."""
    target = root / name / BROKEN
    shutil.copytree(root / name / source, target)
    (target / artifacts.MODEL_FILE).write_bytes(b"not a pickle")
    return BROKEN
