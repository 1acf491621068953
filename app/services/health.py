"""Readiness checks for every dependency the service needs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pymongo.errors import PyMongoError

from app.state import AppState

# A check answers "ok" or "<status>: <detail>", e.g. "unavailable: ServerSelectionTimeoutError".
ReadinessCheck = Callable[[AppState], Awaitable[str]]
PUBLIC_STATUSES = frozenset({"ok", "unavailable", "not ready"})
# Feature modules register extra checks (e.g. "models") here at import time.
EXTRA_CHECKS: dict[str, ReadinessCheck] = {}


async def database_check(state: AppState) -> str:
    try:
        await asyncio.wait_for(state.db.command("ping"), timeout=3)
    except (PyMongoError, TimeoutError) as exc:
        return f"unavailable: {exc.__class__.__name__}"
    return "ok"


async def readiness(state: AppState) -> dict[str, str]:
    checks = {"database": await database_check(state)}
    for name, check in EXTRA_CHECKS.items():
        checks[name] = await check(state)
    return checks


def public_check(answer: str) -> str:
    """A check's status without its detail, for anonymous callers: details name exception
    classes and file paths (artifact directories), which are for operators only."""
    status = answer.split(":", 1)[0].strip()
    return status if status in PUBLIC_STATUSES else "not ready"
