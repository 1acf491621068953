"""Ingest at TMDB's rate cap: the pacer keeps a server's sliding window even when travel
times jitter, slows every request down after a 429 without bursting afterwards, and the
ingest fetches while it writes (but never past the batch it is checkpointing)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from starlette.requests import Request
from starlette.responses import Response

from app.db import Document
from app.services import tmdb_ingest as tmdb_ingest_module
from app.services.movies_store import upsert_movies
from app.services.tmdb_client import RequestPacer, TmdbClient
from app.services.tmdb_ingest import IngestOptions, IngestProgress, ingest_tmdb
from tests.fake_tmdb import TOKEN, FakeTmdb, catalogue
from tests.test_tmdb_ingest import assert_exactly_once, tmdb

OK = {"id": 1, "title": "A film"}


@pytest.fixture
def serve() -> Iterator[Callable[[FakeTmdb], str]]:
    """`base_url = serve(FakeTmdb(...))`: runs the fake until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda fake: stack.enter_context(fake.serve())


class JitteryTmdb:
    """A server behind a link whose travel time varies by up to `jitter` seconds each way,
    refusing with 429 past `cap` arrivals in any sliding second (as TMDB counts)."""

    def __init__(self, cap: int, jitter: float, seed: int) -> None:
        self.cap = cap
        self.jitter = jitter
        self.random = random.Random(seed)
        self.window: deque[float] = deque()
        self.arrivals: list[tuple[float, int]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.random.uniform(0, self.jitter))  # on the way there
        now = time.monotonic()
        while self.window and self.window[0] <= now - 1.0:
            self.window.popleft()
        status = 429 if len(self.window) >= self.cap else 200
        if status == 200:
            self.window.append(now)
        self.arrivals.append((now, status))
        await asyncio.sleep(self.random.uniform(0, self.jitter))  # and back
        if status == 429:
            return httpx.Response(429, json={"status_code": 25}, headers={"Retry-After": "1"})
        return httpx.Response(200, json=OK)

    def throttled(self) -> list[float]:
        return [t for t, status in self.arrivals if status == 429]


async def run_requests(server: JitteryTmdb, rate: float, n: int) -> float:
    transport = httpx.MockTransport(server)
    async with TmdbClient(
        "tok", rate_limit=rate, concurrency=16, transport=transport, backoff_base=0.01
    ) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.movie_details(i) for i in range(n)))
        return time.monotonic() - started


async def test_pacing_at_the_servers_rate_keeps_its_window_despite_jitter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spacing alone (each start 1/rate after the last) is not enough: a request that travels
    # faster than the one `rate` requests before it lands inside that one's second.
    naive = JitteryTmdb(cap=50, jitter=0.03, seed=1)
    with monkeypatch.context() as patched:
        patched.setattr(RequestPacer, "_window_wait", lambda self: 0.0)
        await run_requests(naive, rate=50, n=150)
    assert naive.throttled(), "the jitter should defeat spacing alone"

    server = JitteryTmdb(cap=50, jitter=0.03, seed=1)
    elapsed = await run_requests(server, rate=50, n=250)
    assert server.throttled() == []
    # The price is about one travel time per second's worth of requests.
    assert 250 / elapsed >= 0.75 * 50, f"{250 / elapsed:.1f} requests/s"


async def test_a_429_slows_every_request_down_without_a_burst_after_the_pause() -> None:
    # The client believes 50/s; the server allows 30/s.
    server = JitteryTmdb(cap=30, jitter=0.002, seed=2)
    elapsed = await run_requests(server, rate=50, n=240)
    throttled = server.throttled()
    assert throttled, "the server should have refused some"
    # Refusals come in episodes of at most the requests already in flight (16), never a
    # stream of them: each episode pauses everyone for Retry-After and slows the pace.
    episodes = [t for i, t in enumerate(throttled) if i == 0 or t - throttled[i - 1] > 0.5]
    assert len(episodes) <= 3 and len(throttled) <= 16 * len(episodes), throttled
    first = episodes[0]
    after = [t for t, status in server.arrivals if first < t < first + 1.0 and status == 200]
    assert len(after) <= 16  # only requests already on their way; none started in the pause
    # After the pause, no burst: no window of the server's sees more than it allows.
    starts = [t for t, status in server.arrivals if status == 200 and t > first + 1.0]
    for i in range(len(starts)):
        window = [t for t in starts[i:] if t - starts[i] < 1.0]
        assert len(window) <= 30
    assert 240 / elapsed >= 0.5 * 30


class TimedFake(FakeTmdb):
    """The fake TMDB, noting when each film's details were asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.asked: list[tuple[float, int]] = []

    async def details(self, request: Request) -> Response:
        self.asked.append((time.monotonic(), int(request.path_params["movie_id"])))
        return await super().details(request)


async def test_fetching_goes_on_while_films_are_written_but_not_past_the_batch(
    db: AsyncDatabase[Document], serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = TimedFake(catalogue({2001: 60}), rate_limit=None)
    base_url = serve(fake)
    writes: list[tuple[float, float]] = []

    async def slow_upsert(*args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        await asyncio.sleep(0.25)  # a database that takes its time
        try:
            return await upsert_movies(*args, **kwargs)
        finally:
            writes.append((started, time.monotonic()))

    monkeypatch.setattr(tmdb_ingest_module, "upsert_movies", slow_upsert)
    batch_ends: list[tuple[float, int]] = []

    def progress(p: IngestProgress) -> None:
        batch_ends.append((time.monotonic(), p.completed))

    async with tmdb(base_url, rate_limit=60) as client:
        summary = await ingest_tmdb(db, client, IngestOptions(batch_size=20), progress)
    assert summary.inserted == 60
    await assert_exactly_once(db, set(fake.films))
    during = [t for t, _ in fake.asked if any(a < t < b for a, b in writes)]
    assert len(during) >= 10, "fetching should go on while films are written"
    # A batch's films are all asked for after the previous batch was reported (= written
    # and checkpointed), so a stop at a batch's end leaves nothing fetched twice.
    order = [movie_id for _, movie_id in sorted(fake.asked)]
    ends = [t for t, completed in batch_ends if completed in (20, 40)]
    assert len(ends) == 2
    for k, end in enumerate(ends, start=1):
        later = set(order[20 * k :])
        assert all(t > end for t, movie_id in fake.asked if movie_id in later)


async def test_an_ingest_at_the_servers_cap_is_never_refused(
    db: AsyncDatabase[Document], serve: Any
) -> None:
    fake = FakeTmdb(catalogue({1999: 80, 2005: 80}), rate_limit=40, error_rate=0.05, seed=3)
    base_url = serve(fake)
    async with TmdbClient(TOKEN, base_url, rate_limit=40, backoff_base=0.05) as client:
        started = time.monotonic()
        summary = await ingest_tmdb(db, client, IngestOptions(batch_size=40))
        elapsed = time.monotonic() - started
    assert summary.status == "done" and summary.inserted == 160
    assert fake.stats["503"] > 0 and fake.stats["429"] == 0
    assert fake.stats["requests"] / elapsed >= 0.6 * 40, f"{fake.stats['requests'] / elapsed}/s"
