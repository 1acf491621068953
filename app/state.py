"""What the lifespan owns and hands to requests: one typed object, built once per process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.authn import Authenticator, LoginGuard
from app.conditional_memo import ConditionalMemo
from app.db import Document
from app.limits import RequestRateLimiter
from app.ml.registry import ModelRegistry
from app.services.analytics.engine import AnalyticsEngine
from app.services.health import ReadinessCheck
from app.services.reports import EdaReports
from app.settings import Settings


@dataclass
class AppState:
    settings: Settings
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    # Shared with the anonymous-rate middleware, which is built before the lifespan runs.
    limiter: RequestRateLimiter
    authenticator: Authenticator
    login_guard: LoginGuard
    analytics: AnalyticsEngine
    registry: ModelRegistry
    # What `/ready` checks, by name, in order.
    readiness_checks: Mapping[str, ReadinessCheck]
    # Answers from the snapshot by query, for 304s before routing (shared with the
    # middleware, which is built before the lifespan runs).
    conditional: ConditionalMemo
    # The data exploration report, one per data version (GET /v1/reports/eda).
    reports: EdaReports
