"""Film detail before routing: `GET /v1/movies/{id}` without a query string, answered by the
route's own service function (`get_movie`, one `_id` lookup in the database), without
FastAPI's routing and dependency solving.

The lookup is an index seek and FerretDB answers it in about a millisecond; resolving the
route's dependencies (credential, role, rate budget, database) and validating the path
parameter cost about half as much again, which kept detail above 3x `/health` (issue 15).
Here the request is answered when, and only when:

* its path is `/v1/movies/` and an id of digits in the route's range, with no query string;
* its credential verifies with the functions the routes use and its role includes `viewer`
  (`app.conditional.principal_with_role`), and its rate budget has a token, which it spends
  as a routed request would (given back when it falls back to the route);
* the film exists and the lookup succeeds.

The first such request is routed, to learn the route (its template labels the access log and
metrics of the requests answered here). Anything else, a 404 included, goes through the app
as usual, which answers or refuses it exactly as before: this path never refuses anything
itself. The answer's bytes are the route's (`MovieDetail.model_dump_json`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from app.conditional import viewer
from app.early_answer import RouteMemory, answer_before_routing
from app.routers.movies import MAX_ID
from app.services.movies_query import get_movie
from app.state import AppState

PREFIX = "/v1/movies/"
TEMPLATE = PREFIX + "{movie_id}"
_MAX_DIGITS = len(str(MAX_ID))


def movie_id(path: str) -> int | None:
    """The id of a detail path the route would accept as is (digits, no sign or padding)."""
    if not path.startswith(PREFIX):
        return None
    digits = path[len(PREFIX) :]
    if not digits.isascii() or not digits.isdigit() or len(digits) > _MAX_DIGITS:
        return None
    if digits[0] == "0":
        return None  # "007": the route parses it, but answers it under its own rules
    value = int(digits)
    return value if 1 <= value <= MAX_ID else None


class EarlyDetailMiddleware:
    """Film detail before routing (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes = RouteMemory()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        wanted = (
            movie_id(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]
            else None
        )
        state: AppState | None = getattr(scope["app"].state, "app_state", None)
        if wanted is None or state is None:
            await self.app(scope, receive, send)
            return
        route = self._routes.get(TEMPLATE)
        if route is None:
            await self.app(scope, receive, send)
            self._routes.learn(TEMPLATE, scope)
            return
        principal = await viewer(scope, state)

        async def payload() -> bytes:
            detail = await get_movie(state.db, wanted)  # a 404 raises: the route answers it
            return detail.model_dump_json(by_alias=True).encode()

        if principal is None or not await answer_before_routing(
            scope, send, state, principal, route, payload
        ):
            await self.app(scope, receive, send)
