"""Application factory and lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from pymongo.errors import PyMongoError

from app.authn import Authenticator, LoginGuard
from app.conditional import ConditionalGetMiddleware
from app.conditional_memo import ConditionalMemo
from app.cors import install_cors
from app.db import make_client
from app.detail_early import EarlyDetailMiddleware
from app.docs_ui import install_docs
from app.errors import add_problem_schema, install_handlers
from app.head_requests import HeadAsGetMiddleware
from app.heap import freeze_late_arrivals, freeze_startup_heap
from app.limits import RequestRateLimiter, install_limits
from app.ml import tree_kernel
from app.ml.registry import ModelRegistry
from app.observability import install_observability, metrics_router
from app.predict_early import EarlyPredictMiddleware
from app.routers import (
    accounts,
    analytics,
    audit,
    auth,
    dashboards,
    health,
    model_registry,
    monitoring,
    movies,
    predict,
    reports,
    ui,
)
from app.security import Role, protected
from app.services import audit as audit_log
from app.services.analytics.engine import AnalyticsEngine
from app.services.analytics.persist import SnapshotStore
from app.services.health import database_check
from app.services.mlflow_sync import ChampionSync
from app.services.monitoring import DriftWatch
from app.services.movies_rewrite import prepare_database
from app.services.prediction_log import PredictionLogWriter
from app.services.reports import EdaReports
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
    # Built with the app: the anonymous-rate middleware holds it before any lifespan runs.
    limiter = RequestRateLimiter(settings.rate_limit_per_minute)
    conditional = ConditionalMemo()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = make_client(settings)
        db = client[settings.mongodb_db]
        try:
            await db.command("ping")
            await prepare_database(db)
        except PyMongoError as exc:
            # Start anyway: /ready reports 503 and requests recover when the database returns.
            log.warning("database not reachable at startup: %s", exc.__class__.__name__)
        if settings.jwt_secret_is_ephemeral:
            log.warning(
                "JWT_SECRET is not set: tokens and movie cursors are signed with a random key "
                "made for this process; they will not survive a restart nor work across "
                "workers or replicas. "
                "Set JWT_SECRET to a random value of at least 32 characters."
            )
        # Analytics: the first snapshot builds in the background (from the persisted one when
        # it can be trusted); requests wait only for it.
        store_dir = settings.snapshot_store_dir
        engine = AnalyticsEngine(
            db,
            settings.snapshot_check_seconds,
            store=SnapshotStore(store_dir, settings.mongodb_db) if store_dir else None,
            persist_seconds=settings.snapshot_persist_seconds,
        )
        engine.start()
        # Models: load the version the database names (else ACTIVE), then follow the
        # database's choice; /ready names any model that cannot serve.
        registry = ModelRegistry(
            settings.artifacts_dir,
            db=db,
            check_seconds=settings.model_check_seconds,
            cache_dir=settings.local_db_dir / "model-cache",
        )
        await registry.load_all()
        registry.start_following()
        if settings.compiled_tree_walk:
            # Built in a thread of its own; the numpy walk answers until it is ready. What
            # it loads is frozen like the rest of startup (app.heap).
            tree_kernel.start(
                settings.local_db_dir / "kernel-cache",
                then=lambda: freeze_late_arrivals("the compiled tree walk"),
            )
        # The prediction log: written in batches by a task of its own, never on the way of
        # a prediction; flushed on shutdown.
        prediction_log = PredictionLogWriter(
            db,
            sample=settings.prediction_log_sample,
            capacity=settings.prediction_log_buffer,
            retention_days=settings.prediction_log_days,
        )
        await prediction_log.start()
        drift = DriftWatch(db, registry, settings)
        drift.start()
        if settings.gc_freeze:
            # After the imports and models, before serving: full collector passes then skip
            # them, so they no longer stall every request in flight (app.heap).
            freeze_startup_heap()
        login_guard = LoginGuard(settings)
        authenticator = Authenticator(settings, db)
        app.state.app_state = AppState(
            settings=settings,
            client=client,
            db=db,
            limiter=limiter,
            authenticator=authenticator,
            login_guard=login_guard,
            analytics=engine,
            registry=registry,
            prediction_log=prediction_log,
            drift=drift,
            champion=ChampionSync(settings),
            readiness_checks={
                "database": partial(database_check, db),
                "analytics": engine.readiness,
                "models": registry.readiness,
            },
            conditional=conditional,
            reports=EdaReports(db, engine),
        )
        try:
            yield
        finally:
            await app.state.app_state.reports.close()
            await drift.close()
            await registry.close()
            await prediction_log.close()
            await engine.close()
            login_guard.close()
            # Queued key uses and audit entries are written before the client closes.
            await authenticator.close()
            await audit_log.close(db)
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
    # Starlette runs the middleware added last first: observability wraps the limits, so
    # 413/429/503 answers get a request id, a log line and a metric like any other. CORS sits
    # in between: preflights are answered before any limit, and 429s carry CORS headers.
    # Innermost: conditional GETs that hit are answered before routing (app.conditional), and
    # so are predictions (app.predict_early) and film details (app.detail_early).
    app.add_middleware(EarlyPredictMiddleware)
    app.add_middleware(EarlyDetailMiddleware)
    app.add_middleware(ConditionalGetMiddleware, memo=conditional)
    # HEAD goes down as GET from here (app.head_requests), through the early answers too.
    app.add_middleware(HeadAsGetMiddleware)
    install_limits(app, settings, limiter)
    install_cors(app, settings)
    install_observability(app, settings.log_level)
    # Public: /health, /ready, /metrics, /docs, /redoc, /openapi.json, POST /v1/auth/token.
    app.include_router(health.router)
    app.include_router(metrics_router)
    app.include_router(auth.router)
    # Every other router is included with `**protected(role)` (app.security): the role check
    # and the documented 401/403/429 apply to all of its routes.
    app.include_router(analytics.router, **protected(Role.viewer))
    app.include_router(movies.router, **protected(Role.viewer))
    app.include_router(predict.router, **protected(Role.predictor))
    app.include_router(model_registry.router, **protected(Role.viewer))
    app.include_router(model_registry.admin_router, **protected(Role.admin))
    app.include_router(monitoring.router, **protected(Role.viewer))
    app.include_router(monitoring.outcomes_router, **protected(Role.predictor))
    app.include_router(dashboards.router, **protected(Role.viewer))
    app.include_router(reports.router, **protected(Role.viewer))
    app.include_router(reports.models_router, **protected(Role.viewer))
    app.include_router(accounts.users_router, **protected(Role.admin))
    app.include_router(accounts.keys_router, **protected(Role.admin))
    app.include_router(audit.router, **protected(Role.admin))
    app.include_router(ui.router)  # public HTML; its data comes from the API above
    return app
