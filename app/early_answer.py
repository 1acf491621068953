"""What the middlewares that answer before routing share (`app.predict_early`,
`app.detail_early`): the route each path matches, learnt from the first request routing
handled, and the steps after the credential check, in the order a routed request takes them.

A request answered here spends its rate token as a routed one would, keeps its principal and
route template for the access log and metrics, and gets the route's bytes. When the answer
cannot be computed (a 404, a database error, anything the route answers its own way) the
token is given back and the caller hands the request to the app, which answers and charges
it as before: answering early never refuses anything itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.routing import BaseRoute
from starlette.types import Scope, Send

from app.authn import Principal
from app.http_cache import send_json_before_routing
from app.state import AppState


class RouteMemory:
    """The routes answered early, by path template, each learnt from the first request
    routing matched to it (the template labels the access log and metrics of the ones
    after)."""

    def __init__(self) -> None:
        self._routes: dict[str, BaseRoute] = {}

    def get(self, template: str) -> BaseRoute | None:
        return self._routes.get(template)

    def learn(self, template: str, scope: Scope) -> None:
        """Keep the route a routed request matched, when it is the one with `template`."""
        route = scope.get("route")
        if isinstance(route, BaseRoute) and getattr(route, "path", None) == template:
            self._routes[template] = route


async def answer_before_routing(
    scope: Scope,
    send: Send,
    state: AppState,
    principal: Principal,
    route: BaseRoute,
    payload: Callable[[], Awaitable[bytes]],
) -> bool:
    """Spend the principal's rate token, compute the answer's bytes and send them as a 200
    `application/json`; False, with the token given back, when the route must answer
    instead (`payload` raised, or the budget is spent: the route answers the 429)."""
    if state.limiter.hit(principal.rate_key) > 0:
        return False  # a spent budget takes no token
    try:
        body = await payload()
    except Exception:
        # The route answers it (404, 413, 422, a 503 when the database fails) and is
        # charged instead.
        state.limiter.refund(principal.rate_key)
        return False
    scope.setdefault("state", {})["principal"] = principal
    scope["route"] = route
    await send_json_before_routing(send, body)
    return True
