"""Authentication endpoints: exchange a username and password for a token, change one's own
password, who am I."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Form, Request, Response
from pydantic import BaseModel, Field
from pymongo.errors import PyMongoError

from app.authn import ForbiddenError
from app.deps import State
from app.errors import problem_responses
from app.limits import client_ip
from app.routers.json_body import json_router
from app.security import (
    PASSWORD_URL,
    TOKEN_URL,
    AnyPrincipal,
    Principal,
    RequestOrigin,
    UnauthorizedError,
    client_host,
    issue_token,
    require_role,
)
from app.services import accounts, audit
from app.services.audit import Origin
from app.services.credentials import (
    MAX_PASSWORD,
    Role,
    TokenState,
    User,
    authenticate_user,
    user_exists,
)

router = json_router(tags=["auth"])


class TokenResponse(BaseModel):
    access_token: str = Field(description="JWT (HS256); send as `Authorization: Bearer ...`")
    token_type: str = Field(default="bearer", examples=["bearer"])
    expires_in: int = Field(description="Lifetime in seconds", examples=[1800])
    password_change_required: bool = Field(
        default=False,
        description="The password is past its maximum age: this token is good only for "
        f"`POST {PASSWORD_URL}`",
    )


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new_password: str = Field(
        min_length=1,
        max_length=MAX_PASSWORD,
        description="At least PASSWORD_MIN_LENGTH (12) characters, not the username, "
        "not a common password",
    )


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
    """Exchange a username and password for a short-lived bearer token (past the password's
    maximum age, a token good only for changing it)."""
    guard = state.login_guard
    async with guard.attempt(client_ip(request.scope), username) as attempt:
        user = await authenticate_user(state.db, username, password, guard.executor)
        if user is None:
            attempt.failed = True
            await _audit_failed_login(request, state, username)
            # One answer for unknown user and wrong password: no account enumeration.
            raise UnauthorizedError("incorrect username or password", reason="bad_password")
    expired = user.password_expired(state.settings.password_max_age_days)
    audit.record_as(
        state.db,
        _login_origin(request, user.username),
        "auth.login",
        target=user.username,
        details={"password_expired": True} if expired else None,
    )
    return _token_response(state, response, user, password_change_only=expired)


def _login_origin(request: Request, username: str) -> Origin:
    return Origin(
        actor=f"user:{username}",
        source_ip=client_host(request),
        request_id=getattr(request.state, "request_id", None),
    )


async def _audit_failed_login(request: Request, state: State, username: str) -> None:
    """A refused password, under the username when it names an account. Otherwise as
    `<unknown user>`: what is typed there may be a password typed in the wrong field, and no
    secret enters the audit log. (Throttled attempts, 429, are not recorded: they check no
    password, and a flood of them would only fill the log.)"""
    try:
        known = await user_exists(state.db, username)
    except PyMongoError:
        known = False
    shown = username if known else "<unknown user>"
    audit.record_as(
        state.db,
        _login_origin(request, shown),
        "auth.login",
        outcome="failure",
        target=shown,
        details={"reason": "incorrect username or password"},
    )


def _token_response(
    state: State, response: Response, user: User, *, password_change_only: bool = False
) -> TokenResponse:
    access_token, lifetime = issue_token(
        state.settings,
        user.username,
        user.role,
        version=user.token_version,
        password_change_only=password_change_only,
    )
    # This process knows the user's token version now: its tokens verify without a read.
    state.authenticator.note_user(user.username, TokenState(user.token_version, user.disabled))
    # RFC 6749 5.1: no cache (browser, proxy) may keep a token.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return TokenResponse(
        access_token=access_token,
        token_type="bearer",
        expires_in=lifetime,
        password_change_required=password_change_only,
    )


@router.post(
    PASSWORD_URL,
    summary="Change my password",
    response_model=TokenResponse,
    responses=problem_responses(400, 401, 403, 422, 429, 503),
)
async def change_password(
    request: Request,
    response: Response,
    state: State,
    body: PasswordChange,
    principal: AnyPrincipal,
    origin: RequestOrigin,
) -> TokenResponse:
    """Change the calling user's password (the current one proves it is them); every token
    issued before stops working, and a fresh one comes back."""
    if principal.method != "bearer":
        raise ForbiddenError("only users have passwords: log in as the user to change one")
    guard = state.login_guard
    username = principal.subject
    async with guard.attempt(client_ip(request.scope), username) as attempt:
        try:
            user = await accounts.change_own_password(
                state.db,
                origin,
                username,
                body.current_password,
                body.new_password,
                min_password_length=state.settings.password_min_length,
                executor=guard.executor,
            )
        except accounts.WrongPasswordError:
            attempt.failed = True  # guessing the current password is guessing a password
            raise
    state.authenticator.forget_user(username)
    return _token_response(state, response, user)


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
