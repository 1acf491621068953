"""The auth matrix: every kind of missing, wrong or insufficient credential, against a real
FerretDB holding real users (Argon2) and API keys (hashed)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from jose import jwt
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from app.authn import JWT_ISSUER
from app.cli import app as cli_app
from app.db import Document
from app.security import Role
from app.services import credentials
from app.settings import PLACEHOLDER_SECRETS, Settings, get_settings
from tests.security_support import (
    ADMIN_KEY,
    JWT_SECRET,
    PROBE_PREFIX,
    api_key,
    bearer,
    make_app,
    security_settings,
    serve,
)
from tests.support import assert_problem

PASSWORD = "correct horse battery staple"
PROBLEM = "application/problem+json"
PUBLIC_PATHS = {
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/v1/auth/token",
}


@pytest.fixture
def sec_settings(settings: Settings) -> Settings:
    return security_settings(settings)


@pytest.fixture
async def api(sec_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(sec_settings)) as client:
        yield client


@pytest.fixture
async def users(db: AsyncDatabase[Document]) -> dict[Role, str]:
    """One user per role; returns role -> username."""
    names = {role: f"{role.value}-user" for role in Role}
    await asyncio.gather(
        *(credentials.create_user(db, name, role, PASSWORD) for role, name in names.items())
    )
    return names


@pytest.fixture
async def keys(db: AsyncDatabase[Document]) -> dict[Role, str]:
    """One API key per role; returns role -> plaintext key."""
    out = {}
    for role in Role:
        _, key = await credentials.create_api_key(db, f"partner-{role.value}", role)
        out[role] = key
    return out


async def login(api: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await api.post("/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return str(body["access_token"])


def assert_401(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(role: str = "admin", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "mallory", "role": role, "iss": JWT_ISSUER, "iat": now, "exp": now + 600} | extra


# --- token issuance ------------------------------------------------------------------------


async def test_token_is_hs256_with_exp_sub_and_role(
    api: httpx.AsyncClient, users: dict[Role, str]
) -> None:
    response = await api.post(
        "/v1/auth/token",
        data={"username": users[Role.predictor], "password": PASSWORD, "grant_type": "password"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    token = body["access_token"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer=JWT_ISSUER)
    assert decoded["sub"] == users[Role.predictor]
    assert decoded["role"] == "predictor"
    assert decoded["exp"] - decoded["iat"] == 30 * 60


async def test_bad_password_and_unknown_user_get_the_same_401(
    api: httpx.AsyncClient, users: dict[Role, str]
) -> None:
    wrong = await api.post(
        "/v1/auth/token", data={"username": users[Role.viewer], "password": "not the password"}
    )
    unknown = await api.post(
        "/v1/auth/token", data={"username": "nobody-here", "password": PASSWORD}
    )
    assert assert_401(wrong)["detail"] == assert_401(unknown)["detail"]


async def test_token_endpoint_validates_its_form(api: httpx.AsyncClient) -> None:
    body = assert_problem(await api.post("/v1/auth/token", data={"username": "x"}), 422)
    assert any(e["loc"][-1] == "password" for e in body["errors"])


async def test_passwords_are_stored_as_argon2_hashes(
    db: AsyncDatabase[Document], users: dict[Role, str]
) -> None:
    doc = await db["users"].find_one({"_id": users[Role.viewer]})
    assert doc is not None
    assert doc["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in json.dumps(doc, default=str)


# --- the matrix of rejected credentials ----------------------------------------------------


async def test_no_credentials(api: httpx.AsyncClient) -> None:
    body = assert_401(await api.get("/v1/auth/me"))
    assert "X-API-Key" in body["detail"]


async def test_non_bearer_authorization_scheme(api: httpx.AsyncClient) -> None:
    assert_401(await api.get("/v1/auth/me", headers={"Authorization": "Basic YTpi"}))


@pytest.mark.parametrize(
    "key",
    [
        "wrong",
        "tak_000000000000_" + "A" * 43,  # well formed, unknown id
        ADMIN_KEY + "x",
        ADMIN_KEY[:-1],
        "x" * 5000,
    ],
)
async def test_wrong_api_key(api: httpx.AsyncClient, key: str) -> None:
    assert_401(await api.get("/v1/auth/me", headers=api_key(key)))


async def test_known_key_id_with_wrong_secret(
    api: httpx.AsyncClient, keys: dict[Role, str]
) -> None:
    real = keys[Role.admin]
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    assert_401(await api.get("/v1/auth/me", headers=api_key(forged)))


async def test_revoked_key(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], keys: dict[Role, str]
) -> None:
    key = keys[Role.viewer]
    assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
    key_id = credentials.parse_api_key(key)
    assert key_id is not None
    await credentials.revoke_api_key(db, key_id)
    assert_401(await api.get("/v1/auth/me", headers=api_key(key)))


async def test_revocation_lands_once_the_cache_entry_is_refreshed(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """With caching on, a revoked key works until its cache entry expires; the first call
    after that is still answered from the entry while a refresh reads the revocation, and
    from then on the key is refused."""
    cached = security_settings(settings, api_key_cache_seconds=0.5)
    record, key = await credentials.create_api_key(db, "cached", Role.viewer)
    async with serve(make_app(cached)) as api:
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        await credentials.revoke_api_key(db, record.key_id)
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        await asyncio.sleep(0.6)
        statuses = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and 401 not in statuses:
            statuses.append((await api.get("/v1/auth/me", headers=api_key(key))).status_code)
            await asyncio.sleep(0.05)
        assert statuses[-1] == 401 and set(statuses) <= {200, 401}, statuses
        assert_401(await api.get("/v1/auth/me", headers=api_key(key)))


async def test_api_keys_are_stored_hashed(
    db: AsyncDatabase[Document], keys: dict[Role, str]
) -> None:
    stored = json.dumps([d async for d in db["api_keys"].find({})], default=str)
    for key in keys.values():
        assert key not in stored
        assert credentials.hash_api_key(key) in stored


async def test_expired_token(api: httpx.AsyncClient) -> None:
    past = int(time.time()) - 3600
    token = jwt.encode(claims(iat=past - 60, exp=past), JWT_SECRET, algorithm="HS256")
    body = assert_401(await api.get("/v1/auth/me", headers=bearer(token)))
    assert "expired" in body["detail"]
    assert (
        'error="invalid_token"'
        in (await api.get("/v1/auth/me", headers=bearer(token))).headers["www-authenticate"]
    )


async def test_forged_signature(api: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), "some-other-secret-of-sufficient-length!!", algorithm="HS256")
    assert_401(await api.get("/v1/auth/me", headers=bearer(token)))


async def test_tampered_payload(api: httpx.AsyncClient, users: dict[Role, str]) -> None:
    """A genuine viewer token whose payload is edited to say admin fails verification."""
    header, _, signature = (await login(api, users[Role.viewer])).split(".")
    payload = b64(claims(sub=users[Role.viewer]))
    assert_401(await api.get("/v1/auth/me", headers=bearer(f"{header}.{payload}.{signature}")))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none(api: httpx.AsyncClient, alg: str) -> None:
    unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."
    assert_401(await api.get("/v1/auth/me", headers=bearer(unsigned)))


async def test_other_algorithms_are_refused(api: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), JWT_SECRET, algorithm="HS512")
    assert_401(await api.get("/v1/auth/me", headers=bearer(token)))


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "...", "eyJ.eyJ.sig", "Bearer", "\u00e9t\u00e9", "x" * 5000],
)
async def test_garbage_token(api: httpx.AsyncClient, token: str) -> None:
    response = await api.get("/v1/auth/me", headers={b"Authorization": f"Bearer {token}".encode()})
    assert_401(response)


@pytest.mark.parametrize(
    "bad_claims",
    [
        claims(role="superuser"),
        {k: v for k, v in claims().items() if k != "role"},
        {k: v for k, v in claims().items() if k != "exp"},
        {k: v for k, v in claims().items() if k != "sub"},
        claims(iss="someone-else"),
    ],
    ids=["unknown-role", "no-role", "no-exp", "no-sub", "wrong-issuer"],
)
async def test_signed_tokens_with_bad_claims(
    api: httpx.AsyncClient, bad_claims: dict[str, Any]
) -> None:
    token = jwt.encode(bad_claims, JWT_SECRET, algorithm="HS256")
    assert_401(await api.get("/v1/auth/me", headers=bearer(token)))


# --- roles ---------------------------------------------------------------------------------

ALLOWED = {
    Role.viewer: {Role.viewer},
    Role.predictor: {Role.viewer, Role.predictor},
    Role.admin: {Role.viewer, Role.predictor, Role.admin},
}


@pytest.mark.parametrize("caller", list(Role))
async def test_role_matrix_with_tokens(
    api: httpx.AsyncClient, users: dict[Role, str], caller: Role
) -> None:
    headers = bearer(await login(api, users[caller]))
    me = (await api.get("/v1/auth/me", headers=headers)).json()
    assert (me["subject"], me["role"], me["method"]) == (users[caller], caller.value, "bearer")
    for needed in Role:
        response = await api.get(f"{PROBE_PREFIX}/{needed.value}", headers=headers)
        if needed in ALLOWED[caller]:
            assert response.status_code == 200, (caller, needed)
        else:
            body = assert_problem(response, 403)
            assert needed.value in body["detail"]


@pytest.mark.parametrize("caller", list(Role))
async def test_role_matrix_with_api_keys(
    api: httpx.AsyncClient, keys: dict[Role, str], caller: Role
) -> None:
    headers = api_key(keys[caller])
    me = (await api.get("/v1/auth/me", headers=headers)).json()
    assert (me["role"], me["method"]) == (caller.value, "api_key")
    assert me["key_id"] == credentials.parse_api_key(keys[caller])
    for needed in Role:
        response = await api.get(f"{PROBE_PREFIX}/{needed.value}", headers=headers)
        expected = 200 if needed in ALLOWED[caller] else 403
        assert response.status_code == expected, (caller, needed)


async def test_admin_key_from_environment_is_admin(api: httpx.AsyncClient) -> None:
    me = (await api.get("/v1/auth/me", headers=api_key(ADMIN_KEY))).json()
    assert me == {"subject": "admin-key", "role": "admin", "method": "admin_key", "key_id": None}
    for role in Role:
        response = await api.get(f"{PROBE_PREFIX}/{role.value}", headers=api_key(ADMIN_KEY))
        assert response.status_code == 200


async def test_no_admin_key_configured_means_none_accepted(settings: Settings) -> None:
    async with serve(make_app(security_settings(settings, admin_api_key=None))) as api:
        assert_401(await api.get("/v1/auth/me", headers=api_key(ADMIN_KEY)))
        assert_401(await api.get("/v1/auth/me", headers=api_key("")))


async def test_api_key_takes_precedence_over_bearer(
    api: httpx.AsyncClient, users: dict[Role, str], keys: dict[Role, str]
) -> None:
    headers = bearer(await login(api, users[Role.admin])) | api_key(keys[Role.viewer])
    assert (await api.get("/v1/auth/me", headers=headers)).json()["role"] == "viewer"


# --- what is public, what is not -----------------------------------------------------------


async def test_public_endpoints_need_no_credentials(api: httpx.AsyncClient) -> None:
    for path in ("/health", "/metrics", "/openapi.json", "/docs"):
        assert (await api.get(path)).status_code == 200, path
    # /ready answers 503 while no model is trained; what matters here is that it answers.
    ready = await api.get("/ready")
    assert ready.status_code in (200, 503) and ready.json()["checks"]["database"] == "ok"


async def test_every_other_operation_requires_credentials(sec_settings: Settings) -> None:
    """Walks every operation in the real app's OpenAPI, including feature routers added later:
    anything not in the public list must declare a security requirement and answer 401
    without credentials. Catches an `include_router` that forgot `**protected(role)`."""
    async with serve(make_app(sec_settings, probes=False)) as api:
        spec = (await api.get("/openapi.json")).json()
        checked = []
        for template, item in spec["paths"].items():
            if template in PUBLIC_PATHS:
                continue
            # A value each parameter's route accepts (dashboard ids are routed only as 24 hex
            # digits), so the request reaches the route and its credential check.
            path = re.sub(
                r"\{([^}]+)\}",
                lambda m: "0" * 24 if m.group(1) == "dashboard_id" else "1",
                template,
            )
            for method, operation in item.items():
                where = f"{method.upper()} {template}"
                assert operation.get("security"), f"{where} declares no security"
                response = await api.request(method.upper(), path)
                assert response.status_code == 401, f"{where} is not protected"
                checked.append(where)
    assert "GET /v1/auth/me" in checked


async def test_openapi_declares_both_security_schemes(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schemes["ApiKey"]["description"],
    }
    assert schemes["OAuth2Password"]["flows"]["password"]["tokenUrl"] == "/v1/auth/token"
    me = spec["paths"]["/v1/auth/me"]["get"]
    assert {"OAuth2Password": []} in me["security"] and {"ApiKey": []} in me["security"]
    probe = spec["paths"][f"{PROBE_PREFIX}/admin"]["get"]
    assert {"401", "403", "429"} <= set(probe["responses"])
    assert "security" not in spec["paths"]["/health"]["get"]


# --- production settings -------------------------------------------------------------------


@pytest.mark.parametrize("secret", ["", "change-me", "dev-secret", "short-but-not-placeholder"])
def test_production_refuses_weak_jwt_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(app_env="production", jwt_secret=secret)


def test_production_refuses_short_admin_key() -> None:
    with pytest.raises(ValidationError, match="ADMIN_API_KEY"):
        Settings(app_env="production", jwt_secret=JWT_SECRET, admin_api_key="admin")
    assert Settings(app_env="production", jwt_secret=JWT_SECRET, admin_api_key=ADMIN_KEY)


@pytest.mark.parametrize("app_env", ["development", "production"])
@pytest.mark.parametrize("secret", ["dev-secret", "change-me", " Dev-Secret ", "supersecret"])
def test_placeholder_jwt_secret_is_refused_outside_tests(app_env: str, secret: str) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(app_env=app_env, jwt_secret=secret)
    assert Settings(app_env="test", jwt_secret=secret).jwt_secret == secret


def test_unset_jwt_secret_is_a_random_key_per_process() -> None:
    first, second = Settings(), Settings()
    assert first.jwt_secret != second.jwt_secret
    assert len(first.jwt_secret) >= 32 and first.jwt_secret not in PLACEHOLDER_SECRETS
    assert first.jwt_secret_is_ephemeral
    assert not Settings(jwt_secret=JWT_SECRET).jwt_secret_is_ephemeral


async def test_tokens_signed_with_the_published_secret_are_refused(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The README used to print the development fallback key; a service started without
    JWT_SECRET must not accept tokens signed with it, and says that its key is temporary."""
    minted = jwt.encode(claims(), "dev-secret", algorithm="HS256")
    with caplog.at_level(logging.WARNING, logger="app"):
        async with serve(make_app(settings)) as api:
            assert_401(await api.get("/v1/auth/me", headers=bearer(minted)))
    assert any("JWT_SECRET is not set" in r.getMessage() for r in caplog.records)


