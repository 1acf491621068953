"""Users and API keys in MongoDB: the only module that reads or writes `users` and `api_keys`.

* Users (`users`): `_id` is the username; the password is stored as an Argon2id hash
  (argon2-cffi). Hashing costs ~50 ms of CPU and 64 MiB by design, so it runs in a worker
  thread, never on the event loop: the service passes its own small executor (see
  `app.security.LoginGuard`) so that a login flood cannot take the default one.
* API keys (`api_keys`): the key is `tak_<key_id>_<secret>` with a 256-bit random secret. Only
  its SHA-256 is stored. A fast hash is enough here (unlike passwords) because the secret is
  random, not chosen by a person: there is nothing to guess, so there is nothing to slow down,
  and every request can verify a key in microseconds. `key_id` is public and names the key in
  `keys list` / `keys revoke`.

Lifecycle (issue 13): a user carries a token version (`token_version`, in every token as `ver`;
bumping it revokes the user's tokens), `password_changed_at` (for `PASSWORD_MAX_AGE_DAYS`) and
`disabled_at`. A key carries `expires_at` and, after a rotation, the hash of its previous secret
with the end of that secret's grace period (`previous_valid_until`); when it was last used is
kept beside it, in `api_key_uses`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel
from pymongo import ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.db import Document
from app.errors import ConflictError, InvalidQueryError, NotFoundError
from app.services.password_policy import check_password
from app.settings import MAX_PASSWORD_LENGTH

USERS = "users"
API_KEYS = "api_keys"
# When each key was last used, apart from the key itself: FerretDB v1 rewrites a whole
# document on update without isolation, so a frequent `last_used_at` write into `api_keys`
# could undo a revocation or rotation made at the same moment (seen in testing: 4 updates in
# 20 lost). Here it can only race another use, which is harmless.
API_KEY_USES = "api_key_uses"
API_KEY_PREFIX = "tak"
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
KEY_ID_RE = re.compile(r"^[0-9a-f]{12}$")
_KEY_RE = re.compile(rf"^{API_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
MAX_PASSWORD = MAX_PASSWORD_LENGTH
DEFAULT_MIN_PASSWORD = 12
DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([dhm])\s*$")
# A duration as the API takes it (`90d`, `24h`, `30m`), and the longest ones allowed.
DURATION_PATTERN = r"^[0-9]{1,6}[dhm]$"
MAX_KEY_LIFETIME = timedelta(days=3650)
MAX_ROTATION_GRACE = timedelta(days=30)
DEFAULT_ROTATION_GRACE = timedelta(hours=24)
_UNITS = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}

_hasher = PasswordHasher()
_dummy_hash: str | None = None


class Role(StrEnum):
    """Ordered powers: each role includes everything the ones before it may do."""

    viewer = "viewer"
    predictor = "predictor"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def includes(self, other: Role) -> bool:
        return self.rank >= other.rank


_RANK = {Role.viewer: 0, Role.predictor: 1, Role.admin: 2}


class User(BaseModel):
    username: str
    role: Role
    created_at: datetime
    password_changed_at: datetime
    disabled_at: datetime | None = None
    token_version: int = 0

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def password_expired(self, max_age_days: int, now: datetime | None = None) -> bool:
        """Whether the password is older than `max_age_days` (0: passwords never expire)."""
        if max_age_days <= 0:
            return False
        return (now or datetime.now(UTC)) - self.password_changed_at > timedelta(days=max_age_days)


@dataclass(frozen=True, slots=True)
class TokenState:
    """What a token of the user must agree with: its version, and that the user is enabled."""

    version: int
    disabled: bool


KeyStatus = Literal["active", "revoked", "expired"]


class ApiKey(BaseModel):
    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    rotated_at: datetime | None = None
    # After a rotation: until when the previous secret is still accepted.
    previous_valid_until: datetime | None = None
    key_hash: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def status(self, now: datetime | None = None) -> KeyStatus:
        if self.revoked:
            return "revoked"
        if self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at:
            return "expired"
        return "active"


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A key record that a presented secret matched, and until when that secret is valid (the
    key's expiry, or the end of the grace period of a secret replaced by a rotation)."""

    record: ApiKey
    valid_until: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return self.valid_until is None or now < self.valid_until


