"""Request limits: rate (per credential / per client IP), body size and a response deadline.

Pure ASGI middleware so they run before any routing or body parsing and cost next to nothing.
Rate limiting is split in two on purpose:

* requests *without* credentials, and every login (`POST /v1/auth/token`), are limited here,
  per client IP, before anything else runs;
* requests *with* credentials are limited in `app.security` once the credential is verified,
  per principal. Keying on the verified principal (not the raw header) stops a client from
  dodging its limit by sending a fresh random token with every request; a credential that
  fails verification is charged to the client IP instead.

Limits are per process: with N workers a client gets up to N times the configured rate.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections import OrderedDict
from functools import lru_cache

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import RATE_LIMITED, send_problem
from app.settings import Settings

# Probes and scrapes must never be throttled: an orchestrator that sees 429 from /ready would
# take a healthy instance out of rotation.
UNLIMITED_PATHS = frozenset({"/health", "/ready", "/metrics"})
# The login endpoint takes no credential, so a credential header there is noise: it is charged
# to the client address whatever headers come with it (a bogus one must not skip the limit).
TOKEN_PATH = "/v1/auth/token"


class RequestRateLimiter:
    """Token buckets keyed by an arbitrary string: `per_minute` requests of burst, refilled
    continuously at `per_minute / 60` per second. Single event loop, so no locking needed.

    At most `max_keys` buckets are kept; past that the least recently used one is forgotten
    (O(1) per hit). A flood of fresh addresses thus only evicts clients that have been quiet
    for the longest, and a client being throttled, which keeps hitting, stays remembered.
    """

    def __init__(self, per_minute: int, *, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, key: str, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.capacity
        tokens, last = bucket
        return min(self.capacity, tokens + (now - last) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)

    def hit(self, key: str) -> float:
        """Take one token; 0.0 when allowed, otherwise the seconds until one is available."""
        now = time.monotonic()
        tokens = self._tokens(key, now)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def peek(self, key: str) -> float:
        """What `hit` would answer, without taking a token."""
        tokens = self._tokens(key, time.monotonic())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def refund(self, key: str) -> None:
        """Give back a token taken by `hit`: the attempt turned out not to count."""
        if key in self._buckets:
            now = time.monotonic()
            self._store(key, min(self.capacity, self._tokens(key, now) + 1.0), now)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


def client_ip(scope: Scope) -> str:
    """The client address as rate limits count it: an IPv4 address, or the /64 network of an
    IPv6 one. Behind a proxy, run uvicorn with --proxy-headers so this is the real client."""
    client = scope.get("client")
    return rate_address(str(client[0])) if client else "unknown"


@lru_cache(maxsize=4096)
def rate_address(host: str) -> str:
    # One IPv6 host is normally handed a whole /64: counted per address, it would hold 2**64
    # budgets. IPv4 stays per address (and IPv4-mapped IPv6 counts as that IPv4 address).
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a test client, a unix socket): count it as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def has_credentials(scope: Scope) -> bool:
    """Whether the request carries a credential header (valid or not)."""
    return any(k in (b"authorization", b"x-api-key") for k, _ in scope.get("headers", ()))


class AnonymousRateLimitMiddleware:
    """Per-IP limit for requests that carry no credentials (docs, 404s...) and for every
    login request."""

    def __init__(self, app: ASGIApp, limiter: RequestRateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] not in UNLIMITED_PATHS
            and (scope["path"] == TOKEN_PATH or not has_credentials(scope))
        ):
            wait = self.limiter.hit("ip:" + client_ip(scope))
            if wait > 0:
                RATE_LIMITED.labels("anonymous").inc()
                await send_problem(
                    send,
                    429,
                    "rate limit exceeded for this client address; retry later",
                    scope=scope,
                    headers=[("Retry-After", retry_after_header(wait))],
                )
                return
        await self.app(scope, receive, send)


class BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive()`; an HTTPException so FastAPI passes it through its body parsing
    untouched and the app's handler renders it as problem+json."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodySizeLimitMiddleware:
    """413 for bodies over `max_bytes`: at once when Content-Length says so, otherwise as soon
    as the streamed body crosses the limit (chunked uploads have no Content-Length)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._reject(scope, send)
                    return
        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if exceeded and not response_started:
                # Whatever the app made of a truncated body (a handler's 413, or a 400 from a
                # parser that swallowed the error) is replaced by one uniform 413 below.
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLargeError:
            if response_started:
                raise
        if exceeded and not response_started:
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        await send_problem(send, 413, f"request body exceeds {self.max_bytes} bytes", scope=scope)


class DeadlineMiddleware:
    """503 when no response has *started* within `seconds`.

    The database timeouts already bound a dead database to a few seconds; this guards the rest
    (a database that accepts connections but hangs, a stuck dependency). Once the response has
    started the deadline is lifted, so long streamed downloads are not cut off.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.seconds <= 0:
            await self.app(scope, receive, send)
            return
        response_started = False
        deadline = asyncio.timeout(self.seconds)

        async def lifting_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start" and not response_started:
                response_started = True
                deadline.reschedule(None)
            await send(message)

        try:
            async with deadline:
                await self.app(scope, receive, lifting_send)
        except TimeoutError:
            if response_started:
                raise
            await send_problem(
                send,
                503,
                f"no answer within {self.seconds:g} s; a dependency is slow or down, retry shortly",
                scope=scope,
                headers=[("Retry-After", "5")],
            )


def install_limits(app: FastAPI, settings: Settings, limiter: RequestRateLimiter) -> None:
    """Add the limit middleware (innermost first). The same `limiter` is in `AppState`, for
    the per-credential checks in `app.security`."""
    app.add_middleware(DeadlineMiddleware, seconds=settings.request_timeout_seconds)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AnonymousRateLimitMiddleware, limiter=limiter)
