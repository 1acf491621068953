"""Conditional GETs that hit, answered before routing.

A conditional GET that matches costs nothing to compute (`app.routers.answers` decides it on
the snapshot's version), but going through FastAPI still costs resolving a dozen
dependencies (credential, role, query validation), several times what the 304 itself costs.
So every answer served from the analytics snapshot is remembered here by what selects it
(path, raw query string, `Accept`): its tag, the snapshot it was computed on, and the
headers of its 304. A later GET naming that tag in `If-None-Match` is answered 304 by this
middleware when, and only when:

* its credential verifies with the same functions the routes use (`Authenticator`,
  `decode_token`), its role includes `viewer` (what `/v1/analytics/*` and `/v1/movies`
  need), and its rate budget has a token, which it spends as a routed request would;
* the engine's current snapshot (after its periodic version check) is the one remembered.

Anything else (no entry, another tag, a credential that fails, a spent budget, a newer
snapshot) goes through the app as usual, which answers or refuses it and charges what it
charges: this path never refuses anything itself.
"""

from __future__ import annotations

from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Receive, Scope, Send

from app.authn import Principal, UnauthorizedError, decode_token
from app.conditional_memo import ConditionalMemo, header
from app.http_cache import NOT_MODIFIED, none_match
from app.services.credentials import Role
from app.state import AppState


async def viewer(scope: Scope, state: AppState) -> Principal | None:
    """The request's principal when its credential verifies and may read (role viewer), as
    `app.security.current_principal` decides; None in every other case (never raises)."""
    api_key = header(scope, b"x-api-key")
    authorization = header(scope, b"authorization")
    try:
        if api_key:  # the API key wins over a bearer token, as in current_principal
            principal = await state.authenticator.api_key_principal(api_key.decode("latin-1"))
        elif authorization:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            principal = decode_token(state.settings, token.strip())
        else:
            return None
    except (UnauthorizedError, PyMongoError):
        return None
    return principal if principal.role.includes(Role.viewer) else None


class ConditionalGetMiddleware:
    """304 before routing for remembered answers (see the module docstring)."""

    def __init__(self, app: ASGIApp, memo: ConditionalMemo) -> None:
        self.app = app
        self.memo = memo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and await self._answer(scope, send):
            return
        await self.app(scope, receive, send)

    async def _answer(self, scope: Scope, send: Send) -> bool:
        if_none_match = header(scope, b"if-none-match")
        if if_none_match is None:
            return False
        entry = self.memo.get(scope)
        if entry is None or not none_match(if_none_match.decode("latin-1"), entry.tag):
            return False
        app_state: AppState | None = getattr(scope["app"].state, "app_state", None)
        if app_state is None:
            return False
        engine = app_state.analytics
        if engine.current is None or engine.current.build_id != entry.build_id:
            return False
        principal = await viewer(scope, app_state)
        if principal is None:
            return False
        # The version check a routed request makes; a newer snapshot means a new answer.
        snap = await engine.snapshot()
        if snap.build_id != entry.build_id:
            return False
        # A spent budget takes no token: the routed request then answers the 429 itself.
        if app_state.limiter.hit(principal.rate_key) > 0:
            return False
        scope.setdefault("state", {})["principal"] = principal
        if entry.route is not None:
            scope["route"] = entry.route
        headers = list(entry.headers)
        if engine.stale:
            headers.append((b"x-data-stale", b"true"))
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        NOT_MODIFIED.labels("memo").inc()
        return True
