"""The analytics readiness check: ready once a first snapshot exists."""

from __future__ import annotations

from app.services.analytics.engine import ENGINE_KEY, AnalyticsEngine
from app.services.health import EXTRA_CHECKS
from app.state import AppState


async def analytics_check(state: AppState) -> str:
    engine = state.extras.get(ENGINE_KEY)
    if not isinstance(engine, AnalyticsEngine):
        return "not ready: analytics engine not started"
    return await engine.readiness()


EXTRA_CHECKS["analytics"] = analytics_check
