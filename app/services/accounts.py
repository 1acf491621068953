"""Account administration as the CLI and the admin API do it: each change of a user or an API
key through `credentials` (the owner of `users` and `api_keys`), with its audit entry, whether
it succeeds or is refused. Both front ends call these, so they behave and audit alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from concurrent.futures import Executor
from datetime import timedelta
from typing import Any, TypeVar

from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.errors import ConflictError, DomainError
from app.services import credentials
from app.services.audit import Origin, record_as
from app.services.credentials import ApiKey, Role, User
from app.services.password_policy import WeakPasswordError

T = TypeVar("T")


class WrongPasswordError(DomainError):
    status = 400
    title = "Wrong password"


async def _audited(
    db: AsyncDatabase[Document],
    origin: Origin,
    action: str,
    target: str,
    operation: Awaitable[T],
    details: Mapping[str, Any] | None = None,
) -> T:
    """Run `operation`; audit it as a success, or as a failure with the reason it was refused
    (a domain error's message: never a secret)."""
    try:
        result = await operation
    except DomainError as exc:
        record_as(
            db,
            origin,
            action,
            outcome="failure",
            target=target,
            details={**(details or {}), "reason": exc.detail},
        )
        raise
    record_as(db, origin, action, target=target, details=details)
    return result


def _self(origin: Origin, username: str) -> bool:
    return origin.username is not None and origin.username == username


# --- users ---------------------------------------------------------------------------------


async def create_user(
    db: AsyncDatabase[Document],
    origin: Origin,
    username: str,
    role: Role,
    password: str,
    *,
    min_password_length: int,
    executor: Executor | None = None,
) -> User:
    return await _audited(
        db,
        origin,
        "user.create",
        username,
        credentials.create_user(
            db,
            username,
            role,
            password,
            min_password_length=min_password_length,
            executor=executor,
        ),
        {"role": role.value},
    )


async def update_user(
    db: AsyncDatabase[Document],
    origin: Origin,
    username: str,
    *,
    role: Role | None = None,
    disabled: bool | None = None,
) -> User:
    """Change the role and/or enable or disable the account (a real change of role, and
    disabling, revoke the user's tokens). Admins may not demote or disable themselves."""
    changes: dict[str, Any] = {}
    if role is not None:
        changes["role"] = role.value
    if disabled is not None:
        changes["disabled"] = disabled

    async def apply() -> User:
        user = await credentials.get_user(db, username)
        demoted = role is not None and not role.includes(user.role)
        if _self(origin, username) and (demoted or disabled):
            raise ConflictError("you cannot demote or disable your own account")
        if role is not None:
            user = await credentials.set_role(db, username, role)
        if disabled is not None:
            user = await credentials.set_disabled(db, username, disabled)
        return user

    return await _audited(db, origin, "user.update", username, apply(), changes)


async def delete_user(db: AsyncDatabase[Document], origin: Origin, username: str) -> None:
    async def apply() -> None:
        if _self(origin, username):
            raise ConflictError("you cannot delete your own account")
        await credentials.delete_user(db, username)

    await _audited(db, origin, "user.delete", username, apply())


async def revoke_tokens(db: AsyncDatabase[Document], origin: Origin, username: str) -> User:
    return await _audited(
        db, origin, "user.revoke_tokens", username, credentials.revoke_tokens(db, username)
    )


async def set_password(
    db: AsyncDatabase[Document],
    origin: Origin,
    username: str,
    new_password: str,
    *,
    min_password_length: int,
    executor: Executor | None = None,
) -> User:
    """An administrator sets a user's password (`users set-password`, `POST
    /v1/users/{name}/password`); the user's tokens die. The new password starts its age now:
    an administrator who wants the user to choose their own sets a temporary one and tells
    them to change it (see the README)."""
    return await _audited(
        db,
        origin,
        "user.password_set",
        username,
        credentials.change_password(
            db,
            username,
            new_password,
            min_password_length=min_password_length,
            executor=executor,
        ),
    )


async def change_own_password(
    db: AsyncDatabase[Document],
    origin: Origin,
    username: str,
    current_password: str,
    new_password: str,
    *,
    min_password_length: int,
    executor: Executor | None = None,
) -> User:
    """A user changes their own password, proving the current one: `WrongPasswordError` when
    it is wrong (audited; the caller counts it as a failed login), `WeakPasswordError` when the
    policy refuses the new one. Every token issued before dies."""

    async def change() -> User:
        if await credentials.authenticate_user(db, username, current_password, executor) is None:
            raise WrongPasswordError("the current password is wrong")
        if new_password == current_password:
            raise WeakPasswordError("the new password must differ from the current one")
        return await credentials.change_password(
            db,
            username,
            new_password,
            min_password_length=min_password_length,
            executor=executor,
        )

    return await _audited(db, origin, "auth.password_change", username, change())


# --- API keys ------------------------------------------------------------------------------


def _key_details(record: ApiKey) -> dict[str, Any]:
    return {
        "name": record.name,
        "role": record.role.value,
        "expires_at": record.expires_at.isoformat() if record.expires_at else None,
    }


async def create_key(
    db: AsyncDatabase[Document],
    origin: Origin,
    name: str,
    role: Role,
    *,
    expires_in: timedelta | None = None,
) -> tuple[ApiKey, str]:
    try:
        record, key = await credentials.create_api_key(db, name, role, expires_in=expires_in)
    except DomainError as exc:
        record_as(db, origin, "key.create", outcome="failure", details={"reason": exc.detail})
        raise
    record_as(db, origin, "key.create", target=record.key_id, details=_key_details(record))
    return record, key


async def revoke_key(db: AsyncDatabase[Document], origin: Origin, key_id: str) -> ApiKey:
    return await _audited(db, origin, "key.revoke", key_id, credentials.revoke_api_key(db, key_id))


async def delete_key(db: AsyncDatabase[Document], origin: Origin, key_id: str) -> ApiKey:
    return await _audited(db, origin, "key.delete", key_id, credentials.delete_api_key(db, key_id))


async def rotate_key(
    db: AsyncDatabase[Document], origin: Origin, key_id: str, grace: timedelta
) -> tuple[ApiKey, str]:
    return await _audited(
        db,
        origin,
        "key.rotate",
        key_id,
        credentials.rotate_api_key(db, key_id, grace),
        {"grace_seconds": int(grace.total_seconds())},
    )
