"""CORS for browser frontends served from other origins (`CORS_ORIGINS`).

Credentials travel in headers (`Authorization`, `X-API-Key`), never in cookies, so
`allow_credentials` stays off: a page on an allowed origin can call the API only with a
credential it holds itself. Starlette's middleware does the work, with two changes:

* an origin that is not allowed gets no CORS header at all (Starlette would still send
  `Access-Control-Expose-Headers` to it), only `Vary: Origin`;
* a refused preflight is a problem+json 400 like every other error, not a text line.

It sits inside the observability middleware (request id, access log, metrics) and outside
the rate limits: a preflight carries no credential by definition, so it is answered here
without being charged to the client address or checked for one.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import send_problem
from app.settings import Settings

ALLOW_METHODS = ("GET", "POST", "PUT", "DELETE")
ALLOW_HEADERS = ("Authorization", "X-API-Key", "If-None-Match", "If-Match", "Content-Type")
EXPOSE_HEADERS = (
    "ETag",
    "X-Data-Version",
    "X-Analytics-Cache",
    "X-Data-Stale",
    "X-Request-Id",
    "Retry-After",
    "Link",
    "Content-Disposition",
)
PREFLIGHT_MAX_AGE = 600


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, silent towards origins it does not allow."""

    def __init__(self, app: ASGIApp, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSE_HEADERS,
            max_age=PREFLIGHT_MAX_AGE,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code != 200:
                    detail = bytes(response.body).decode("utf-8", "replace")
                    await send_problem(
                        send,
                        400,
                        f"{detail} (allowed: CORS_ORIGINS, methods {', '.join(ALLOW_METHODS)}, "
                        f"headers {', '.join(ALLOW_HEADERS)})",
                        scope=scope,
                        headers=[("Vary", str(self.preflight_headers["Vary"]))],
                    )
                    return
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if (
            message["type"] == "http.response.start"
            and origin is not None
            and not self.is_allowed_origin(origin)
        ):
            message.setdefault("headers", [])
            MutableHeaders(scope=message).add_vary_header("Origin")
            await send(message)
            return
        await super().send(message, send, request_headers)


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Add the CORS middleware when `CORS_ORIGINS` names any origin (none by default)."""
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(CorsMiddleware, origins=origins)
