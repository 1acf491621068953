"""Who may call what: the FastAPI dependencies that turn a request's credential into a
`Principal` (see `app.authn`), check its role, and charge the per-credential rate limit.

Routers never check credentials themselves: `app.main` adds `protected(role)` when it includes
a router, so a new endpoint cannot forget to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from pymongo.errors import PyMongoError

from app.authn import (
    ForbiddenError,
    Principal,
    RateLimitedError,
    UnauthorizedError,
    issue_token,
)
from app.deps import State
from app.errors import problem_responses
from app.limits import (
    TOKEN_PATH,
    RequestRateLimiter,
    client_ip,
    has_credentials,
    retry_after_header,
)
from app.observability import RATE_LIMITED
from app.services.audit import Origin
from app.services.credentials import Role

__all__ = [
    "PASSWORD_URL",
    "TOKEN_URL",
    "AnyPrincipal",
    "CurrentPrincipal",
    "Principal",
    "RequestOrigin",
    "Role",
    "UnauthorizedError",
    "client_host",
    "current_principal",
    "is_admin",
    "issue_token",
    "protected",
    "require_role",
]

TOKEN_URL = TOKEN_PATH
PASSWORD_URL = "/v1/auth/password"


# --- FastAPI dependencies ------------------------------------------------------------------

# Declared as FastAPI security dependencies so OpenAPI lists both schemes and Swagger UI shows
# an Authorize button (log in with username/password, or paste an API key). `auto_error=False`
# lets us answer a missing credential with our own problem+json 401.
oauth2_scheme = OAuth2PasswordBearer(
    tokenUrl=TOKEN_URL,
    scheme_name="OAuth2Password",
    description="Log in with a username and password; sends `Authorization: Bearer <JWT>`.",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name="X-API-Key",
    scheme_name="ApiKey",
    description="An API key from `tmdb-analytics keys create`, or the `ADMIN_API_KEY`.",
    auto_error=False,
)


def _limit(limiter: RequestRateLimiter, key: str, kind: str) -> None:
    wait = limiter.hit(key)
    if wait > 0:
        RATE_LIMITED.labels(kind).inc()
        raise RateLimitedError(
            "rate limit exceeded for this credential; retry later",
            headers={"Retry-After": retry_after_header(wait)},
        )


async def any_principal(
    request: Request,
    state: State,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The verified caller (X-API-Key wins over a bearer token), a token good only for the
    password change included; 401 otherwise. Only `POST /v1/auth/password` takes it as is;
    every other route goes through `current_principal`.

    `app.conditional.viewer` makes the same decision for answers sent before routing: a
    check added here (e.g. on API keys) must be made there too, or live in `Authenticator`.
    """
    try:
        if api_key:
            principal = await state.authenticator.api_key_principal(api_key)
        elif token:
            principal = await state.authenticator.bearer_principal(token)
        else:
            raise UnauthorizedError(
                "credentials required: an `Authorization: Bearer <token>` from "
                f"{TOKEN_URL} or an `X-API-Key` header",
                reason="missing",
            )
    except UnauthorizedError:
        # Failed credentials spend the client address's budget: guessing keys or tokens is
        # throttled like anonymous traffic (which the middleware already charged).
        if has_credentials(request.scope):
            _limit(state.limiter, "ip:" + client_ip(request.scope), "anonymous")
        raise
    request.state.principal = principal
    _limit(state.limiter, principal.rate_key, "credential")
    return principal


AnyPrincipal = Annotated[Principal, Depends(any_principal)]


async def current_principal(principal: AnyPrincipal) -> Principal:
    """The verified caller; 403 for a token that may only change its user's password."""
    if principal.password_change_only:
        raise ForbiddenError(
            "your password has expired: change it with POST "
            f"{PASSWORD_URL} (current and new password) before doing anything else"
        )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def client_host(request: Request) -> str | None:
    """The client's address as the audit log records it (the proxy's view with
    `--proxy-headers`)."""
    return request.client.host if request.client else None


async def request_origin(request: Request, principal: AnyPrincipal) -> Origin:
    """Who is acting and from where, for the audit log."""
    return Origin(
        actor=principal.actor,
        source_ip=client_host(request),
        username=principal.subject if principal.method == "bearer" else None,
        request_id=getattr(request.state, "request_id", None),
    )


RequestOrigin = Annotated[Origin, Depends(request_origin)]


async def is_admin(request: Request, state: State) -> bool:
    """Whether the request carries a valid admin credential, for public endpoints that show
    admins more (never 401/429: a probe must get its answer). Failed credentials spend the
    client address's budget as elsewhere, and once it is spent none are checked, so a public
    endpoint is no faster an oracle for guessing keys than a protected one."""
    if not has_credentials(request.scope):
        return False
    limiter = state.limiter
    address = "ip:" + client_ip(request.scope)
    if limiter.peek(address) > 0:
        return False
    api_key = request.headers.get("x-api-key")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    try:
        if api_key:
            principal = await state.authenticator.api_key_principal(api_key)
        elif scheme.lower() == "bearer" and token:
            principal = await state.authenticator.bearer_principal(token.strip())
        else:
            return False
    except UnauthorizedError:
        limiter.hit(address)
        return False
    except PyMongoError:
        return False  # the database is down: /ready says so in its public form
    return principal.role.includes(Role.admin) and not principal.password_change_only


def require_role(role: Role | str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting callers whose role includes `role` (403 otherwise)."""
    needed = Role(role)

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if not principal.role.includes(needed):
            raise ForbiddenError(
                f"role {principal.role.value!r} may not do this; it needs {needed.value!r}"
            )
        return principal

    dependency.__name__ = f"require_{needed.value}"
    return dependency


def protected(role: Role | str) -> dict[str, Any]:
    """Keyword arguments for `include_router`: the role check plus the documented 401/403/429,
    e.g. `app.include_router(movies.router, **protected(Role.viewer))`."""
    return {
        "dependencies": [Depends(require_role(role))],
        "responses": problem_responses(401, 403, 429),
    }
