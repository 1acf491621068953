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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import re
import secrets
from concurrent.futures import Executor
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import BaseModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from app.db import Document
from app.errors import ConflictError, InvalidQueryError, NotFoundError

USERS = "users"
API_KEYS = "api_keys"
API_KEY_PREFIX = "tak"
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEY_RE = re.compile(rf"^{API_KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024

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


class ApiKey(BaseModel):
    key_id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None
    key_hash: str

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


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


def _user(doc: Document) -> User:
    return User(username=doc["_id"], role=Role(doc["role"]), created_at=doc["created_at"])


def validate_username(username: str) -> str:
    if not USERNAME_RE.match(username):
        raise InvalidQueryError(
            "username must be 1-64 characters: letters, digits, '_', '.', '@', '-'"
        )
    return username


async def create_user(
    db: AsyncDatabase[Document], username: str, role: Role, password: str
) -> User:
    validate_username(username)
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidQueryError(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters long")
    doc = {
        "_id": username,
        "role": role.value,
        "password_hash": await hash_password(password),
        "created_at": datetime.now(UTC),
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
    """The user when the password matches, else None (same answer for an unknown user).
    Argon2 runs in `executor` (the default executor when None)."""
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
    return _user(doc)


async def list_users(db: AsyncDatabase[Document]) -> list[User]:
    return [_user(d) async for d in db[USERS].find({}, {"password_hash": 0}).sort("_id", 1)]


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


def _api_key(doc: Document) -> ApiKey:
    return ApiKey(
        key_id=doc["_id"],
        name=doc["name"],
        role=Role(doc["role"]),
        created_at=doc["created_at"],
        revoked_at=doc.get("revoked_at"),
        key_hash=doc["key_hash"],
    )


async def create_api_key(db: AsyncDatabase[Document], name: str, role: Role) -> tuple[ApiKey, str]:
    """Store a new key; returns its record and the plaintext key, which is shown only once."""
    name = name.strip()
    if not 1 <= len(name) <= 100:
        raise InvalidQueryError("key name must be 1-100 characters")
    key_id = secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    doc: dict[str, Any] = {
        "_id": key_id,
        "name": name,
        "role": role.value,
        "key_hash": hash_api_key(key),
        "created_at": datetime.now(UTC),
        "revoked_at": None,
    }
    await db[API_KEYS].insert_one(doc)
    return _api_key(doc), key


async def find_api_key(db: AsyncDatabase[Document], key: str) -> ApiKey | None:
    """The active key record matching `key`, else None (unknown, revoked or wrong secret)."""
    key_id = parse_api_key(key)
    if key_id is None:
        return None
    doc = await db[API_KEYS].find_one({"_id": key_id})
    if doc is None:
        return None
    record = _api_key(doc)
    if record.revoked or not hmac.compare_digest(record.key_hash, hash_api_key(key)):
        return None
    return record


async def list_api_keys(db: AsyncDatabase[Document]) -> list[ApiKey]:
    return [_api_key(d) async for d in db[API_KEYS].find({}).sort("created_at", 1)]


async def revoke_api_key(db: AsyncDatabase[Document], key_id: str) -> ApiKey:
    doc = await db[API_KEYS].find_one({"_id": key_id})
    if doc is None:
        raise NotFoundError(f"API key {key_id!r} not found")
    if doc.get("revoked_at") is None:
        doc["revoked_at"] = datetime.now(UTC)
        await db[API_KEYS].update_one({"_id": key_id}, {"$set": {"revoked_at": doc["revoked_at"]}})
    return _api_key(doc)
