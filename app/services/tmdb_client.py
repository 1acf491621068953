"""An async client for the TMDB API v3 that behaves well under TMDB's limits.

Every request goes through a bounded number of concurrent slots and a client-side rate
limiter; 429 pauses *all* requests for `Retry-After` seconds (the limit is per client, so
one throttled request means the others would be throttled too); 5xx answers, timeouts and
connection errors are retried with exponential backoff and jitter, a bounded number of
times. 401 stops everything with `TmdbAuthError`; 404 on a film returns None.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from types import TracebackType
from typing import Any, Self

import httpx

from app.settings import Settings

DEFAULT_BASE_URL = "https://api.themoviedb.org/3"
JsonObject = dict[str, Any]
Params = Mapping[str, str | int | float]


class TmdbError(RuntimeError):
    """TMDB could not answer a request (after the retries it deserved)."""


class TmdbAuthError(TmdbError):
    """The token was refused: retrying cannot help, the run must stop."""


class TmdbRequestError(TmdbError):
    """A request failed for good: a non-retryable 4xx, or retries exhausted."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ClientStats:
    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests repeated after a 429, 5xx, timeout or connection error
    throttled: int = 0  # 429 answers
    waited_s: float = 0.0  # time spent pausing for Retry-After


class RequestPacer:
    """Spaces request starts `1/rate` apart (a token bucket holding `burst` tokens).

    The default burst of 1 never sends more than `rate` requests in any one-second window,
    which is what a sliding-window server limit (TMDB's) counts. `pause` holds every caller
    back until a moment, for `Retry-After`.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.interval = 1.0 / rate
        self.burst = burst
        self._next = 0.0
        self._paused_until = 0.0

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            slot = max(self._next, now - (self.burst - 1) * self.interval, self._paused_until)
            self._next = slot + self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
            # A pause may have begun while this caller slept on an earlier slot.
            if self._paused_until <= time.monotonic():
                return

    def pause(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._paused_until = max(self._paused_until, until)
        self._next = max(self._next, self._paused_until)


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` as seconds (TMDB sends an integer; an HTTP date is also valid)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _status_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and body.get("status_message"):
        return f"{body['status_message']} (TMDB code {body.get('status_code')})"
    return response.reason_phrase


class TmdbClient:
    """`async with TmdbClient(token) as tmdb: await tmdb.movie_details(550)`."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        rate_limit: float = 40.0,
        concurrency: int = 8,
        timeout: float = 15.0,
        max_attempts: int = 6,
        max_throttled: int = 20,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not token:
            raise TmdbAuthError("TMDB_API_TOKEN is not set")
        self.stats = ClientStats()
        self.limiter = RequestPacer(rate_limit)
        self.max_attempts = max_attempts
        self.max_throttled = max_throttled
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._slots = asyncio.Semaphore(concurrency)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TmdbClient:
        options: dict[str, Any] = {
            "rate_limit": settings.tmdb_rate_limit,
            "concurrency": settings.tmdb_concurrency,
            **overrides,
        }
        return cls(settings.tmdb_api_token or "", settings.tmdb_api_base_url, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- endpoints ------------------------------------------------------------------------

    async def discover(self, params: Params, page: int) -> JsonObject:
        """One page of `/discover/movie` (20 films; TMDB refuses pages past 500)."""
        answer = await self.get_json("discover/movie", {**params, "page": page})
        assert answer is not None
        return answer

    async def movie_details(self, movie_id: int) -> JsonObject | None:
        """A film with its credits and keywords, or None when TMDB does not know the id."""
        return await self.get_json(
            f"movie/{movie_id}", {"append_to_response": "credits,keywords"}, allow_404=True
        )

    async def changes(self, start_date: date, end_date: date, page: int) -> JsonObject:
        """One page of `/movie/changes` (ids of films edited in a window of <= 14 days)."""
        answer = await self.get_json(
            "movie/changes",
            {"start_date": start_date.isoformat(), "end_date": end_date.isoformat(), "page": page},
        )
        assert answer is not None
        return answer

    async def configuration(self) -> JsonObject:
        """`/configuration`: a cheap call that checks the token."""
        answer = await self.get_json("configuration", {})
        assert answer is not None
        return answer

    # --- the request loop -----------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        # Equal jitter: at least half the ceiling, so retries always back off, yet spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def get_json(
        self, path: str, params: Params, *, allow_404: bool = False
    ) -> JsonObject | None:
        failures = 0
        throttles = 0
        while True:
            async with self._slots:
                await self.limiter.acquire()
                self.stats.requests += 1
                try:
                    response = await self._http.get(path, params=dict(params))
                except httpx.TransportError as exc:  # timeouts, refused/reset connections
                    problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                    response = None
            if response is not None:
                status = response.status_code
                if status == 200:
                    body = response.json()
                    if not isinstance(body, dict):
                        raise TmdbRequestError(f"GET /{path}: expected a JSON object", status)
                    return body
                if status == 401:
                    raise TmdbAuthError(
                        f"TMDB_API_TOKEN rejected by TMDB ({_status_message(response)}); "
                        "set TMDB_API_TOKEN to your API Read Access Token"
                    )
                if status == 404 and allow_404:
                    return None
                problem = f"HTTP {status}: {_status_message(response)}"
                if status == 429:
                    throttles += 1
                    self.stats.throttled += 1
                    if throttles > self.max_throttled:
                        raise TmdbRequestError(
                            f"GET /{path}: still rate limited after {throttles} tries", status
                        )
                    wait = _retry_after(response)
                    wait = self._backoff(throttles) if wait is None else wait
                    wait = min(wait, self.max_retry_after)
                    self.stats.waited_s += wait
                    self.limiter.pause(wait)  # everyone waits, not just this request
                    self.stats.retries += 1
                    continue
                if status < 500:
                    raise TmdbRequestError(f"GET /{path} {dict(params)}: {problem}", status)
            failures += 1
            if failures >= self.max_attempts:
                raise TmdbRequestError(
                    f"GET /{path} failed {failures} times; last: {problem}",
                    response.status_code if response is not None else None,
                )
            self.stats.retries += 1
            await asyncio.sleep(self._backoff(failures))
