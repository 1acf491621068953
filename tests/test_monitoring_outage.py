"""The prediction log survives a restart of the service and an outage of the database, against
a real FerretDB of this test's own: predictions keep being served while the database is down,
the log catches up once it is back, and what did not fit in the buffer is counted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from app.db import Document
from app.localdb import LocalServer, free_port
from app.services import prediction_log
from tests.analytics_support import serve  # keeps the database: it must survive a restart
from tests.ml_support import FILM, app_settings, copy_artifacts

CATCH_UP_LIMIT_S = 60.0


def dropped(metrics: str) -> float:
    prefix = 'prediction_log_dropped_total{model="revenue"} '
    line = next((ln for ln in metrics.splitlines() if ln.startswith(prefix)), None)
    return float(line.removeprefix(prefix)) if line else 0.0


async def wait_count(db_client: AsyncMongoClient[Document], name: str, n: int) -> float:
    """Seconds until the log holds `n` revenue predictions."""
    started = time.perf_counter()
    while True:
        try:
            found = await prediction_log.count(db_client[name], "revenue")
        except Exception:  # the database is still coming back
            found = -1
        if found == n:
            return time.perf_counter() - started
        assert found <= n, f"{found} logged, expected {n}: a batch written twice?"
        assert time.perf_counter() - started < CATCH_UP_LIMIT_S, f"{found} of {n} logged"
        await asyncio.sleep(0.2)


async def test_log_survives_restart_and_database_outage(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = LocalServer(directory=tmp_path / "ferretdb", port=free_port())
    await asyncio.to_thread(server.start)
    direct: AsyncMongoClient[Document] = AsyncMongoClient(
        server.uri, serverSelectionTimeoutMS=1000, tz_aware=True
    )
    try:
        root = copy_artifacts(tmp_path_factory)
        settings = app_settings(server.uri, root, tmp_path).model_copy(
            update={"mongodb_timeout_ms": 1000, "prediction_log_buffer": 20}
        )
        name = settings.mongodb_db
        film = {**FILM, "id": 1}

        async with serve(settings) as http:
            for _ in range(5):
                assert (await http.post("/v1/predict/revenue", json={"items": [film]})).is_success
            await wait_count(direct, name, 5)

        # A restart: the log is in the database, and the new process adds to it.
        async with serve(settings) as http:
            assert await prediction_log.count(direct[name], "revenue") == 5
            for _ in range(3):
                assert (await http.post("/v1/predict/revenue", json={"items": [film]})).is_success
            await wait_count(direct, name, 8)

            # --- outage: predictions are served, the log buffers what fits --------------------
            before = dropped((await http.get("/metrics")).text)
            await asyncio.to_thread(server.stop)
            started = time.perf_counter()
            for _ in range(5):
                answer = await http.post("/v1/predict/revenue", json={"items": [film]})
                assert answer.status_code == 200, answer.text
            batch = await http.post("/v1/predict/revenue", json={"items": [film] * 25})
            assert batch.status_code == 200, batch.text
            served_s = time.perf_counter() - started
            assert served_s < 5.0, f"predictions waited for the log: {served_s:.1f}s"
            # 30 predictions, room for 20: 10 dropped and counted, none waited.
            assert dropped((await http.get("/metrics")).text) == before + 10
            writer = (await http.get("/v1/models/revenue")).json()["prediction_log"]
            assert writer["buffered"] == 20 and writer["dropped"] >= 10

            # --- recovery: the buffered 20 are written, once -----------------------------------
            await asyncio.to_thread(server.start)
            caught_up_s = await wait_count(direct, name, 28)
            await asyncio.sleep(1.0)  # and no batch is written a second time afterwards
            assert await prediction_log.count(direct[name], "revenue") == 28
            writer = (await http.get("/v1/models/revenue")).json()["prediction_log"]
            assert writer["buffered"] == 0 and writer["failing_since"] is None
            print(f"\nprediction log caught up {caught_up_s:.1f}s after the database restart")
        await direct.drop_database(name)
    finally:
        await direct.close()
        await asyncio.to_thread(server.stop)
