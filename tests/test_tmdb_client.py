"""The TMDB client: auth, retries, 429 handling and rate limits (mock transport), and the
wire format against the local fake TMDB server (pagination, the 500-page cap, changes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from app.services.tmdb_client import RequestPacer, TmdbAuthError, TmdbClient, TmdbRequestError
from tests.fake_tmdb import TOKEN, FakeTmdb, catalogue

Handler = Callable[[httpx.Request], httpx.Response]


def tmdb_error(status: int, code: int, message: str, **headers: str) -> httpx.Response:
    body = {"success": False, "status_code": code, "status_message": message}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*answers: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler that answers with `answers` in order (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def mock_client(handler: Handler, **options: Any) -> TmdbClient:
    settings: dict[str, Any] = {"backoff_base": 0.01, "rate_limit": 1000.0, **options}
    return TmdbClient(
        "tok", "https://tmdb.test/3", transport=httpx.MockTransport(handler), **settings
    )


OK = httpx.Response(200, json={"id": 550, "title": "Fight Club"})
RETRY_1S = {"Retry-After": "1"}


async def test_bearer_token_and_details_append_credits_and_keywords() -> None:
    handler, seen = scripted(OK)
    async with mock_client(handler) as tmdb:
        film = await tmdb.movie_details(550)
    assert film == {"id": 550, "title": "Fight Club"}
    request = seen[0]
    assert request.headers["authorization"] == "Bearer tok"
    assert request.url.path == "/3/movie/550"
    assert request.url.params["append_to_response"] == "credits,keywords"


async def test_401_raises_a_clear_auth_error_without_retrying() -> None:
    handler, seen = scripted(
        tmdb_error(401, 7, "Invalid API key: You must be granted a valid key.")
    )
    async with mock_client(handler) as tmdb:
        with pytest.raises(TmdbAuthError, match=r"TMDB_API_TOKEN rejected .*Invalid API key"):
            await tmdb.discover({}, 1)
    assert len(seen) == 1


async def test_404_on_details_returns_none_and_on_lists_is_an_error() -> None:
    handler, seen = scripted(tmdb_error(404, 34, "The resource you requested could not be found."))
    async with mock_client(handler) as tmdb:
        assert await tmdb.movie_details(1) is None
        with pytest.raises(TmdbRequestError, match="could not be found"):
            await tmdb.discover({}, 1)
    assert len(seen) == 2  # neither was retried


async def test_429_waits_retry_after_then_retries() -> None:
    handler, seen = scripted(
        tmdb_error(429, 25, "Your request count (41) is over the limit of (40).", **RETRY_1S),
        OK,
    )
    async with mock_client(handler) as tmdb:
        started = time.monotonic()
        assert await tmdb.movie_details(550) is not None
        waited = time.monotonic() - started
    assert len(seen) == 2
    assert waited >= 0.95, f"the client retried after {waited:.2f}s, before Retry-After"
    assert tmdb.stats.throttled == 1 and tmdb.stats.retries == 1


async def test_a_429_pauses_every_request_not_just_the_throttled_one() -> None:
    throttled = tmdb_error(429, 25, "over the limit", **RETRY_1S)
    sent: list[float] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return throttled if len(sent) == 1 else OK

    async with mock_client(handle, concurrency=1) as tmdb:
        started = time.monotonic()
        first = asyncio.create_task(tmdb.movie_details(1))
        await asyncio.sleep(0.05)  # the 429 has arrived and paused the limiter
        await tmdb.movie_details(2)
        await first
    assert all(t - started >= 0.95 for t in sent[1:])


async def test_5xx_is_retried_with_backoff() -> None:
    offline = tmdb_error(503, 9, "Service offline: This service is temporarily offline.")
    handler, seen = scripted(offline, tmdb_error(500, 11, "Internal error"), OK)
    async with mock_client(handler) as tmdb:
        assert await tmdb.movie_details(550) is not None
    assert len(seen) == 3 and tmdb.stats.retries == 2


async def test_timeouts_and_connection_errors_are_retried() -> None:
    handler, seen = scripted(
        httpx.ConnectError("connection refused"), httpx.ReadTimeout("read timed out"), OK
    )
    async with mock_client(handler) as tmdb:
        assert await tmdb.movie_details(550) is not None
    assert len(seen) == 3


async def test_a_200_that_is_not_json_is_retried_then_fails_clearly() -> None:
    """A proxy's HTML error page sent as 200, or an answer cut short, used to escape as a bare
    JSONDecodeError and stop the ingest; it is retried like a 5xx."""
    page = httpx.Response(200, text="<html><body>Bad gateway</body></html>")
    cut = httpx.Response(200, content=b'{"id": 550, "title": "Fig')
    handler, seen = scripted(page, cut, OK)
    async with mock_client(handler) as tmdb:
        assert await tmdb.movie_details(550) == {"id": 550, "title": "Fight Club"}
    assert len(seen) == 3 and tmdb.stats.retries == 2
    handler, seen = scripted(page)
    async with mock_client(handler, max_attempts=3) as tmdb:
        with pytest.raises(TmdbRequestError, match=r"failed 3 times; last: HTTP 200 .*not JSON"):
            await tmdb.movie_details(550)
    assert len(seen) == 3


async def test_retries_are_bounded_then_fail_clearly() -> None:
    handler, seen = scripted(tmdb_error(503, 9, "Service offline"))
    async with mock_client(handler, max_attempts=4) as tmdb:
        with pytest.raises(TmdbRequestError, match=r"failed 4 times; last: HTTP 503.*offline"):
            await tmdb.movie_details(550)
    assert len(seen) == 4


async def test_other_4xx_fail_at_once() -> None:
    handler, seen = scripted(tmdb_error(422, 20, "Invalid date range"))
    async with mock_client(handler) as tmdb:
        with pytest.raises(TmdbRequestError, match="Invalid date range") as caught:
            await tmdb.changes(date(2024, 1, 1), date(2024, 3, 1), 1)
    assert caught.value.status == 422 and len(seen) == 1


async def test_rate_limiter_spaces_requests() -> None:
    limiter = RequestPacer(rate=50)
    started = time.monotonic()
    for _ in range(21):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.39  # 20 intervals of 20 ms


async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return OK

    transport = httpx.MockTransport(handle)
    async with TmdbClient("tok", rate_limit=1000, concurrency=3, transport=transport) as tmdb:
        await asyncio.gather(*(tmdb.movie_details(i) for i in range(12)))
    assert peak == 3


def test_a_missing_token_is_refused_up_front() -> None:
    with pytest.raises(TmdbAuthError, match="TMDB_API_TOKEN is not set"):
        TmdbClient("")


# --- against the fake TMDB server over a real socket ---------------------------------------


@pytest.fixture
def fake() -> Iterator[tuple[FakeTmdb, str]]:
    server = FakeTmdb(catalogue({1999: 45, 2000: 5}), rate_limit=None)
    with server.serve() as base_url:
        yield server, base_url


async def test_discover_pages_through_a_date_range(fake: tuple[FakeTmdb, str]) -> None:
    _, base_url = fake
    params = {
        "primary_release_date.gte": "1999-01-01",
        "primary_release_date.lte": "1999-12-31",
        "sort_by": "primary_release_date.asc",
    }
    async with TmdbClient(TOKEN, base_url, rate_limit=1000) as tmdb:
        first = await tmdb.discover(params, 1)
        assert (first["page"], first["total_pages"], first["total_results"]) == (1, 3, 45)
        pages = [first] + [await tmdb.discover(params, p) for p in (2, 3)]
    ids = [r["id"] for p in pages for r in p["results"]]
    assert [len(p["results"]) for p in pages] == [20, 20, 5]
    assert len(set(ids)) == 45
    dates = [r["release_date"] for p in pages for r in p["results"]]
    assert dates == sorted(dates) and dates[0] >= "1999-01-01" and dates[-1] <= "1999-12-31"


async def test_the_500_page_cap_is_an_error_not_an_empty_page(fake: tuple[FakeTmdb, str]) -> None:
    _, base_url = fake
    async with TmdbClient(TOKEN, base_url, rate_limit=1000) as tmdb:
        assert (await tmdb.discover({}, 500))["results"] == []
        with pytest.raises(TmdbRequestError, match="Invalid page") as caught:
            await tmdb.discover({}, 501)
    assert caught.value.status == 400


async def test_details_carry_credits_and_keywords(fake: tuple[FakeTmdb, str]) -> None:
    server, base_url = fake
    some_id = next(iter(server.films))
    async with TmdbClient(TOKEN, base_url, rate_limit=1000) as tmdb:
        film = await tmdb.movie_details(some_id)
        assert await tmdb.movie_details(999_999) is None
    assert film is not None
    assert film["credits"]["cast"] and film["credits"]["crew"] and film["keywords"]["keywords"]


async def test_wrong_token_against_the_server(fake: tuple[FakeTmdb, str]) -> None:
    _, base_url = fake
    async with TmdbClient("wrong", base_url) as tmdb:
        with pytest.raises(TmdbAuthError, match="TMDB_API_TOKEN rejected"):
            await tmdb.configuration()


async def test_changes_window_and_its_14_day_limit(fake: tuple[FakeTmdb, str]) -> None:
    server, base_url = fake
    ids = list(server.films)[:3]
    for k, movie_id in enumerate(ids):
        server.change(movie_id, date(2024, 5, 1 + k * 5), title=f"Edited {movie_id}")
    async with TmdbClient(TOKEN, base_url, rate_limit=1000) as tmdb:
        page = await tmdb.changes(date(2024, 5, 1), date(2024, 5, 8), 1)
        assert [r["id"] for r in page["results"]] == ids[:2]
        with pytest.raises(TmdbRequestError, match="no longer than 14 days"):
            await tmdb.changes(date(2024, 5, 1), date(2024, 5, 30), 1)


async def test_the_fake_answers_429_with_retry_after_past_its_limit() -> None:
    server = FakeTmdb(catalogue({2001: 3}), rate_limit=10, retry_after=1)
    with server.serve() as base_url:
        async with TmdbClient(TOKEN, base_url, rate_limit=1000, concurrency=4) as tmdb:
            started = time.monotonic()
            await asyncio.gather(*(tmdb.configuration() for _ in range(15)))
            elapsed = time.monotonic() - started
    assert server.stats["429"] >= 1 and tmdb.stats.throttled == server.stats["429"]
    assert elapsed >= 0.95  # it waited out Retry-After before the last five
