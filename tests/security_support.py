"""Helpers shared by the security tests: settings with known secrets, an in-process client
with the lifespan run, and tiny probe routers guarded exactly like the feature routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel
from pymongo import AsyncMongoClient

from app.authn import issue_token
from app.db import Document
from app.main import create_app
from app.security import Role, protected
from app.services import credentials
from app.settings import Settings
from tests.support import STARTUP_TIMEOUT_SECONDS, in_process

ADMIN_KEY = "test-admin-key-0123456789abcdef0123456789"
JWT_SECRET = "test-jwt-secret-0123456789abcdef0123456789"
PROBE_PREFIX = "/v1/_probe"
USER_PASSWORD = "correct horse battery staple"


def security_settings(settings: Settings, **overrides: object) -> Settings:
    """The conftest settings plus known secrets; API keys are looked up on every request so a
    revocation is visible at once."""
    update: dict[str, object] = {
        "jwt_secret": JWT_SECRET,
        "admin_api_key": ADMIN_KEY,
        "api_key_cache_seconds": 0.0,
        **overrides,
    }
    return settings.model_copy(update=update)


class ProbeAnswer(BaseModel):
    role: str


def probe_router(role: Role) -> APIRouter:
    router = APIRouter()

    @router.get(f"{PROBE_PREFIX}/{role.value}", response_model=ProbeAnswer)
    async def probe() -> ProbeAnswer:
        """Answers only when the include-time role check lets the caller through."""
        return ProbeAnswer(role=role.value)

    return router


def make_app(settings: Settings, *, probes: bool = True) -> FastAPI:
    """The real app, plus one probe route per role included the way `app.main` includes the
    feature routers (`**protected(role)`)."""
    app = create_app(settings)
    if probes:
        for role in Role:
            app.include_router(probe_router(role), **protected(role))
    return app


# The security tests call the app as `http://testserver`, as the suite always has.
serve = in_process


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[FastAPI]:
    """The app with its lifespan run, for clients made with `client_at`."""
    async with LifespanManager(
        app, startup_timeout=STARTUP_TIMEOUT_SECONDS, shutdown_timeout=STARTUP_TIMEOUT_SECONDS
    ) as manager:
        yield manager.app  # type: ignore[misc]


def client_at(app: FastAPI, host: str) -> httpx.AsyncClient:
    """An in-process client whose requests come from address `host`."""
    transport = httpx.ASGITransport(app=app, client=(host, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


async def user_token(settings: Settings, username: str, role: Role) -> str:
    """A token of a user made for it in `settings`' database: tokens are checked against their
    user's token version, so a token naming nobody is refused."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri)
    try:
        user = await credentials.create_user(
            client[settings.mongodb_db], username, role, USER_PASSWORD
        )
    finally:
        await client.close()
    return issue_token(settings, username, role, version=user.token_version)[0]
