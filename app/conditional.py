"""Warm answers before routing: conditional GETs that hit (304) and repeated GETs (200).

A conditional GET that matches costs nothing to compute (`app.routers.answers` decides it on
the snapshot's version), and a repeated GET's answer is already serialized in the analytics
engine's cache; but going through FastAPI still costs resolving a dozen dependencies
(credential, role, query validation), several times what the answer itself costs (profiled:
most of a warm request's time in the process). So every answer served from the analytics
snapshot is remembered here by what selects it (path, raw query string, `Accept`): its tag,
the snapshot it was computed on, the headers of its 304 and, once a 200 of it was sent, that
200's exact head and body (`app.conditional_memo`). A later GET with that path, query string
and `Accept` is answered here, 304 when its `If-None-Match` names that tag, the remembered
200 when it sends no `If-None-Match`, when, and only when:

* its credential verifies with the same functions the routes use (`Authenticator`: API
  keys, and bearer tokens with their user's token version), it is not a token good only for
  a password change, its role includes `viewer` (what `/v1/analytics/*` and `/v1/movies`
  need), and its rate budget has a token, which it spends as a routed request would;
* the engine's current snapshot (after its periodic version check) is the one remembered.

The same query string gives the same validation and the same answer, so the route would
send these very bytes (`X-Analytics-Cache: hit`; `X-Data-Stale` as it applies now).
Anything else (no entry, another tag, a credential that fails, a spent budget, a newer
snapshot) goes through the app as usual, which answers or refuses it and charges what it
charges: this path never refuses anything itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from pymongo.errors import PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.authn import Principal, UnauthorizedError
from app.conditional_memo import MEMO_ENTRY, ConditionalMemo, Entry, RawHeaders, header
from app.http_cache import ANSWERED_BEFORE_ROUTING, NOT_MODIFIED, none_match
from app.services.credentials import Role
from app.state import AppState


async def viewer(scope: Scope, state: AppState) -> Principal | None:
    """The request's principal when its credential verifies and may read (role viewer), as
    `app.security.current_principal` decides; None in every other case (never raises)."""
    return await principal_with_role(scope, state, Role.viewer)


async def principal_with_role(scope: Scope, state: AppState, role: Role) -> Principal | None:
    """The request's principal when its credential verifies and its role includes `role`, as
    `app.security.current_principal` and `require_role` decide; None in every other case
    (never raises)."""
    api_key = header(scope, b"x-api-key")
    authorization = header(scope, b"authorization")
    try:
        if api_key:  # the API key wins over a bearer token, as in current_principal
            principal = await state.authenticator.api_key_principal(api_key.decode("latin-1"))
        elif authorization:
            scheme, _, token = authorization.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            principal = await state.authenticator.bearer_principal(token.strip())
        else:
            return None
    except (UnauthorizedError, PyMongoError):
        return None
    if principal.password_change_only:
        return None  # the routed request answers its 403
    return principal if principal.role.includes(role) else None


_STALE_HEADER = (b"x-data-stale", b"true")
_CACHE_HIT_HEADER = (b"x-analytics-cache", b"hit")


class ConditionalGetMiddleware:
    """Warm 304s and 200s before routing (see the module docstring)."""

    def __init__(self, app: ASGIApp, memo: ConditionalMemo) -> None:
        self.app = app
        self.memo = memo

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if await self._answer(scope, send):
            return
        await self.app(scope, receive, self._keeping(scope, send))

    def _keeping(self, scope: Scope, send: Send) -> Send:
        """`send`, keeping a copy of the 200 of a route that remembered its answer."""
        head: RawHeaders | None = None
        entry: Entry | None = None

        async def keeping_send(message: Message) -> None:
            nonlocal head, entry
            if message["type"] == "http.response.start":
                entry = (scope.get("state") or {}).get(MEMO_ENTRY)
                if entry is not None and message["status"] == 200:
                    head = _as_remembered(message.get("headers", ()))
            elif head is not None and entry is not None and message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    self.memo.keep_body(scope, entry, head, bytes(message.get("body", b"")))
                head = None  # a streamed body is never remembered
            await send(message)

        return keeping_send

    async def _answer(self, scope: Scope, send: Send) -> bool:
        if_none_match = header(scope, b"if-none-match")
        entry = self.memo.get(scope)
        if entry is None:
            return False
        if if_none_match is None:
            if entry.body is None:
                return False
        elif not none_match(if_none_match.decode("latin-1"), entry.tag):
            return False  # another tag: the route answers (and validates the header)
        app_state: AppState | None = getattr(scope["app"].state, "app_state", None)
        if app_state is None:
            return False
        engine = app_state.analytics
        if engine.current is None or engine.current.build_id != entry.build_id:
            self.memo.forget(scope)  # computed on a snapshot that is gone
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
        if if_none_match is None:
            assert entry.ok_headers is not None and entry.body is not None
            headers = list(entry.ok_headers)
            if engine.stale:
                headers.append(_STALE_HEADER)
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": entry.body})
            ANSWERED_BEFORE_ROUTING.labels("200").inc()
            return True
        headers = list(entry.headers)
        if engine.stale:
            headers.append(_STALE_HEADER)
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        NOT_MODIFIED.labels("memo").inc()
        ANSWERED_BEFORE_ROUTING.labels("304").inc()
        return True


def _as_remembered(headers: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """A routed 200's head as a later request gets it: served from the result cache, and
    stale only if the engine is stale then."""
    kept: list[tuple[bytes, bytes]] = []
    for key, value in headers:
        name = key.lower()
        if name == b"x-data-stale":
            continue
        kept.append(_CACHE_HIT_HEADER if name == b"x-analytics-cache" else (key, value))
    return tuple(kept)
