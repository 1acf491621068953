"""Authentication: credentials in, a `Principal` with one `Role` out (or a 401).

Three kinds of credential:

* `Authorization: Bearer <JWT>` from `POST /v1/auth/token` (OAuth2 password flow). HS256,
  short-lived, carrying `sub`, `role` and `ver` (the user's token version), signed by the
  first key of `Settings.signing_keys` and naming it in the `kid` header; every listed key
  verifies, so rotating the signing key logs nobody out. The signature is checked without the
  database; the token version is compared with the user's (read through a cache of
  `TOKEN_REVOCATION_CACHE_SECONDS`), so revoking a user's tokens (a version bump, also made by a
  password or role change, disabling and deleting) lands within that time. While the database
  is down, the last version read answers however old it is, and a user this process has not
  seen is trusted on the signature alone: logged-in users keep reading analytics during an
  outage, at the price that a revocation made just before it may go unnoticed until it ends.
  A token with `scope: password_change` (a login with an expired password) is good for
  `POST /v1/auth/password` only (`app.security`).
* `X-API-Key: tak_...` for partner systems, created with `tmdb-analytics keys create`. Looked
  up by key id and compared by SHA-256 (see `app.services.credentials`); verified keys are
  cached for `API_KEY_CACHE_SECONDS`, which bounds how long a revoked key keeps working. An
  expiry (of the key, or of a rotated-out secret's grace period) is checked on every use,
  cached or not. When a key was last used is written at most once a minute per key, in the
  background.
* `X-API-Key: <ADMIN_API_KEY>`: the operator's admin key from the environment.

`LoginGuard` throttles password guessing. The FastAPI side (dependencies, role checks) is in
`app.security`; this module knows nothing of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

from jose import ExpiredSignatureError, JWTError, jwt
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document
from app.errors import DomainError, UnavailableError
from app.limits import RequestRateLimiter, retry_after_header
from app.observability import AUTH_FAILURES, RATE_LIMITED
from app.services import credentials
from app.services.credentials import Role, TokenState, VerifiedKey
from app.settings import Settings, SigningKey

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "tmdb-analytics"
REALM = 'realm="tmdb-analytics"'
MAX_CREDENTIAL_LENGTH = 4096
# How long an expired API-key cache entry may still answer while it is being refreshed.
STALE_GRACE_SECONDS = 120.0
# A token that may only change its user's password (a login with an expired password).
PASSWORD_CHANGE_SCOPE = "password_change"
PASSWORD_CHANGE_TOKEN_MINUTES = 15
# After a failed token-version read, answer from the cache without asking the database for
# this long: during an outage one request in this many seconds waits for its timeout, not all.
DB_RETRY_SECONDS = 5.0
# A key's `last_used_at` is written at most this often.
LAST_USED_INTERVAL_SECONDS = 60.0
MAX_CACHE_ENTRIES = 10_000

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
    # Bearer tokens: the user's token version when it was issued.
    token_version: int | None = None
    # Bearer tokens issued for an expired password: good for changing it and nothing else.
    password_change_only: bool = False

    @property
    def rate_key(self) -> str:
        # Keyed by credential: every holder of one API key shares its budget.
        return f"{self.method}:{self.key_id or self.subject}"

    def __str__(self) -> str:
        # What the access log records: never a secret, always enough to find the credential.
        return f"key:{self.key_id}" if self.key_id else f"{self.method}:{self.subject}"

    @property
    def actor(self) -> str:
        """Who acts, as the audit log names it: `user:NAME`, `key:ID` or `admin-key` (never a
        secret; the same forms as dashboard owners)."""
        if self.method == "api_key" and self.key_id:
            return f"key:{self.key_id}"
        if self.method == "admin_key":
            return "admin-key"
        return f"user:{self.subject}"


# --- JWTs ----------------------------------------------------------------------------------


def issue_token(
    settings: Settings,
    subject: str,
    role: Role,
    *,
    version: int = 0,
    password_change_only: bool = False,
) -> tuple[str, int]:
    """A signed access token and its lifetime in seconds. `version` is the user's token
    version; `password_change_only` makes a short token good for the password change only."""
    minutes = settings.jwt_expire_minutes
    if password_change_only:
        minutes = min(minutes, PASSWORD_CHANGE_TOKEN_MINUTES)
    lifetime = timedelta(minutes=minutes)
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role.value,
        "ver": version,
        "iss": JWT_ISSUER,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    if password_change_only:
        claims["scope"] = PASSWORD_CHANGE_SCOPE
    key = settings.signing_keys[0]
    token = jwt.encode(claims, key.secret, algorithm=JWT_ALGORITHM, headers={"kid": key.kid})
    return token, int(lifetime.total_seconds())


def _verifying_keys(settings: Settings, header: dict[str, Any]) -> tuple[SigningKey, ...]:
    """The key a token's `kid` names; every listed key for a token from before key ids."""
    keys = settings.signing_keys
    if "kid" not in header:
        return keys
    kid = header["kid"]
    named = tuple(k for k in keys if k.kid == kid)
    if not named:
        raise JWTError("unknown key id")
    return named


