"""Authentication: credentials in, a `Principal` with one `Role` out (or a 401).

Three kinds of credential:

* `Authorization: Bearer <JWT>` from `POST /v1/auth/token` (OAuth2 password flow). HS256 with
  `JWT_SECRET`, short-lived, carrying `sub` and `role`. Verified without touching the
  database, so logged-in users keep reading analytics while the database is down; the price
  is that a deleted or demoted user keeps the old role until the token expires
  (`JWT_EXPIRE_MINUTES`, 30 by default).
* `X-API-Key: tak_...` for partner systems, created with `tmdb-analytics keys create`. Looked
  up by key id and compared by SHA-256 (see `app.services.credentials`); verified keys are
  cached for `API_KEY_CACHE_SECONDS`, which bounds how long a revoked key keeps working.
* `X-API-Key: <ADMIN_API_KEY>`: the operator's admin key from the environment.

`LoginGuard` throttles password guessing. The FastAPI side (dependencies, role checks) is in
`app.security`; this module knows nothing of requests.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from jose import ExpiredSignatureError, JWTError, jwt
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document
from app.errors import DomainError, UnavailableError
from app.limits import RequestRateLimiter, retry_after_header
from app.observability import AUTH_FAILURES, RATE_LIMITED
from app.services import credentials
from app.services.credentials import ApiKey, Role
from app.settings import Settings

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "tmdb-analytics"
REALM = 'realm="tmdb-analytics"'
MAX_CREDENTIAL_LENGTH = 4096
# How long an expired API-key cache entry may still answer while it is being refreshed.
STALE_GRACE_SECONDS = 120.0

log = logging.getLogger("app.authn")

AuthMethod = Literal["bearer", "api_key", "admin_key"]


# --- errors (rendered as problem+json by app.errors) ---------------------------------------


class UnauthorizedError(DomainError):
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, reason: str, invalid_token: bool = False) -> None:
        challenge = f"Bearer {REALM}"
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(detail, headers={"WWW-Authenticate": challenge})
        AUTH_FAILURES.labels(reason).inc()


class ForbiddenError(DomainError):
    status = 403
    title = "Forbidden"


class RateLimitedError(DomainError):
    status = 429
    title = "Too Many Requests"


# --- principals ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    subject: str
    role: Role
    method: AuthMethod
    key_id: str | None = None

    @property
    def rate_key(self) -> str:
        # Keyed by credential: every holder of one API key shares its budget.
        return f"{self.method}:{self.key_id or self.subject}"

    def __str__(self) -> str:
        # What the access log records: never a secret, always enough to find the credential.
        return f"key:{self.key_id}" if self.key_id else f"{self.method}:{self.subject}"


# --- JWTs ----------------------------------------------------------------------------------


def issue_token(settings: Settings, subject: str, role: Role) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds."""
    lifetime = timedelta(minutes=settings.jwt_expire_minutes)
    now = datetime.now(UTC)
    claims = {
        "sub": subject,
        "role": role.value,
        "iss": JWT_ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    token = jwt.encode(claims, settings.jwt_secret, algorithm=JWT_ALGORITHM)
    return token, int(lifetime.total_seconds())


def decode_token(settings: Settings, token: str) -> Principal:
    """Verify signature, algorithm, issuer and expiry; raise 401 on anything else."""
    if len(token) > MAX_CREDENTIAL_LENGTH:
        raise UnauthorizedError("token too long", reason="invalid_token", invalid_token=True)
    try:
        # Pinning the algorithm before verifying defeats `alg: none` and algorithm
        # confusion: only an HMAC-SHA256 signature made with our secret is accepted.
        if jwt.get_unverified_header(token).get("alg") != JWT_ALGORITHM:
            raise JWTError("unexpected algorithm")
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options={"require_exp": True, "require_sub": True, "require_iat": True},
        )
        role = Role(str(claims["role"]))
        subject = claims["sub"]
    except ExpiredSignatureError as exc:
        raise UnauthorizedError(
            "token expired; request a new one", reason="expired", invalid_token=True
        ) from exc
    except (JWTError, ValueError, KeyError, TypeError) as exc:
        raise UnauthorizedError(
            "invalid bearer token", reason="invalid_token", invalid_token=True
        ) from exc
    if not isinstance(subject, str) or not subject:
        raise UnauthorizedError("invalid bearer token", reason="invalid_token", invalid_token=True)
    return Principal(subject=subject, role=role, method="bearer")


# --- API keys ------------------------------------------------------------------------------


