"""Readiness: each dependency the service needs answers one check. Which checks run is listed
where the app is built (`app.main`), not registered by importing a module."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document

# A check answers "ok" or "<status>: <detail>", e.g. "unavailable: ServerSelectionTimeoutError".
ReadinessCheck = Callable[[], Awaitable[str]]
PUBLIC_STATUSES = frozenset({"ok", "unavailable", "not ready"})


async def database_check(db: AsyncDatabase[Document]) -> str:
    try:
        await asyncio.wait_for(db.command("ping"), timeout=3)
    except (PyMongoError, TimeoutError) as exc:
        return f"unavailable: {exc.__class__.__name__}"
    return "ok"


async def readiness(checks: Mapping[str, ReadinessCheck]) -> dict[str, str]:
    return {name: await check() for name, check in checks.items()}


def public_check(answer: str) -> str:
    """A check's status without its detail, for anonymous callers: details name exception
    classes and file paths (artifact directories), which are for operators only."""
    status = answer.split(":", 1)[0].strip()
    return status if status in PUBLIC_STATUSES else "not ready"
