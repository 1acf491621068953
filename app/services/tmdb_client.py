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
import math
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass
class Ticket:
    """One request let through by the pacer: when it started, and when its answer (or its
    failure) came back."""

    started: float
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RequestPacer:
    """Paces request starts so that a sliding-window limit of `rate` requests a second (what
    TMDB enforces) is not crossed, without bursts, and slows everyone down after a 429.

    - Starts are spaced `1/rate` apart (a token bucket holding `burst` tokens).
    - Spacing alone does not keep a server's window: the server counts *arrivals*, and a
      request's travel time varies (on a busy machine or network, by tens of ms), so 41
      arrivals can fall within one second of 40-a-second starts. A request that started
      `rate` requests before this one has certainly arrived by the time its answer came
      back, so a start waits until one second has passed since that answer: no window of
      the server's can then hold more than `rate` of ours, whatever the travel times, and
      the cost is one travel time per second's worth of requests (a few percent).
    - A 429 means the server counts more than we do (another client, a lower limit):
      `pause` holds every caller back for `Retry-After`, and the pace drops by a quarter,
      then recovers slowly as answers come back without 429s.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.scale = 1.0  # of `rate`, lowered by 429s
        self.interval = 1.0 / rate
        self._next = 0.0
        self._paused_until = 0.0
        self._slowed_at = 0.0
        self._recent: deque[Ticket] = deque(maxlen=max(1, math.ceil(rate)))

    def _window_wait(self) -> float | Ticket:
        """Seconds to wait before the next start may keep the window (<= 0: none), or the
        ticket of a request still in flight that has to answer first."""
        pace = self.rate * self.scale
        allowed = max(1, int(pace))
        if len(self._recent) < allowed:
            return 0.0
        oldest = self._recent[-allowed]
        if oldest.finished is None:
            return oldest
        # `allowed` starts per `allowed / pace` seconds: one second at whole rates.
        return oldest.finished + allowed / pace - time.monotonic()

    async def acquire(self) -> Ticket:
        """Wait for this request's turn; pass the ticket to `finish` when it is answered."""
        while True:
            now = time.monotonic()
            slot = max(self._next, now - (self.burst - 1) * self.interval, self._paused_until)
            self._next = slot + self.interval
            if slot > now:
                await asyncio.sleep(slot - now)
            while self._paused_until <= time.monotonic():
                wait = self._window_wait()
                if isinstance(wait, Ticket):
                    await wait.done.wait()
                elif wait > 0:
                    await asyncio.sleep(wait)
                else:
                    # No await since the checks: this start is the one they allowed.
                    ticket = Ticket(started=time.monotonic())
                    self._recent.append(ticket)
                    return ticket
            # A pause began while this caller waited: take a new turn after it.

    def finish(self, ticket: Ticket, *, throttled: bool = False) -> None:
        ticket.finished = time.monotonic()
        ticket.done.set()
        if throttled:
            # Once per episode: the other requests in flight were sent at the old pace.
            if ticket.started > self._slowed_at:
                self.scale = max(0.1, self.scale * 0.75)
                self._slowed_at = ticket.finished
        else:
            self.scale = min(1.0, self.scale + 0.0005)  # back to full pace in ~500 answers
        self.interval = 1.0 / (self.rate * self.scale)

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
        concurrency: int = 16,
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
        self.concurrency = concurrency
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
                ticket = await self.limiter.acquire()
                self.stats.requests += 1
                response = None
                try:
                    response = await self._http.get(path, params=dict(params))
                except httpx.TransportError as exc:  # timeouts, refused/reset connections
                    problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                finally:
                    throttled = response is not None and response.status_code == 429
                    self.limiter.finish(ticket, throttled=throttled)
            if response is not None and response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:  # a proxy's error page or a cut answer: worth another try
                    problem = "HTTP 200 whose body is not JSON"
                else:
                    if not isinstance(body, dict):
                        raise TmdbRequestError(f"GET /{path}: expected a JSON object", 200)
                    return body
            elif response is not None:
                status = response.status_code
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
