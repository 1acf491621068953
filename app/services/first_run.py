"""A first run a person can use: in development, a local admin account (and API key) made when
the database holds no admin, so that `/ui` and Swagger's Authorize work at once. Never in
production or test."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.services import credentials
from app.services.credentials import Role
from app.settings import Settings

ADMIN_NAME = "admin"
CREDENTIALS_FILE = "first-run-admin.txt"


@dataclass(frozen=True)
class FirstRunAdmin:
    username: str
    password: str
    api_key: str
    saved_to: Path


async def ensure_local_admin(
    db: AsyncDatabase[Document], settings: Settings
) -> FirstRunAdmin | None:
    """Create `admin` with a random password and an admin API key when the environment is
    development and no admin account exists; None otherwise (nothing is ever replaced)."""
    if settings.app_env != "development":
        return None
    if any(user.role is Role.admin for user in await credentials.list_users(db)):
        return None
    password = secrets.token_urlsafe(18)
    await credentials.create_user(db, ADMIN_NAME, Role.admin, password)
    _, api_key = await credentials.create_api_key(db, "first-run admin", Role.admin)
    # Also on disk (owner-only) so that a closed terminal does not lock the user out.
    path = settings.local_db_dir / CREDENTIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(
        f"username: {ADMIN_NAME}\npassword: {password}\napi key:  {api_key}\n", encoding="utf-8"
    )
    return FirstRunAdmin(ADMIN_NAME, password, api_key, path)
