"""`GET /v1/models/{name}/monitoring`: drift per feature and live accuracy over time for people,
one server-rendered page (no script, no external resource; bars are inline SVG)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import HTMLResponse
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.ml.live_metrics import HEADLINE
from app.ml.registry import ModelRegistry
from app.services.monitoring import (
    DriftWatch,
    advice,
    model_drift,
    model_performance,
    test_metrics,
)
from app.services.reports.eda import CONTENT_POLICY
from app.services.ui_assets import templates
from app.settings import Settings

PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-cache",
}
# Figures shown per slice (version, month), in this order, when the model has them.
SHOWN: dict[str, tuple[str, ...]] = {
    "revenue": ("rmsle", "interval_coverage", "median_ae_usd"),
    "hit": ("roc_auc", "precision", "recall", "accuracy"),
    "engagement": (
        "vote_count_rmsle",
        "vote_count_interval_coverage",
        "vote_average_rmse",
        "vote_average_interval_coverage",
    ),
}


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


async def render_page(
    db: AsyncDatabase[Document],
    registry: ModelRegistry,
    watch: DriftWatch,
    settings: Settings,
    name: str,
) -> HTMLResponse:
    report = await model_drift(db, registry, watch, settings, name, None, None)
    live = await model_performance(db, settings, name, None, None)
    test = await asyncio.to_thread(test_metrics, settings.artifacts_dir, name, report.version)
    headline, higher_is_better = HEADLINE[name]
    worst_psi = max((f.psi or 0.0 for f in report.features), default=0.0)
    html = (
        templates()
        .get_template("monitoring.html")
        .render(
            name=name,
            drift=report,
            live=live,
            test=test or {},
            shown=SHOWN[name],
            headline=headline,
            higher_is_better=higher_is_better,
            reasons=advice(report, live, test, settings),
            scale=max(worst_psi, settings.drift_psi_drift * 1.2),
            psi_warn=settings.drift_psi_warn,
            psi_drift=settings.drift_psi_drift,
            figure=_figure,
            now=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )
    return HTMLResponse(html, headers=PAGE_HEADERS)