def decode_token(settings: Settings, token: str) -> Principal:
    """Verify signature, algorithm, key id, issuer and expiry; raise 401 on anything else.
    (The token version is checked against the user by `Authenticator.bearer_principal`.)"""
    if len(token) > MAX_CREDENTIAL_LENGTH:
        raise UnauthorizedError("token too long", reason="invalid_token", invalid_token=True)
    try:
        header = jwt.get_unverified_header(token)
        # Pinning the algorithm before verifying defeats `alg: none` and algorithm
        # confusion: only an HMAC-SHA256 signature made with one of our keys is accepted.
        if header.get("alg") != JWT_ALGORITHM:
            raise JWTError("unexpected algorithm")
        claims: dict[str, Any] | None = None
        failure: JWTError = JWTError("no key")
        for key in _verifying_keys(settings, header):
            try:
                claims = jwt.decode(
                    token,
                    key.secret,
                    algorithms=[JWT_ALGORITHM],
                    issuer=JWT_ISSUER,
                    options={"require_exp": True, "require_sub": True, "require_iat": True},
                )
                break
            except ExpiredSignatureError:
                raise  # the signature matched: this key made it, and it is over
            except JWTError as exc:
                failure = exc
        if claims is None:
            raise failure
        role = Role(str(claims["role"]))
        subject = claims["sub"]
        version = claims.get("ver", 0)  # tokens from before token versions: version 0
        scope = claims.get("scope")
    except ExpiredSignatureError as exc:
        raise UnauthorizedError(
            "token expired; request a new one", reason="expired", invalid_token=True
        ) from exc
    except (JWTError, ValueError, KeyError, TypeError) as exc:
        raise UnauthorizedError(
            "invalid bearer token", reason="invalid_token", invalid_token=True
        ) from exc
    if (
        not isinstance(subject, str)
        or not subject
        or type(version) is not int
        or scope not in (None, PASSWORD_CHANGE_SCOPE)
    ):
        raise UnauthorizedError("invalid bearer token", reason="invalid_token", invalid_token=True)
    return Principal(
        subject=subject,
        role=role,
        method="bearer",
        token_version=version,
        password_change_only=scope == PASSWORD_CHANGE_SCOPE,
    )


# --- API keys ------------------------------------------------------------------------------


class _Unknown:
    """No token state known, and the database cannot say."""


_UNKNOWN: Final = _Unknown()


@dataclass(slots=True)
class _UserEntry:
    state: TokenState | None  # None: no such user
    fresh_until: float  # monotonic


