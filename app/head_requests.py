"""HEAD for every GET resource: answered as the GET, without the body.

HTTP requires a general-purpose server to support HEAD wherever it supports GET (RFC 9110,
section 9.3.2: the same status and header fields, no content), and uptime checkers and load
balancers use it on `/health`. FastAPI routes answer only the methods they declare, so HEAD
got 405 everywhere. Here a HEAD request goes down the stack as a GET, through the same
credential, rate, cache and route code, and the body of its answer is dropped on the way
back; a path with no GET answers 405 with its `Allow` header, as before.

It sits inside observability, which logs and counts the request as the HEAD it is, under the
route template the GET matched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# What routing records on the scope it was given, which observability reads from its own.
_ROUTING_KEYS = ("route", "endpoint", "path_params")


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        as_get = {**scope, "method": "GET"}

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            await self.app(as_get, receive, without_body)
        finally:
            for key in _ROUTING_KEYS:
                if key in as_get:
                    scope[key] = as_get[key]