def parse_duration(text: str, *, what: str = "duration", maximum: timedelta) -> timedelta:
    """`90d`, `24h`, `30m` (days, hours, minutes) as a timedelta of at most `maximum`;
    InvalidQueryError otherwise."""
    match = DURATION_RE.match(text)
    if match is None:
        raise InvalidQueryError(f"{what}: give a number and a unit, d, h or m (e.g. 90d, 24h, 30m)")
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value > maximum:
        raise InvalidQueryError(f"{what}: at most {maximum.days} days")
    return value


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --- passwords -----------------------------------------------------------------------------


async def hash_password(password: str, executor: Executor | None = None) -> str:
    return await asyncio.get_running_loop().run_in_executor(executor, _hasher.hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_password(
    password_hash: str | None, password: str, executor: Executor | None = None
) -> bool:
    """Constant work whether or not the user exists: an unknown user is checked against a
    dummy hash, so response time does not reveal which usernames are real."""
    global _dummy_hash
    loop = asyncio.get_running_loop()
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = await hash_password(secrets.token_urlsafe(16), executor)
        await loop.run_in_executor(executor, _verify, _dummy_hash, password)
        return False
    return await loop.run_in_executor(executor, _verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


# --- users ---------------------------------------------------------------------------------

# Never read the hash where it is not needed.
_NO_HASH = {"password_hash": 0}


def _user(doc: Document) -> User:
    created = _aware(doc["created_at"]) or _now()
    return User(
        username=doc["_id"],
        role=Role(doc["role"]),
        created_at=created,
        # Users made before passwords had an age: their password dates from their creation.
        password_changed_at=_aware(doc.get("password_changed_at")) or created,
        disabled_at=_aware(doc.get("disabled_at")),
        token_version=int(doc.get("token_version") or 0),
    )


def validate_username(username: str) -> str:
    if not USERNAME_RE.match(username):
        raise InvalidQueryError(
            "username must be 1-64 characters: letters, digits, '_', '.', '@', '-'"
        )
    return username


def _first_token_version() -> int:
    # Milliseconds since the epoch: a user deleted and created again under the same name
    # starts above any version the old account's tokens carry, so they stay revoked.
    return time.time_ns() // 1_000_000


async def create_user(
    db: AsyncDatabase[Document],
    username: str,
    role: Role,
    password: str,
    *,
    min_password_length: int = DEFAULT_MIN_PASSWORD,
    executor: Executor | None = None,
) -> User:
    """A new user (409 when the name is taken; 400 when the policy refuses the password)."""
    validate_username(username)
    check_password(username, password, min_password_length)
    now = _now()
    doc = {
        "_id": username,
        "role": role.value,
        "password_hash": await hash_password(password, executor),
        "created_at": now,
        "password_changed_at": now,
        "token_version": _first_token_version(),
        "disabled_at": None,
    }
    try:
        await db[USERS].insert_one(doc)
    except DuplicateKeyError as exc:
        raise ConflictError(f"user {username!r} already exists") from exc
    return _user(doc)


async def authenticate_user(
    db: AsyncDatabase[Document],
    username: str,
    password: str,
    executor: Executor | None = None,
) -> User | None:
    """The user when the password matches and the account is enabled, else None (the same
    answer for an unknown user). Argon2 runs in `executor` (the default executor when None)."""
    doc = await db[USERS].find_one({"_id": username}) if USERNAME_RE.match(username) else None
    stored: str | None = doc.get("password_hash") if doc else None
    if not await verify_password(stored, password, executor) or doc is None or stored is None:
        return None
    if needs_rehash(stored):
        # Hash parameters were raised since this hash was made; upgrade it while we hold the
        # plaintext. Best effort: a database hiccup here must not fail a correct login.
        new_hash = await hash_password(password, executor)
        with contextlib.suppress(PyMongoError):
            await db[USERS].update_one({"_id": username}, {"$set": {"password_hash": new_hash}})
    user = _user(doc)
    return None if user.disabled else user


async def user_exists(db: AsyncDatabase[Document], username: str) -> bool:
    if not USERNAME_RE.match(username):
        return False
    return await db[USERS].find_one({"_id": username}, {"_id": 1}) is not None


async def get_user(db: AsyncDatabase[Document], username: str) -> User:
    doc = await db[USERS].find_one({"_id": username}, _NO_HASH)
    if doc is None:
        raise NotFoundError(f"user {username!r} not found")
    return _user(doc)


async def list_users(db: AsyncDatabase[Document]) -> list[User]:
    return [_user(d) async for d in db[USERS].find({}, _NO_HASH).sort("_id", 1)]


async def token_state(db: AsyncDatabase[Document], username: str) -> TokenState | None:
    """The user's token version and whether it is disabled; None when there is no such user."""
    doc = await db[USERS].find_one({"_id": username}, {"token_version": 1, "disabled_at": 1})
    if doc is None:
        return None
    return TokenState(
        version=int(doc.get("token_version") or 0), disabled=doc.get("disabled_at") is not None
    )


async def _update_user(
    db: AsyncDatabase[Document], username: str, update: Mapping[str, Any]
) -> User:
    # No projection: FerretDB v1 does not implement one in findAndModify. `_user` drops the
    # hash anyway.
    doc = await db[USERS].find_one_and_update(
        {"_id": username}, update, return_document=ReturnDocument.AFTER
    )
    if doc is None:
        raise NotFoundError(f"user {username!r} not found")
    return _user(doc)


async def revoke_tokens(db: AsyncDatabase[Document], username: str) -> User:
    """Make every token issued to the user so far invalid (services notice within
    `TOKEN_REVOCATION_CACHE_SECONDS`)."""
    return await _update_user(db, username, {"$inc": {"token_version": 1}})


async def change_password(
    db: AsyncDatabase[Document],
    username: str,
    new_password: str,
    *,
    min_password_length: int = DEFAULT_MIN_PASSWORD,
    executor: Executor | None = None,
) -> User:
    """Set a new password (policy checked), restart its age, and revoke the user's tokens."""
    check_password(username, new_password, min_password_length)
    await get_user(db, username)  # 404 before spending a hash on nobody
    new_hash = await hash_password(new_password, executor)
    return await _update_user(
        db,
        username,
        {
            "$set": {"password_hash": new_hash, "password_changed_at": _now()},
            "$inc": {"token_version": 1},
        },
    )


async def set_role(db: AsyncDatabase[Document], username: str, role: Role) -> User:
    """Change the user's role; a real change revokes the tokens that carry the old one."""
    user = await get_user(db, username)
    if user.role is role:
        return user
    return await _update_user(
        db, username, {"$set": {"role": role.value}, "$inc": {"token_version": 1}}
    )


async def set_disabled(db: AsyncDatabase[Document], username: str, disabled: bool) -> User:
    """Disable (no login; tokens revoked) or enable the account."""
    user = await get_user(db, username)
    if user.disabled == disabled:
        return user
    if disabled:
        update: dict[str, Any] = {"$set": {"disabled_at": _now()}, "$inc": {"token_version": 1}}
    else:
        update = {"$set": {"disabled_at": None}}
    return await _update_user(db, username, update)


async def delete_user(db: AsyncDatabase[Document], username: str) -> None:
    result = await db[USERS].delete_one({"_id": username})
    if result.deleted_count == 0:
        raise NotFoundError(f"user {username!r} not found")


# --- API keys ------------------------------------------------------------------------------


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_api_key(key: str) -> str | None:
    """The key id of a well-formed key, else None (no database lookup for garbage)."""
    match = _KEY_RE.match(key)
    return match.group(1) if match else None


def _new_secret(key_id: str) -> str:
    return f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def _api_key(doc: Document, last_used_at: datetime | None = None) -> ApiKey:
    return ApiKey(
        key_id=doc["_id"],
        name=doc["name"],
        role=Role(doc["role"]),
        created_at=_aware(doc["created_at"]) or _now(),
        revoked_at=_aware(doc.get("revoked_at")),
        expires_at=_aware(doc.get("expires_at")),
        last_used_at=last_used_at,
        rotated_at=_aware(doc.get("rotated_at")),
        previous_valid_until=_aware(doc.get("previous_valid_until")),
        key_hash=doc["key_hash"],
    )


async def create_api_key(
    db: AsyncDatabase[Document],
    name: str,
    role: Role,
    *,
    expires_in: timedelta | None = None,
) -> tuple[ApiKey, str]:
    """Store a new key; returns its record and the plaintext key, which is shown only once.
    With `expires_in`, the key is refused from then on."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidQueryError("key name must be 1-100 characters")
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_KEY_LIFETIME:
        raise InvalidQueryError(f"expires_in: more than 0 and at most {MAX_KEY_LIFETIME.days} days")
    key_id = secrets.token_hex(6)
    key = _new_secret(key_id)
    now = _now()
    doc: dict[str, Any] = {
        "_id": key_id,
        "name": name,
        "role": role.value,
        "key_hash": hash_api_key(key),
        "created_at": now,
        "revoked_at": None,
        "expires_at": now + expires_in if expires_in is not None else None,
    }
    await db[API_KEYS].insert_one(doc)
    return _api_key(doc), key


async def find_api_key(
    db: AsyncDatabase[Document], key: str, now: datetime | None = None
) -> VerifiedKey | None:
    """The key record matching `key` while it is valid, else None (unknown, wrong secret,
    revoked, expired, or a rotated-out secret past its grace period)."""
    key_id = parse_api_key(key)
    if key_id is None:
        return None
    doc = await db[API_KEYS].find_one({"_id": key_id})
    if doc is None:
        return None
    record = _api_key(doc)
    now = now or _now()
    if record.status(now) != "active":
        return None
    presented = hash_api_key(key)
    if hmac.compare_digest(record.key_hash, presented):
        verified = VerifiedKey(record, record.expires_at)
    else:
        previous = doc.get("previous_hash")
        grace_end = record.previous_valid_until
        if not isinstance(previous, str) or grace_end is None:
            return None
        if not hmac.compare_digest(previous, presented):
            return None
        ends = [t for t in (record.expires_at, grace_end) if t is not None]
        verified = VerifiedKey(record, min(ends))
    return verified if verified.valid_at(now) else None


async def get_api_key(db: AsyncDatabase[Document], key_id: str) -> ApiKey:
    doc = await db[API_KEYS].find_one({"_id": key_id}) if KEY_ID_RE.match(key_id) else None
    if doc is None:
        raise NotFoundError(f"API key {key_id!r} not found")
    use = await db[API_KEY_USES].find_one({"_id": key_id})
    return _api_key(doc, _aware(use.get("last_used_at")) if use else None)


async def list_api_keys(db: AsyncDatabase[Document]) -> list[ApiKey]:
    uses = {u["_id"]: _aware(u.get("last_used_at")) async for u in db[API_KEY_USES].find({})}
    return [
        _api_key(d, uses.get(d["_id"])) async for d in db[API_KEYS].find({}).sort("created_at", 1)
    ]


async def revoke_api_key(db: AsyncDatabase[Document], key_id: str) -> ApiKey:
    record = await get_api_key(db, key_id)
    if record.revoked_at is None:
        revoked_at = _now()
        await db[API_KEYS].update_one({"_id": key_id}, {"$set": {"revoked_at": revoked_at}})
        record = record.model_copy(update={"revoked_at": revoked_at})
    return record


async def delete_api_key(db: AsyncDatabase[Document], key_id: str) -> ApiKey:
    record = await get_api_key(db, key_id)
    await db[API_KEYS].delete_one({"_id": key_id})
    await db[API_KEY_USES].delete_one({"_id": key_id})
    return record


async def rotate_api_key(
    db: AsyncDatabase[Document], key_id: str, grace: timedelta
) -> tuple[ApiKey, str]:
    """A new secret for the same key (id, name, role, expiry); the previous secret keeps
    working for `grace` (0: not at all), then is refused. A secret replaced before that, by an
    earlier rotation, is refused at once. Returns the record and the new plaintext key."""
    if not timedelta(0) <= grace <= MAX_ROTATION_GRACE:
        raise InvalidQueryError(f"grace: 0 to {MAX_ROTATION_GRACE.days} days")
    record = await get_api_key(db, key_id)
    status = record.status()
    if status != "active":
        raise ConflictError(f"API key {key_id!r} is {status}; create a new key instead")
    key = _new_secret(key_id)
    now = _now()
    changes = {
        "key_hash": hash_api_key(key),
        "previous_hash": record.key_hash,
        "previous_valid_until": now + grace,
        "rotated_at": now,
    }
    # Conditional on the hash read above: of two concurrent rotations, one wins.
    result = await db[API_KEYS].update_one(
        {"_id": key_id, "key_hash": record.key_hash}, {"$set": changes}
    )
    if result.modified_count == 0:
        raise ConflictError(f"API key {key_id!r} was changed meanwhile; try again")
    updated = record.model_copy(
        update={
            "key_hash": changes["key_hash"],
            "previous_valid_until": now + grace,
            "rotated_at": now,
        }
    )
    return updated, key


async def record_key_use(db: AsyncDatabase[Document], uses: Mapping[str, datetime]) -> None:
    """Store when each key was last used (never moving a time backwards), in `api_key_uses`:
    never a write to the key's own document (see `API_KEY_USES`)."""
    for key_id, at in uses.items():
        await db[API_KEY_USES].update_one(
            {"_id": key_id}, {"$max": {"last_used_at": at}}, upsert=True
        )
