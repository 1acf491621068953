"""Authentication endpoints: exchange a username and password for a token; who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from pydantic import BaseModel, Field

from app.deps import State
from app.errors import problem_responses
from app.limits import client_ip
from app.security import (
    TOKEN_URL,
    Principal,
    UnauthorizedError,
    issue_token,
    require_role,
)
from app.services.credentials import MAX_PASSWORD, Role, authenticate_user

router = APIRouter(tags=["auth"])


class TokenResponse(BaseModel):
    access_token: str = Field(description="JWT (HS256); send as `Authorization: Bearer ...`")
    token_type: str = Field(default="bearer", examples=["bearer"])
    expires_in: int = Field(description="Lifetime in seconds", examples=[1800])


class Me(BaseModel):
    subject: str = Field(description="Username, API key name, or `admin-key`")
    role: Role
    method: str = Field(examples=["bearer", "api_key", "admin_key"])
    key_id: str | None = Field(default=None, description="Set for stored API keys")


@router.post(
    TOKEN_URL,
    summary="Log in (OAuth2 password flow)",
    response_model=TokenResponse,
    responses=problem_responses(401, 422, 429, 503),
)
async def token(
    request: Request,
    response: Response,
    state: State,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=MAX_PASSWORD)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenResponse:
    """Exchange a username and password for a short-lived bearer token."""
    guard = state.login_guard
    async with guard.attempt(client_ip(request.scope), username) as attempt:
        user = await authenticate_user(state.db, username, password, guard.executor)
        if user is None:
            attempt.failed = True
            # One answer for unknown user and wrong password: no account enumeration.
            raise UnauthorizedError("incorrect username or password", reason="bad_password")
    access_token, lifetime = issue_token(state.settings, user.username, user.role)
    # RFC 6749 5.1: no cache (browser, proxy) may keep a token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return TokenResponse(access_token=access_token, token_type="bearer", expires_in=lifetime)


@router.get(
    "/v1/auth/me",
    summary="The calling credential",
    response_model=Me,
    responses=problem_responses(401, 403, 429, 503),
)
async def me(principal: Annotated[Principal, Depends(require_role(Role.viewer))]) -> Me:
    """Who the credentials on this request belong to, and their role."""
    return Me(
        subject=principal.subject,
        role=principal.role,
        method=principal.method,
        key_id=principal.key_id,
    )
