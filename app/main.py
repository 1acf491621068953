"""Application factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pymongo.errors import PyMongoError

from app.db import ensure_indexes, make_client
from app.errors import add_problem_schema, install_handlers
from app.routers import health
from app.settings import Settings, get_settings
from app.state import AppState

log = logging.getLogger("app")

DESCRIPTION = """
Movie analytics and predictions over The Movie Database (TMDB) catalogue.

* **Analytics**: genre economics, trends, seasonality, top lists, distributions, correlations.
* **Movies**: filterable, paginated search.
* **Predictions**: worldwide revenue with an interval and the chance of a hit, explained.

Errors are RFC 9457 `application/problem+json`.

This product uses the TMDB API but is not endorsed or certified by TMDB.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client(settings)
        db = client[settings.mongodb_db]
        state = AppState(settings=settings, client=client, db=db)
        try:
            await db.command("ping")
            await ensure_indexes(db)
        except PyMongoError as exc:
            # Start anyway: /ready reports 503 and requests recover when the database returns.
            log.warning("database not reachable at startup: %s", exc.__class__.__name__)
        app.state.app_state = state
        # --- feature startup (analytics snapshot, model registry, ...) ---
        # --- end feature startup ---
        try:
            yield
        finally:
            # --- feature shutdown ---
            # --- end feature shutdown ---
            await client.close()

    app = FastAPI(
        title="TMDB Analytics Service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_handlers(app)
    add_problem_schema(app)
    # --- middleware (security issue: request ids, logging, metrics, limits) ---
    # --- end middleware ---
    app.include_router(health.router)
    # --- feature routers ---
    # --- end feature routers ---
    return app
