"""`/v1/users` and `/v1/keys`: user and API key administration for admins (the same operations
as `tmdb-analytics users|keys`, through `app.services.accounts`, audited alike).

Every change made here is seen at once by this process (its caches forget the user or key)
and by the others within `TOKEN_REVOCATION_CACHE_SECONDS` (users) or `API_KEY_CACHE_SECONDS`
(keys).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Response

from app.deps import State
from app.errors import problem_responses
from app.models.accounts import (
    USERNAME_PATTERN,
    KeyCreated,
    KeyIn,
    KeyInfo,
    KeyList,
    KeyRotation,
    PasswordSet,
    UserChange,
    UserIn,
    UserInfo,
    UserList,
)
from app.routers.json_body import json_router
from app.security import RequestOrigin
from app.services import accounts, credentials
from app.services.credentials import (
    KEY_ID_RE,
    MAX_KEY_LIFETIME,
    MAX_ROTATION_GRACE,
    ApiKey,
    parse_duration,
)

users_router = json_router(prefix="/v1/users", tags=["admin"])
keys_router = json_router(prefix="/v1/keys", tags=["admin"])

Username = Annotated[str, Path(pattern=USERNAME_PATTERN, description="The username")]
KeyId = Annotated[
    str, Path(pattern=KEY_ID_RE.pattern, description="The key id (12 hex digits), from the list")
]


def _user_info(state: State, user: credentials.User) -> UserInfo:
    return UserInfo.of(user, state.settings.password_max_age_days)


# --- users ---------------------------------------------------------------------------------


@users_router.get(
    "", summary="List users", response_model=UserList, responses=problem_responses(503)
)
async def list_users(state: State) -> UserList:
    """Every user with role, password age and status (never a password or its hash)."""
    users = await credentials.list_users(state.db)
    return UserList(items=[_user_info(state, u) for u in users])


@users_router.post(
    "",
    status_code=201,
    summary="Create a user",
    response_model=UserInfo,
    responses=problem_responses(400, 409, 422, 503),
)
async def create_user(body: UserIn, state: State, origin: RequestOrigin) -> UserInfo:
    """A user who logs in at `POST /v1/auth/token`; 409 when the name is taken, 400 when the
    password policy refuses the password."""
    user = await accounts.create_user(
        state.db,
        origin,
        body.username,
        body.role,
        body.password,
        min_password_length=state.settings.password_min_length,
        executor=state.login_guard.executor,
    )
    return _user_info(state, user)


@users_router.get(
    "/{username}",
    summary="One user",
    response_model=UserInfo,
    responses=problem_responses(404, 503),
)
async def get_user(username: Username, state: State) -> UserInfo:
    """The user's role, password age and status; 404 when unknown."""
    return _user_info(state, await credentials.get_user(state.db, username))


@users_router.patch(
    "/{username}",
    summary="Change a user's role, or disable or enable it",
    response_model=UserInfo,
    responses=problem_responses(404, 409, 422, 503),
)
async def update_user(
    username: Username, body: UserChange, state: State, origin: RequestOrigin
) -> UserInfo:
    """Set the role and/or `disabled`; demoting or disabling revokes the user's tokens."""
    user = await accounts.update_user(
        state.db, origin, username, role=body.role, disabled=body.disabled
    )
    state.authenticator.forget_user(username)
    return _user_info(state, user)


@users_router.delete(
    "/{username}",
    status_code=204,
    response_class=Response,
    summary="Delete a user",
    responses=problem_responses(404, 409, 503),
)
async def delete_user(username: Username, state: State, origin: RequestOrigin) -> Response:
    """Delete the account; its tokens stop working (within the revocation cache time)."""
    await accounts.delete_user(state.db, origin, username)
    state.authenticator.forget_user(username)
    return Response(status_code=204)


@users_router.post(
    "/{username}/password",
    summary="Set a user's password (reset)",
    response_model=UserInfo,
    responses=problem_responses(400, 404, 422, 503),
)
async def set_password(
    username: Username, body: PasswordSet, state: State, origin: RequestOrigin
) -> UserInfo:
    """Replace the user's password (policy checked) and revoke their tokens."""
    user = await accounts.set_password(
        state.db,
        origin,
        username,
        body.password,
        min_password_length=state.settings.password_min_length,
        executor=state.login_guard.executor,
    )
    state.authenticator.forget_user(username)
    return _user_info(state, user)


