"""Schemas of the admin API (`/v1/users`, `/v1/keys`, `/v1/audit`).

No response here carries a password, a password hash or a key hash; an API key's secret
appears exactly once, in the answer that created or rotated it (`KeyCreated.key`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.credentials import (
    DURATION_PATTERN,
    MAX_PASSWORD,
    USERNAME_RE,
    ApiKey,
    KeyStatus,
    Role,
    User,
)

USERNAME_PATTERN = USERNAME_RE.pattern
PASSWORD_FIELD = Field(
    min_length=1,
    max_length=MAX_PASSWORD,
    description="At least PASSWORD_MIN_LENGTH (12) characters, not the username, not one of "
    "the most common passwords",
)


class UserInfo(BaseModel):
    username: str
    role: Role
    created_at: datetime
    password_changed_at: datetime
    password_expires_at: datetime | None = Field(
        description="When a login starts to be good only for changing the password "
        "(PASSWORD_MAX_AGE_DAYS after the last change); null when passwords never expire"
    )
    disabled: bool
    disabled_at: datetime | None

    @classmethod
    def of(cls, user: User, max_age_days: int) -> UserInfo:
        expires = (
            user.password_changed_at + timedelta(days=max_age_days) if max_age_days > 0 else None
        )
        return cls(
            username=user.username,
            role=user.role,
            created_at=user.created_at,
            password_changed_at=user.password_changed_at,
            password_expires_at=expires,
            disabled=user.disabled,
            disabled_at=user.disabled_at,
        )


class UserList(BaseModel):
    items: list[UserInfo]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(
        pattern=USERNAME_PATTERN,
        description="1-64 characters: letters, digits, `_ . @ -` (not first)",
        examples=["alice"],
    )
    role: Role = Role.viewer
    password: str = PASSWORD_FIELD


class UserChange(BaseModel):
    """What to change; absent fields stay as they are. A real change of role, and disabling,
    revoke the user's tokens. Admins cannot demote or disable themselves (409)."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Field(
        default=None, description="true: no login, tokens revoked; false: enabled again"
    )


class PasswordSet(BaseModel):
    """An administrator sets a user's password (a reset); the user's tokens are revoked."""

    model_config = ConfigDict(extra="forbid")

    password: str = PASSWORD_FIELD


class KeyInfo(BaseModel):
    key_id: str = Field(description="Public id of the key (also inside the key itself)")
    name: str
    role: Role
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(
        description="Last accepted use, to the minute: written at most once a minute per key"
    )
    revoked_at: datetime | None
    rotated_at: datetime | None
    previous_valid_until: datetime | None = Field(
        description="After a rotation: the old secret is accepted until then"
    )

    @classmethod
    def of(cls, record: ApiKey) -> KeyInfo:
        return cls(
            key_id=record.key_id,
            name=record.name,
            role=record.role,
            status=record.status(),
            created_at=record.created_at,
            expires_at=record.expires_at,
            last_used_at=record.last_used_at,
            revoked_at=record.revoked_at,
            rotated_at=record.rotated_at,
            previous_valid_until=record.previous_valid_until,
        )


class KeyList(BaseModel):
    items: list[KeyInfo]


class KeyCreated(KeyInfo):
    key: str = Field(
        description="The API key (send as `X-API-Key`). Shown this once: only its hash is kept"
    )


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="Who or what the key is for")
    role: Role = Role.viewer
    expires_in: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="Lifetime: days, hours or minutes (`90d`, `24h`, `30m`), at most 3650 "
        "days; null: never expires",
        examples=["90d"],
    )


class KeyRotation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace: str = Field(
        default="24h",
        pattern=DURATION_PATTERN,
        description="How long the old secret keeps working (`0m`: not at all), at most 30 days",
    )


class AuditEntry(BaseModel):
    id: str
    at: datetime
    action: str = Field(examples=["auth.login"])
    actor: str = Field(description="`user:NAME`, `key:ID`, `admin-key` or `cli:OS-USER`")
    outcome: Literal["success", "failure"]
    target: str | None = Field(description="What it was done to: a username, key id, model")
    source_ip: str | None = Field(description="Client address, or `cli`")
    request_id: str | None = None
    details: dict[str, Any]

    @classmethod
    def of(cls, doc: dict[str, Any]) -> AuditEntry:
        return cls(
            id=doc["_id"],
            at=doc["at"],
            action=doc["action"],
            actor=doc["actor"],
            outcome=doc["outcome"],
            target=doc.get("target"),
            source_ip=doc.get("source_ip"),
            request_id=doc.get("request_id"),
            details=doc.get("details") or {},
        )


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page")