# --- the command line ----------------------------------------------------------------------


async def test_cli_users_and_keys(
    sec_settings: Settings, mongodb_uri: str, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`users create`, `keys create|list|revoke` against the real database, then the created
    credentials are used against the service."""
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: keep each row on one line
    get_settings.cache_clear()
    runner = CliRunner()

    async def cli(*args: str) -> str:
        # Each command runs its own event loop (asyncio.run), so keep it off this one.
        result = await asyncio.to_thread(runner.invoke, cli_app, list(args))
        assert result.exit_code == 0, result.output
        return result.stdout

    try:
        await cli("users", "create", "carol", "--role", "predictor", "--password", PASSWORD)
        duplicate = await asyncio.to_thread(
            runner.invoke, cli_app, ["users", "create", "carol", "--password", PASSWORD]
        )
        assert duplicate.exit_code == 1 and "already exists" in duplicate.output
        key = (await cli("keys", "create", "--name", "acme", "--role", "viewer")).strip()
        key_id = credentials.parse_api_key(key)
        assert key_id is not None
        listing = await cli("keys", "list")
        assert key_id in listing and "active" in listing and key not in listing

        async with serve(make_app(sec_settings)) as api:
            token = await login(api, "carol")
            probe = await api.get(f"{PROBE_PREFIX}/predictor", headers=bearer(token))
            assert probe.status_code == 200
            assert (await api.get("/v1/auth/me", headers=api_key(key))).json()["role"] == "viewer"
            await cli("keys", "revoke", key_id)
            assert "revoked" in await cli("keys", "list")
            assert_401(await api.get("/v1/auth/me", headers=api_key(key)))
        unknown = await asyncio.to_thread(runner.invoke, cli_app, ["keys", "revoke", "nope"])
        assert unknown.exit_code == 1
    finally:
        get_settings.cache_clear()
