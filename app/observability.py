"""Request ids, structured JSON logs and Prometheus metrics.

Everything here is pure ASGI (no `BaseHTTPMiddleware`): that wrapper copies every request into
a task and a stream, which costs more than all the bookkeeping below put together.

Other modules import the metric objects directly, e.g.::

    from app.observability import PREDICTIONS, SNAPSHOT_REBUILDS
    PREDICTIONS.labels(model="revenue", version="2024-01-01").inc(len(batch))
    SNAPSHOT_REBUILDS.inc()

Deliberately free of imports from `app.errors` (which imports `DB_ERRORS` from here), so the two
modules never form an import cycle.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.problems import PROBLEM_JSON, problem_body

REQUEST_ID_HEADER = "X-Request-ID"
# Accept a caller's id only when it is short and plain, so it cannot inject into logs.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
UNMATCHED_ROUTE = "<unmatched>"
NOSNIFF_HEADER = (b"x-content-type-options", b"nosniff")

# The id of the request being served, for every log line written while serving it.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

log = logging.getLogger("app.observability")
access_log = logging.getLogger("app.access")

# --- metrics -------------------------------------------------------------------------------

# Latency buckets from sub-millisecond (cached analytics) to the request timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)
HTTP_IN_PROGRESS = Gauge("http_requests_in_progress", "HTTP requests being served right now.")
PREDICTIONS = Counter(
    "predictions_total",
    "Predictions served, by model name and model version.",
    ["model", "version"],
)
PREDICT_ITEMS_DROPPED = Counter(
    "predict_list_items_dropped_total",
    "List items of prediction inputs dropped because their name was blank, by input field.",
    ["field"],
)
SNAPSHOT_REBUILDS = Counter(
    "analytics_snapshot_rebuilds_total", "Rebuilds of the in-memory analytics snapshot."
)
SNAPSHOT_REBUILD_SECONDS = Histogram(
    "analytics_snapshot_rebuild_seconds",
    "Time spent rebuilding the analytics snapshot.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MODEL_BEHIND = Gauge(
    "model_version_behind",
    "1 while this process serves another version than the database names for the model "
    "(it cannot load that one; see /ready).",
    ["model"],
)
MODEL_FOLLOW_FAILURES = Counter(
    "model_version_follow_failures_total",
    "Attempts to load the version the database names that failed in this process.",
    ["model"],
)
DB_ERRORS = Counter(
    "database_errors_total",
    "Requests that failed because the database was unavailable, by exception class.",
    ["kind"],
)
AUTH_FAILURES = Counter("auth_failures_total", "Rejected credentials, by reason.", ["reason"])
RATE_LIMITED = Counter(
    "rate_limited_total", "Requests refused with 429, by kind of client.", ["kind"]
)


# --- logging -------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: easy to ship to Loki/ELK and to grep with `jq`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            # Tracebacks go to the log (for operators), never into responses.
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    """Send the `app.*` loggers to stderr as JSON lines (idempotent).

    Only the `app` logger gets the handler: uvicorn keeps its own loggers, and records still
    propagate to the root logger so pytest's `caplog` sees them.
    """
    logger = logging.getLogger("app")
    logger.setLevel(level.upper())
    if any(getattr(h, "_tmdb_json", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._tmdb_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


# --- raw ASGI helpers ----------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    *,
    scope: Scope,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    """Answer with an RFC 9457 body from middleware, where no `Request`/handler exists yet."""
    request_id = scope.get("state", {}).get("request_id")
    body = problem_body(status, detail, instance=scope.get("path"), request_id=request_id)
    payload = orjson.dumps(body)
    raw_headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def route_template(scope: Scope) -> str:
    """The matched route's path template (`/v1/movies/{movie_id}`), never the raw path: raw
    paths would give Prometheus one time series per movie id."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    if "endpoint" in scope:
        # A plain Starlette route (/openapi.json, /docs): fixed paths, safe to use as is.
        return str(scope["path"])
    return UNMATCHED_ROUTE


class ObservabilityMiddleware:
    """Request id in and out (plus `X-Content-Type-Options: nosniff` on every response), one
    access-log line and the HTTP metrics per request, and the last line of defence for
    unexpected exceptions (500 problem+json, traceback logged)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        # A private copy: servers hand every request the lifespan state, and per-request
        # values (request id, principal) must not leak into the next request through it.
        state: dict[str, Any] = dict(scope.get("state") or {})
        state["request_id"] = request_id
        scope["state"] = state
        token = REQUEST_ID.set(request_id)
        status = 500
        response_started = False
        request_id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = int(message["status"])
                headers = [*message.get("headers", ()), request_id_header]
                if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                    # Browsers must take JSON as JSON, never sniff it into HTML or script.
                    headers.append(NOSNIFF_HEADER)
                message["headers"] = headers
            await send(message)

        HTTP_IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The client went away (or the server is shutting down); nginx calls this 499.
            status = 499
            raise
        except Exception:
            log.exception(
                "unhandled error",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"]},
            )
            if response_started:
                raise
            # Handled here rather than in Starlette's ServerErrorMiddleware, which sits outside
            # us: this way the response still carries the request id header and is counted.
            await send_problem(
                send_with_id, 500, "internal error; quote the request id", scope=scope
            )
        finally:
            HTTP_IN_PROGRESS.dec()
            duration = time.perf_counter() - started_at
            route = route_template(scope)
            method = scope["method"]
            HTTP_REQUESTS.labels(method, route, str(status)).inc()
            HTTP_LATENCY.labels(method, route).observe(duration)
            principal = state.get("principal")
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 2),
                    "principal": str(principal) if principal is not None else None,
                    "client": (scope.get("client") or (None,))[0],
                },
            )
            REQUEST_ID.reset(token)


# --- /metrics ------------------------------------------------------------------------------

metrics_router = APIRouter(tags=["operations"])


@metrics_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format",
        }
    },
)
async def metrics() -> Response:
    """Prometheus text exposition of this process's metrics (public, like /health)."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def install_observability(app: FastAPI, log_level: str = "INFO") -> None:
    """Add the middleware; call it after every other `add_middleware` so it is outermost and
    sees (and times) every response, including 413/429 from the limits."""
    configure_logging(log_level)
    app.add_middleware(ObservabilityMiddleware)
