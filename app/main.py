"""Application factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pymongo.errors import PyMongoError

from app.db import make_client
from app.docs_ui import install_docs
from app.errors import add_problem_schema, install_handlers
from app.limits import install_limits
from app.observability import install_observability, metrics_router
from app.routers import auth, health
from app.security import Role, install_security, protected
from app.services.movies_store import prepare_database
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
            await prepare_database(db)
        except PyMongoError as exc:
            # Start anyway: /ready reports 503 and requests recover when the database returns.
            log.warning("database not reachable at startup: %s", exc.__class__.__name__)
        app.state.app_state = state
        # --- feature startup (analytics snapshot, model registry, ...) ---
        # Analytics: the first snapshot builds in the background; requests wait only for it.
        from app.services.analytics import ENGINE_KEY, AnalyticsEngine
        from app.services.analytics import readiness as _analytics_readiness  # noqa: F401

        analytics_engine = AnalyticsEngine(db, settings.snapshot_check_seconds)
        analytics_engine.start()
        state.extras[ENGINE_KEY] = analytics_engine
        # Models: load the active version of each; /ready names any that cannot serve.
        from app.ml.registry import startup as start_model_registry

        await start_model_registry(state)
        # --- end feature startup ---
        try:
            yield
        finally:
            # --- feature shutdown ---
            await analytics_engine.close()
            # --- end feature shutdown ---
            await client.close()

    app = FastAPI(
        title="TMDB Analytics Service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_parameters={"persistAuthorization": True},
    )
    install_docs(app)  # self-hosted Swagger UI and ReDoc: no CDN
    install_handlers(app)
    add_problem_schema(app)
    # --- middleware (security issue: request ids, logging, metrics, limits) ---
    # Starlette runs the middleware added last first: observability wraps the limits, so
    # 413/429/503 answers get a request id, a log line and a metric like any other.
    install_limits(app, settings)
    install_observability(app, settings.log_level)
    install_security(app, settings)
    # --- end middleware ---
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(auth.router)
    # --- feature routers ---
    # Every feature router is included with `**protected(role)` (app.security): the role check
    # and the documented 401/403/429 apply to all of its routes. Public: /health, /ready,
    # /metrics, /docs, /openapi.json, POST /v1/auth/token. For example:
    #   app.include_router(movies.router, **protected(Role.viewer))
    #   app.include_router(analytics.router, **protected(Role.viewer))
    #   app.include_router(predict.router, **protected(Role.predictor))
    #   app.include_router(models.router, **protected(Role.viewer))
    #   app.include_router(models.admin_router, **protected(Role.admin))
    from app.routers import analytics as analytics_routes
    from app.routers import movies as movie_routes

    app.include_router(analytics_routes.router, **protected(Role.viewer))
    app.include_router(movie_routes.router, **protected(Role.viewer))
    from app.routers import models as model_routes
    from app.routers import predict as predict_routes

    app.include_router(predict_routes.router, **protected(Role.predictor))
    app.include_router(model_routes.router, **protected(Role.viewer))
    app.include_router(model_routes.admin_router, **protected(Role.admin))
    from app.routers import dashboards as dashboard_routes
    from app.routers import ui as ui_routes

    app.include_router(dashboard_routes.router, **protected(Role.viewer))
    app.include_router(ui_routes.router)  # public HTML; its data comes from the API above
    # --- end feature routers ---
    return app
