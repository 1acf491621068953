"""Predictions before routing: `POST /v1/predict/{revenue,hit,engagement}` without a query
string, answered by the same service functions the routes call, without FastAPI's routing and
dependency solving.

Profiled in process, resolving the routes' dependencies (credential, role, registry, settings,
prediction log: fifteen nodes) cost about as much as featurizing and scoring a film, and kept
a one-film prediction above 3x `/health` once the models grew (issue 14's blends). Here the
request is answered when, and only when:

* its credential verifies with the functions the routes use and its role includes
  `predictor` (`app.conditional.principal_with_role`), and its rate budget has a token, which
  it spends as a routed request would (given back when it falls back to the route);
* it has no query string (`explain=true` and friends go through the route), a JSON
  content type, and a body that `PredictRequest` accepts;
* the service answers it without raising.

The first request to each path is routed too, to learn the route it matches (its template
labels the access log and the metrics of the requests answered here). Anything else is passed
to the app with its body replayed, so the route answers or refuses it exactly as before (422s
naming the bad field, 413, 503, 401/403/429): this path never refuses anything itself.

The answer's bytes are the route's (`orjson.dumps` of the same dict), and the request keeps
its route template and principal for the access log and metrics.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.conditional import principal_with_role
from app.early_answer import RouteMemory, answer_before_routing
from app.models.predict import PredictRequest
from app.models.predict_decode import decode_clean
from app.observability import REQUEST_ID
from app.services import engagement
from app.services import predict as service
from app.services.credentials import Role
from app.services.prediction_log import LogContext
from app.state import AppState

PREFIX = "/v1/predict/"
MODELS = ("revenue", "hit", "engagement")
Answer = Callable[[AppState, service.Batch, LogContext], Awaitable[dict[str, Any]]]


def _answer(name: str) -> Answer:
    async def answer(state: AppState, body: service.Batch, context: LogContext) -> dict[str, Any]:
        settings = state.settings
        if name == "engagement":
            return await engagement.predict_engagement(
                state.registry, body, settings.max_batch_size, state.prediction_log, context
            )
        return await service.predict(
            state.registry,
            name,
            body,
            False,
            settings.max_batch_size,
            state.prediction_log,
            context,
        )

    return answer


ANSWERS = {PREFIX + name: _answer(name) for name in MODELS}


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return False


class EarlyPredictMiddleware:
    """Predictions before routing (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes = RouteMemory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = (
            ANSWERS.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST" and not scope["query_string"]
            else None
        )
        state: AppState | None = getattr(scope["app"].state, "app_state", None)
        if answer is None or state is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = self._routes.get(path)
        if route is None:
            # The first request to each path is routed, to learn the route it matches.
            await self.app(scope, receive, send)
            self._routes.learn(path, scope)
            return
        body, receive = await _buffered(receive)
        if not await self._answered(scope, send, state, answer, body, route):
            await self.app(scope, receive, send)

    async def _answered(
        self,
        scope: Scope,
        send: Send,
        state: AppState,
        answer: Answer,
        body: bytes,
        route: BaseRoute,
    ) -> bool:
        principal = await principal_with_role(scope, state, Role.predictor)
        if principal is None:
            return False
        request = _validated(body)
        if request is None:
            return False  # the route answers the 422, and spends the token
        context = LogContext(REQUEST_ID.get(), str(principal))

        async def payload() -> bytes:
            return orjson.dumps(await answer(state, request, context))

        return await answer_before_routing(scope, send, state, principal, route, payload)


def _validated(body: bytes) -> service.Batch | None:
    """The body as the route would validate it: decoded straight into structs when it is
    clean (nearly always: about half the cost, `app.models.predict_decode`), else by
    pydantic. None when pydantic refuses it."""
    clean = decode_clean(body)
    if clean is not None:
        return clean
    try:
        return PredictRequest.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a `receive` that hands it over again to the app."""
    chunks: list[bytes] = []
    extra: list[Message] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            extra.append(message)  # a disconnect: replayed after the body
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *extra]

    async def replaying() -> Message:
        if replay:
            return replay.pop(0)
        return await receive()

    return body, replaying