@users_router.post(
    "/{username}/revoke-tokens",
    summary="Revoke a user's tokens",
    response_model=UserInfo,
    responses=problem_responses(404, 503),
)
async def revoke_tokens(username: Username, state: State, origin: RequestOrigin) -> UserInfo:
    """Every token issued to the user so far stops working: at once in this process, within
    TOKEN_REVOCATION_CACHE_SECONDS in the others. The user can log in again."""
    user = await accounts.revoke_tokens(state.db, origin, username)
    state.authenticator.forget_user(username)
    return _user_info(state, user)


# --- API keys ------------------------------------------------------------------------------


def _created(record: ApiKey, key: str) -> KeyCreated:
    return KeyCreated(**KeyInfo.of(record).model_dump(), key=key)


@keys_router.get(
    "", summary="List API keys", response_model=KeyList, responses=problem_responses(503)
)
async def list_keys(state: State) -> KeyList:
    """Every key with its status, expiry and last use (never the key or its hash)."""
    return KeyList(items=[KeyInfo.of(k) for k in await credentials.list_api_keys(state.db)])


@keys_router.post(
    "",
    status_code=201,
    summary="Create an API key",
    response_model=KeyCreated,
    responses=problem_responses(400, 422, 503),
)
async def create_key(
    body: KeyIn, response: Response, state: State, origin: RequestOrigin
) -> KeyCreated:
    """A new key for a partner system; the answer holds the key itself, shown this once."""
    expires_in = (
        parse_duration(body.expires_in, what="expires_in", maximum=MAX_KEY_LIFETIME)
        if body.expires_in is not None
        else None
    )
    record, key = await accounts.create_key(
        state.db, origin, body.name, body.role, expires_in=expires_in
    )
    response.headers["Cache-Control"] = "no-store"  # a secret: no cache may keep it
    return _created(record, key)


@keys_router.get(
    "/{key_id}",
    summary="One API key",
    response_model=KeyInfo,
    responses=problem_responses(404, 503),
)
async def get_key(key_id: KeyId, state: State) -> KeyInfo:
    """The key's name, role, status, expiry and last use; 404 when unknown."""
    return KeyInfo.of(await credentials.get_api_key(state.db, key_id))


@keys_router.post(
    "/{key_id}/revoke",
    summary="Revoke (disable) an API key",
    response_model=KeyInfo,
    responses=problem_responses(404, 503),
)
async def revoke_key(key_id: KeyId, state: State, origin: RequestOrigin) -> KeyInfo:
    """Refuse the key from now on (at once here, within API_KEY_CACHE_SECONDS elsewhere). The
    record stays, for the audit trail; delete it to remove it."""
    record = await accounts.revoke_key(state.db, origin, key_id)
    state.authenticator.forget_key(key_id)
    return KeyInfo.of(record)


@keys_router.delete(
    "/{key_id}",
    status_code=204,
    response_class=Response,
    summary="Delete an API key",
    responses=problem_responses(404, 503),
)
async def delete_key(key_id: KeyId, state: State, origin: RequestOrigin) -> Response:
    """Remove the key; it is refused from now on."""
    await accounts.delete_key(state.db, origin, key_id)
    state.authenticator.forget_key(key_id)
    return Response(status_code=204)


@keys_router.post(
    "/{key_id}/rotate",
    summary="Rotate an API key's secret",
    response_model=KeyCreated,
    responses=problem_responses(400, 404, 409, 422, 503),
)
async def rotate_key(
    key_id: KeyId,
    state: State,
    origin: RequestOrigin,
    response: Response,
    body: KeyRotation | None = None,
) -> KeyCreated:
    """A new secret for the same key (id, name, role, expiry), shown this once; the old secret
    keeps working for `grace` (24h by default), so the partner can switch without downtime.
    409 for a revoked or expired key."""
    grace = parse_duration((body or KeyRotation()).grace, what="grace", maximum=MAX_ROTATION_GRACE)
    record, key = await accounts.rotate_key(state.db, origin, key_id, grace)
    state.authenticator.forget_key(key_id)
    response.headers["Cache-Control"] = "no-store"
    return _created(record, key)
