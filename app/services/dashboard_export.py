"""A dashboard as one self-contained HTML file: plotly.js, the chart code of the page and the
data of every widget inside, so that it opens offline and shows the same charts and numbers.

The data is fetched by the caller (`fetch`: the router asks each widget's own endpoint
in-process, with the user's credential), so this module only assembles. Scripts are inlined
and allowed by their SHA-256 in a content policy inside the file: opened from disk, the page
can run nothing else and reach no network.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from app.models.dashboards import Dashboard, Widget
from app.services.ui_assets import assets, templates
from app.services.widget_catalog import WidgetCatalog

Fetch = Callable[[Widget, list[tuple[str, str]]], Awaitable[tuple[int, Any]]]


@cache
def _script_hash(source: str) -> str:
    """The CSP source allowing one inlined asset (computed once: plotly.js is 4.8 MB)."""
    digest = hashlib.sha256(_inline(source).encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def _json_for_html(value: Any) -> str:
    """JSON that cannot end its `<script type="application/json">` element early."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _inline(source: str) -> str:
    text = assets()[source].text
    if "</script" in text.lower():  # would end the inline element; never expected
        raise ValueError(f"{source} cannot be inlined")
    return text


async def render(dashboard: Dashboard, catalog: WidgetCatalog, fetch: Fetch) -> str:
    async def one(widget: Widget) -> dict[str, Any]:
        query = catalog.query(widget, dashboard.filters)
        spec = catalog.endpoints.get(widget.endpoint)
        status, body = await fetch(widget, query)
        entry: dict[str, Any] = {
            "widget": widget.model_dump(mode="json"),
            "spec": {
                "shape": spec.shape if spec else None,
                "label": spec.label if spec else None,
                "measures": spec.measures if spec else [],
            },
            "query": query,
        }
        if status == 200:
            entry["data"] = body
        else:
            detail = body.get("detail") if isinstance(body, dict) else None
            entry["error"] = f"{status}: {detail or 'no data'}"
        return entry

    widgets = await asyncio.gather(*(one(w) for w in dashboard.widgets))
    payload = {
        "name": dashboard.name,
        "version": dashboard.version,
        "filters": dashboard.filters,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "widgets": widgets,
    }
    sources = ("plotly.min.js", "charts.js", "export.js")
    scripts = [_inline(source) for source in sources]
    policy = (
        "default-src 'none'; script-src "
        + " ".join(_script_hash(source) for source in sources)
        + "; style-src 'unsafe-inline'; img-src data: blob:; font-src data:"
    )
    return (
        templates()
        .get_template("export.html")
        .render(
            name=dashboard.name,
            payload=payload,
            data_json=_json_for_html(payload),
            filters_text="; ".join(
                f"{k} = {', '.join(map(str, v)) if isinstance(v, list) else v}"
                for k, v in dashboard.filters.items()
            ),
            css=assets()["ui.css"].text,
            scripts=scripts,
            policy=policy,
        )
    )