class Authenticator:
    """Verifies API keys: the admin key from the environment, stored keys from the database.

    Verified keys are cached for `API_KEY_CACHE_SECONDS` so a busy partner does not cost a
    database round trip per call. When an entry expires it keeps answering for up to
    `STALE_GRACE_SECONDS` while one background lookup refreshes it (refresh-ahead): a slow or
    unreachable database then never stalls callers whose key was verified recently, and a
    revocation still lands as soon as that refresh reads it (normally within the cache time;
    during a database outage, within the cache time plus the grace).
    """

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        self.settings = settings
        self._db = db
        self._admin_key = settings.admin_api_key.encode() if settings.admin_api_key else None
        self._cache: dict[str, tuple[ApiKey, float]] = {}  # key -> (record, fresh until)
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def api_key_principal(self, key: str) -> Principal:
        if len(key) > MAX_CREDENTIAL_LENGTH:
            raise UnauthorizedError("invalid API key", reason="invalid_key")
        # Constant-time, so response timing leaks nothing about the admin key's bytes.
        if self._admin_key is not None and hmac.compare_digest(key.encode(), self._admin_key):
            return Principal(subject="admin-key", role=Role.admin, method="admin_key")
        record = await self._lookup(key)
        if record is None:
            raise UnauthorizedError("invalid or revoked API key", reason="invalid_key")
        return Principal(
            subject=record.name, role=record.role, method="api_key", key_id=record.key_id
        )

    async def _lookup(self, key: str) -> ApiKey | None:
        cached = self._cache.get(key)
        if cached is not None:
            record, fresh_until = cached
            now = time.monotonic()
            if now < fresh_until:
                return record
            if now < fresh_until + STALE_GRACE_SECONDS:
                if key not in self._refreshing:
                    task = asyncio.create_task(self._refresh(key))
                    self._refreshing[key] = task
                    task.add_done_callback(lambda _: self._refreshing.pop(key, None))
                return record
        found = await credentials.find_api_key(self._db, key)
        self._remember(key, found)
        return found

    async def _refresh(self, key: str) -> None:
        try:
            record = await credentials.find_api_key(self._db, key)
        except PyMongoError as exc:
            # Keep answering from the entry until its grace ends; then callers wait for the
            # database like anyone else (and get 503 while it is down).
            log.warning("API key refresh failed: %s", exc.__class__.__name__)
            return
        self._remember(key, record)

    def _remember(self, key: str, record: ApiKey | None) -> None:
        ttl = self.settings.api_key_cache_seconds
        if record is None or ttl <= 0:
            self._cache.pop(key, None)  # revoked or deleted: forget it at once
            return
        now = time.monotonic()
        if len(self._cache) >= 10_000:
            horizon = now - STALE_GRACE_SECONDS
            self._cache = {k: v for k, v in self._cache.items() if v[1] > horizon}
        self._cache[key] = (record, now + ttl)


# --- logins --------------------------------------------------------------------------------


@dataclass(slots=True)
class LoginAttempt:
    failed: bool = False


class LoginGuard:
    """Throttles password guessing and bounds what logins may cost.

    * Failed logins are counted per client address and per username (token buckets of
      `LOGIN_*_FAILURES_PER_MINUTE`). Each attempt takes a token from both up front, so that
      concurrent guesses cannot all slip past a check; a login that does not fail (success, or
      a database error) gives them back. An empty bucket answers 429 before any Argon2 runs.
    * Argon2 runs in `LOGIN_HASH_THREADS` threads of its own, never in the default executor
      that analytics and model loading need; at most `LOGIN_HASH_QUEUE` more logins wait for
      them, and further ones are shed with 503. A login flood thus costs a bounded share of
      the CPU and stalls nothing else.
    """

    def __init__(self, settings: Settings) -> None:
        self.by_address = RequestRateLimiter(settings.login_ip_failures_per_minute)
        self.by_user = RequestRateLimiter(settings.login_user_failures_per_minute)
        self.threads = settings.login_hash_threads
        self.max_in_flight = settings.login_hash_threads + settings.login_hash_queue
        self.in_flight = 0
        self._executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="argon2")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @asynccontextmanager
    async def attempt(self, address: str, username: str) -> AsyncIterator[LoginAttempt]:
        """Admit one login (429 or 503 otherwise); mark it `failed` to keep it counted."""
        charged: list[tuple[RequestRateLimiter, str]] = []
        for limiter, key, what in (
            (self.by_address, "ip:" + address, "from this client address"),
            (self.by_user, "user:" + username.casefold(), "for this username"),
        ):
            wait = limiter.hit(key)
            if wait > 0:
                for spent, spent_key in charged:
                    spent.refund(spent_key)
                RATE_LIMITED.labels("login").inc()
                raise RateLimitedError(
                    f"too many failed logins {what}; retry later",
                    headers={"Retry-After": retry_after_header(wait)},
                )
            charged.append((limiter, key))
        attempt = LoginAttempt()
        try:
            if self.in_flight >= self.max_in_flight:
                RATE_LIMITED.labels("login_overload").inc()
                raise UnavailableError(
                    "too many logins in progress; retry shortly", headers={"Retry-After": "1"}
                )
            self.in_flight += 1
            try:
                yield attempt
            finally:
                self.in_flight -= 1
        finally:
            if not attempt.failed:
                for limiter, key in charged:
                    limiter.refund(key)