class Authenticator:
    """Verifies credentials that need the database: bearer tokens' versions against their
    users, and API keys (the admin key from the environment, stored keys from the database).

    Verified keys are cached for `API_KEY_CACHE_SECONDS` so a busy partner does not cost a
    database round trip per call. When an entry expires it keeps answering for up to
    `STALE_GRACE_SECONDS` while one background lookup refreshes it (refresh-ahead): a slow or
    unreachable database then never stalls callers whose key was verified recently, and a
    revocation still lands as soon as that refresh reads it (normally within the cache time;
    during a database outage, within the cache time plus the grace). An expiry never waits
    for a refresh: every cached answer is checked against the secret's `valid_until`.

    Users' token versions are cached for `TOKEN_REVOCATION_CACHE_SECONDS` and read again on
    the first request after that (one read per user however many requests wait for it), so a
    revocation lands within the cache time. While the database is down the last version read
    answers, and a user never read is trusted on the token's signature (see the module doc).
    """

    def __init__(self, settings: Settings, db: AsyncDatabase[Document]) -> None:
        self.settings = settings
        self._db = db
        self._admin_key = settings.admin_api_key.encode() if settings.admin_api_key else None
        self._cache: dict[str, tuple[VerifiedKey, float]] = {}  # key -> (match, fresh until)
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._users: dict[str, _UserEntry] = {}
        self._user_reads: dict[str, asyncio.Task[TokenState | None]] = {}
        self._db_down_until = 0.0
        self.last_used_interval = LAST_USED_INTERVAL_SECONDS
        self._last_noted: dict[str, float] = {}  # key id -> when its use was last queued
        self._pending_uses: dict[str, datetime] = {}
        self._use_writer: asyncio.Task[None] | None = None

    # --- bearer tokens ---------------------------------------------------------------------

    async def bearer_principal(self, token: str) -> Principal:
        """The token's principal when its signature, expiry and version hold (401 otherwise)."""
        principal = decode_token(self.settings, token)
        state = await self._token_state(principal.subject, principal.token_version or 0)
        if isinstance(state, _Unknown):
            return principal
        if state is None or state.disabled or state.version != principal.token_version:
            raise UnauthorizedError(
                "token revoked; log in again", reason="revoked", invalid_token=True
            )
        return principal

    def note_user(self, username: str, state: TokenState | None) -> None:
        """What this process just read or wrote about a user (a login, a revocation)."""
        ttl = self.settings.token_revocation_cache_seconds
        if len(self._users) >= MAX_CACHE_ENTRIES and username not in self._users:
            self._users.pop(next(iter(self._users)))
        self._users[username] = _UserEntry(state, time.monotonic() + ttl)

    async def _token_state(self, username: str, version: int) -> TokenState | _Unknown | None:
        """The user's token state, from the cache while fresh. A token newer than the cached
        version (or of a user cached as unknown) reads again at once: another process changed
        the user (a password change, a new account) and issued it, and only we can sign, so
        this costs a forger nothing they could exploit."""
        entry = self._users.get(username)
        now = time.monotonic()
        if (
            entry is not None
            and now < entry.fresh_until
            and entry.state is not None
            and entry.state.version >= version
        ):
            return entry.state
        if now < self._db_down_until:
            return entry.state if entry is not None else _UNKNOWN
        task = self._user_reads.get(username)
        if task is None:
            task = asyncio.create_task(credentials.token_state(self._db, username))
            self._user_reads[username] = task
            task.add_done_callback(lambda t: self._read_done(username, t))
        try:
            state = await asyncio.shield(task)
        except PyMongoError as exc:
            self._db_down_until = time.monotonic() + DB_RETRY_SECONDS
            log.warning(
                "token version read failed (%s): answering from the cache",
                exc.__class__.__name__,
            )
            return entry.state if entry is not None else _UNKNOWN
        return state

    def _read_done(self, username: str, task: asyncio.Task[TokenState | None]) -> None:
        self._user_reads.pop(username, None)
        if task.cancelled() or task.exception() is not None:
            return
        self.note_user(username, task.result())

    def forget_user(self, username: str) -> None:
        """Read the user again on the next request (this process changed it)."""
        self._users.pop(username, None)

    # --- API keys ----------------------------------------------------------------------------

    async def api_key_principal(self, key: str) -> Principal:
        if len(key) > MAX_CREDENTIAL_LENGTH:
            raise UnauthorizedError("invalid API key", reason="invalid_key")
        # Constant-time, so response timing leaks nothing about the admin key's bytes.
        if self._admin_key is not None and hmac.compare_digest(key.encode(), self._admin_key):
            return Principal(subject="admin-key", role=Role.admin, method="admin_key")
        found = await self._lookup(key)
        if found is None:
            raise UnauthorizedError("invalid, expired or revoked API key", reason="invalid_key")
        record = found.record
        self._note_use(record.key_id)
        return Principal(
            subject=record.name, role=record.role, method="api_key", key_id=record.key_id
        )

    async def _lookup(self, key: str) -> VerifiedKey | None:
        cached = self._cache.get(key)
        if cached is not None:
            found, fresh_until = cached
            if not found.valid_at(datetime.now(UTC)):
                self._cache.pop(key, None)  # expired: final, whatever the cache time
                return None
            now = time.monotonic()
            if now < fresh_until:
                return found
            if now < fresh_until + STALE_GRACE_SECONDS:
                if key not in self._refreshing:
                    task = asyncio.create_task(self._refresh(key))
                    self._refreshing[key] = task
                    task.add_done_callback(lambda _: self._refreshing.pop(key, None))
                return found
        looked_up = await credentials.find_api_key(self._db, key)
        self._remember(key, looked_up)
        return looked_up

    async def _refresh(self, key: str) -> None:
        try:
            found = await credentials.find_api_key(self._db, key)
        except PyMongoError as exc:
            # Keep answering from the entry until its grace ends; then callers wait for the
            # database like anyone else (and get 503 while it is down).
            log.warning("API key refresh failed: %s", exc.__class__.__name__)
            return
        self._remember(key, found)

    def _remember(self, key: str, found: VerifiedKey | None) -> None:
        ttl = self.settings.api_key_cache_seconds
        if found is None or ttl <= 0:
            self._cache.pop(key, None)  # revoked or deleted: forget it at once
            return
        now = time.monotonic()
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            horizon = now - STALE_GRACE_SECONDS
            self._cache = {k: v for k, v in self._cache.items() if v[1] > horizon}
        self._cache[key] = (found, now + ttl)

    def forget_key(self, key_id: str) -> None:
        """Look the key up again on its next use (this process revoked, rotated or deleted
        it)."""
        self._cache = {k: v for k, v in self._cache.items() if v[0].record.key_id != key_id}

    def _note_use(self, key_id: str) -> None:
        """Queue `last_used_at` for the key, at most once per `last_used_interval`; a
        background task writes it, so verification never waits for the database."""
        now = time.monotonic()
        last = self._last_noted.get(key_id)
        if last is not None and now - last < self.last_used_interval:
            return
        if len(self._last_noted) >= MAX_CACHE_ENTRIES:
            self._last_noted.clear()
        self._last_noted[key_id] = now
        self._pending_uses[key_id] = datetime.now(UTC)
        if self._use_writer is None or self._use_writer.done():
            self._use_writer = asyncio.create_task(self._write_uses())

    async def _write_uses(self) -> None:
        while self._pending_uses:
            batch, self._pending_uses = self._pending_uses, {}
            try:
                await credentials.record_key_use(self._db, batch)
            except PyMongoError as exc:
                # Best effort: the next use after the interval tries again.
                log.warning("API key last_used_at not written: %s", exc.__class__.__name__)
                return

    async def close(self) -> None:
        """Write the uses still queued (briefly), then stop background work."""
        if self._use_writer is not None and not self._use_writer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._use_writer), timeout=2)
        tasks = [*self._refreshing.values(), *self._user_reads.values()]
        if self._use_writer is not None:
            tasks.append(self._use_writer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- logins --------------------------------------------------------------------------------


@dataclass(slots=True)
class LoginAttempt:
    failed: bool = False


HASH_THREAD_NICENESS = 10


def _lower_thread_priority() -> None:
    """Raise this thread's niceness (Linux schedules threads one by one); elsewhere, or
    where it is refused, the thread keeps the process's priority."""
    try:
        thread = threading.get_native_id()
        niceness = os.getpriority(os.PRIO_PROCESS, thread) + HASH_THREAD_NICENESS
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness))
    except (AttributeError, OSError):
        pass


class LoginGuard:
    """Throttles password guessing and bounds what logins may cost.

    * Failed logins are counted per client address and per username (token buckets of
      `LOGIN_*_FAILURES_PER_MINUTE`). Each attempt takes a token from both up front, so that
      concurrent guesses cannot all slip past a check; a login that does not fail (success, or
      a database error) gives them back. An empty bucket answers 429 before any Argon2 runs.
    * Argon2 runs in `LOGIN_HASH_THREADS` threads of its own, never in the default executor
      that analytics and model loading need; at most `LOGIN_HASH_QUEUE` more logins wait for
      them, and further ones are shed with 503. The hash threads run at a lower scheduling
      priority, so on a machine whose cores they fill, serving threads still get the CPU
      first. A login flood thus costs a bounded share of the CPU and stalls nothing else.
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
            self._executor = ThreadPoolExecutor(
                self.threads, thread_name_prefix="argon2", initializer=_lower_thread_priority
            )
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
