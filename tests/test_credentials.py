"""Credential lifecycle against the real local database: API key expiry, last use and rotation;
password change, maximum age and policy; several signing keys; per-user token revocation."""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources

import httpx
import pytest
from jose import jwt
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase

from app.authn import JWT_ISSUER, issue_token
from app.db import Document
from app.security import Role
from app.services import credentials
from app.services.movies_query import decode_cursor, encode_cursor
from app.services.password_policy import WeakPasswordError, check_password, common_passwords
from app.settings import Settings, derived_kid
from tests.security_support import (
    ADMIN_KEY,
    JWT_SECRET,
    api_key,
    bearer,
    make_app,
    security_settings,
    serve,
)
from tests.support import assert_problem

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 42"
OLD_SECRET = "old-signing-secret-0123456789abcdef012345"
NEW_SECRET = "new-signing-secret-0123456789abcdef012345"


async def login(api: httpx.AsyncClient, username: str, password: str = PASSWORD) -> str:
    response = await api.post("/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


async def wait_for(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Poll an async predicate until it holds (background writes land within milliseconds)."""
    deadline = time.monotonic() + seconds
    while True:
        if await check():
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# --- the password policy -------------------------------------------------------------------


def test_the_common_password_list_ships_with_the_package() -> None:
    data = resources.files("app").joinpath("data", "common-passwords.txt.gz").read_bytes()
    words = gzip.decompress(data).decode().split()
    assert len(words) > 10_000 and words[0] == "password"
    assert words == [w.casefold() for w in words] and len(set(words)) == len(words)
    assert common_passwords() == frozenset(words)
    assert resources.files("app").joinpath("data", "common-passwords.SOURCE.md").is_file()


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-pw1", "at least 12"),
        ("PASSWORD1234", "too common"),  # case-insensitive
        ("Password2024!", "too common"),  # trailing digits and punctuation do not help
        ("baseball1234", "too common"),
        ("Alice.Liddell", "username"),  # the username, any case
    ],
)
def test_the_policy_refuses_weak_passwords(password: str, reason: str) -> None:
    with pytest.raises(WeakPasswordError, match=reason):
        check_password("alice.liddell", password, 12)


def test_the_policy_accepts_a_long_uncommon_password() -> None:
    check_password("alice", PASSWORD, 12)
    with pytest.raises(WeakPasswordError, match="at least 40"):
        check_password("alice", PASSWORD, 40)


async def test_weak_passwords_are_refused_wherever_one_is_set(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    with pytest.raises(WeakPasswordError):
        await credentials.create_user(db, "bob", Role.viewer, "qwertyuiop123")
    assert await credentials.list_users(db) == []
    async with serve(make_app(security_settings(settings))) as api:
        refused = await api.post(
            "/v1/users",
            json={"username": "bob", "password": "bob"},
            headers=api_key(ADMIN_KEY),
        )
        assert "at least 12" in assert_problem(refused, 400)["detail"]
        await credentials.create_user(db, "bob", Role.viewer, PASSWORD)
        token = await login(api, "bob")
        weak = await api.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": "iloveyou1234"},
            headers=bearer(token),
        )
        assert "common" in assert_problem(weak, 400)["detail"]
        same = await api.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": PASSWORD},
            headers=bearer(token),
        )
        assert "differ" in assert_problem(same, 400)["detail"]
        assert (await api.get("/v1/auth/me", headers=bearer(token))).status_code == 200


# --- password change and maximum age -------------------------------------------------------


async def test_changing_ones_password_revokes_old_tokens(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "carol", Role.viewer, PASSWORD)
    async with serve(make_app(security_settings(settings))) as api:
        old_token = await login(api, "carol")
        wrong = await api.post(
            "/v1/auth/password",
            json={"current_password": "not the password", "new_password": NEW_PASSWORD},
            headers=bearer(old_token),
        )
        assert "current password" in assert_problem(wrong, 400)["detail"]
        changed = await api.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(old_token),
        )
        assert changed.status_code == 200, changed.text
        assert changed.headers["cache-control"] == "no-store"
        new_token = changed.json()["access_token"]
        assert (await api.get("/v1/auth/me", headers=bearer(new_token))).status_code == 200
        revoked = await api.get("/v1/auth/me", headers=bearer(old_token))
        assert "revoked" in assert_problem(revoked, 401)["detail"]
        gone = await api.post("/v1/auth/token", data={"username": "carol", "password": PASSWORD})
        assert_problem(gone, 401)
        await login(api, "carol", NEW_PASSWORD)
        # Keys have no password to change.
        as_key = await api.post(
            "/v1/auth/password",
            json={"current_password": "x", "new_password": NEW_PASSWORD},
            headers=api_key(ADMIN_KEY),
        )
        assert "only users" in assert_problem(as_key, 403)["detail"]
    user = await credentials.get_user(db, "carol")
    assert datetime.now(UTC) - user.password_changed_at < timedelta(minutes=1)


async def test_an_expired_password_only_lets_the_user_change_it(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "dave", Role.admin, PASSWORD)
    await db["users"].update_one(
        {"_id": "dave"}, {"$set": {"password_changed_at": datetime.now(UTC) - timedelta(days=91)}}
    )
    app = make_app(security_settings(settings, password_max_age_days=90))
    async with serve(app) as api:
        response = await api.post("/v1/auth/token", data={"username": "dave", "password": PASSWORD})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["password_change_required"] is True and body["expires_in"] <= 15 * 60
        limited = bearer(body["access_token"])
        claims = jwt.get_unverified_claims(body["access_token"])
        assert claims["scope"] == "password_change"
        for method, path in [
            ("GET", "/v1/auth/me"),
            ("GET", "/v1/analytics/summary"),
            ("GET", "/v1/users"),
            ("POST", "/v1/keys"),
        ]:
            refused = await api.request(method, path, headers=limited, json={"name": "x"})
            detail = assert_problem(refused, 403)["detail"]
            assert "password has expired" in detail and "/v1/auth/password" in detail, path
        # The readiness details are for admins; a limited token is not one.
        public = (await api.get("/ready")).json()["checks"]
        assert (await api.get("/ready", headers=limited)).json()["checks"] == public
        changed = await api.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=limited,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["password_change_required"] is False
        full = bearer(changed.json()["access_token"])
        assert (await api.get("/v1/users", headers=full)).status_code == 200
        assert_problem(await api.get("/v1/auth/me", headers=limited), 401)  # used up
        again = await api.post(
            "/v1/auth/token", data={"username": "dave", "password": NEW_PASSWORD}
        )
        assert again.json()["password_change_required"] is False


async def test_passwords_never_expire_with_max_age_zero(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "erin", Role.viewer, PASSWORD)
    await db["users"].update_one(
        {"_id": "erin"},
        {"$set": {"password_changed_at": datetime.now(UTC) - timedelta(days=3650)}},
    )
    async with serve(make_app(security_settings(settings, password_max_age_days=0))) as api:
        response = await api.post("/v1/auth/token", data={"username": "erin", "password": PASSWORD})
        assert response.json()["password_change_required"] is False


# --- API keys: expiry, last use, rotation --------------------------------------------------


async def test_a_key_is_refused_once_it_expires(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    record, key = await credentials.create_api_key(
        db, "short-lived", Role.viewer, expires_in=timedelta(days=90)
    )
    assert record.expires_at is not None
    assert timedelta(days=89) < record.expires_at - datetime.now(UTC) <= timedelta(days=90)
    assert await credentials.find_api_key(db, key) is not None
    later = record.expires_at + timedelta(seconds=1)
    assert await credentials.find_api_key(db, key, now=later) is None
    async with serve(make_app(security_settings(settings))) as api:
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        await db["api_keys"].update_one(
            {"_id": record.key_id},
            {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
        )
        assert_problem(await api.get("/v1/auth/me", headers=api_key(key)), 401)
        listed = (await api.get(f"/v1/keys/{record.key_id}", headers=api_key(ADMIN_KEY))).json()
        assert listed["status"] == "expired"


async def test_an_expiry_ends_a_cached_key_too(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """A verified key is cached, but its expiry is checked on every use, cached or not."""
    _, key = await credentials.create_api_key(
        db, "cached", Role.viewer, expires_in=timedelta(minutes=1)
    )
    app = make_app(security_settings(settings, api_key_cache_seconds=600))
    async with serve(app) as api:
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        authenticator = app.state.app_state.authenticator
        cached, fresh_until = authenticator._cache[key]
        # As the cache entry looks once the expiry has passed: same record, still fresh.
        passed = datetime.now(UTC) - timedelta(seconds=1)
        authenticator._cache[key] = (credentials.VerifiedKey(cached.record, passed), fresh_until)
        assert_problem(await api.get("/v1/auth/me", headers=api_key(key)), 401)


async def test_last_used_is_written_in_the_background_at_most_once_a_minute(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    record, key = await credentials.create_api_key(db, "partner", Role.viewer)
    assert record.last_used_at is None

    async def last_used() -> datetime | None:
        return (await credentials.get_api_key(db, record.key_id)).last_used_at

    async def written() -> bool:
        return await last_used() is not None

    app = make_app(security_settings(settings))
    async with serve(app) as api:
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        await wait_for(written)
        first = await last_used()
        assert first is not None and datetime.now(UTC) - first < timedelta(seconds=30)
        for _ in range(5):
            assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
        await asyncio.sleep(0.3)
        assert await last_used() == first  # within the minute: not written again
        app.state.app_state.authenticator.last_used_interval = 0.0  # as if a minute passed
        await asyncio.sleep(0.01)
        assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200

        async def rewritten() -> bool:
            again = await last_used()
            return again is not None and again > first

        await wait_for(rewritten)


async def test_rotation_keeps_the_old_secret_for_the_grace_period_only(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    record, first = await credentials.create_api_key(db, "partner", Role.predictor)
    rotated, second = await credentials.rotate_api_key(db, record.key_id, timedelta(hours=24))
    assert second != first and credentials.parse_api_key(second) == record.key_id
    assert rotated.previous_valid_until is not None
    assert (rotated.name, rotated.role) == (record.name, record.role)
    for key in (first, second):
        found = await credentials.find_api_key(db, key)
        assert found is not None and found.record.key_id == record.key_id
    after_grace = rotated.previous_valid_until + timedelta(seconds=1)
    assert await credentials.find_api_key(db, first, now=after_grace) is None
    assert await credentials.find_api_key(db, second, now=after_grace) is not None
    # A second rotation retires the first secret at once, whatever its grace was.
    _, third = await credentials.rotate_api_key(db, record.key_id, timedelta(0))
    assert await credentials.find_api_key(db, first) is None
    assert await credentials.find_api_key(db, second) is None  # grace 0
    assert await credentials.find_api_key(db, third) is not None
    stored = str(await db["api_keys"].find_one({"_id": record.key_id}))
    assert first not in stored and second not in stored and third not in stored
    async with serve(make_app(security_settings(settings))) as api:
        assert (await api.get("/v1/auth/me", headers=api_key(third))).status_code == 200
        assert_problem(await api.get("/v1/auth/me", headers=api_key(second)), 401)
        await credentials.revoke_api_key(db, record.key_id)
        refused = await api.post(
            f"/v1/keys/{record.key_id}/rotate", json={}, headers=api_key(ADMIN_KEY)
        )
        assert "revoked" in assert_problem(refused, 409)["detail"]


# --- signing keys --------------------------------------------------------------------------


def test_jwt_secrets_forms() -> None:
    comma = Settings(app_env="production", jwt_secrets=f"k2:{NEW_SECRET},k1:{OLD_SECRET}")
    assert [(k.kid, k.secret) for k in comma.signing_keys] == [
        ("k2", NEW_SECRET),
        ("k1", OLD_SECRET),
    ]
    as_json = Settings(jwt_secrets=f'{{"k2": "{NEW_SECRET}", "k1": "{OLD_SECRET}"}}')
    assert as_json.signing_keys == comma.signing_keys
    bare = Settings(jwt_secrets=f"k2:{NEW_SECRET},{OLD_SECRET}")
    assert bare.signing_keys[1].kid == derived_kid(OLD_SECRET)
    single = Settings(jwt_secret=OLD_SECRET)
    assert single.signing_keys[0].kid == derived_kid(OLD_SECRET)
    assert OLD_SECRET not in derived_kid(OLD_SECRET)
    assert not comma.jwt_secret_is_ephemeral


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"jwt_secrets": "k1:" + NEW_SECRET + ",k1:" + OLD_SECRET}, "unique"),
        ({"jwt_secrets": "bad kid:" + NEW_SECRET}, "kid"),
        ({"jwt_secrets": '{"k1": 5}'}, "JSON"),
        ({"jwt_secrets": "{not json"}, "JSON"),
        ({"jwt_secrets": "k1:" + NEW_SECRET, "jwt_secret": OLD_SECRET}, "not among"),
        ({"jwt_secrets": f"k2:{NEW_SECRET},k1:change-me", "app_env": "production"}, "32"),
        ({"jwt_secrets": f"k2:{NEW_SECRET},k1:short", "app_env": "production"}, "32"),
        ({"jwt_secrets": f"k2:{NEW_SECRET},k1:dev-secret"}, "placeholder"),
    ],
)
def test_bad_jwt_secrets_are_refused(values: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**values)  # type: ignore[arg-type]


async def test_rotating_the_signing_key_logs_nobody_out(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """Tokens from a service signing with JWT_SECRET alone keep working once JWT_SECRETS
    lists a new key first and the old one after it; new tokens carry the new key's id; once
    the old key is dropped, its tokens stop."""
    await credentials.create_user(db, "frank", Role.viewer, PASSWORD)
    before = security_settings(settings, jwt_secret=OLD_SECRET)
    async with serve(make_app(before)) as api:
        old_token = await login(api, "frank")
    assert jwt.get_unverified_header(old_token)["kid"] == derived_kid(OLD_SECRET)
    legacy = jwt.encode(  # a token from before key ids and token versions
        {
            "sub": "frank",
            "role": "viewer",
            "iss": JWT_ISSUER,
            "iat": int(time.time()),
            "exp": int(time.time()) + 600,
        },
        OLD_SECRET,
        algorithm="HS256",
    )
    rotated = security_settings(
        settings, jwt_secret="", jwt_secrets=f"new:{NEW_SECRET},{OLD_SECRET}"
    )
    async with serve(make_app(rotated)) as api:
        assert (await api.get("/v1/auth/me", headers=bearer(old_token))).status_code == 200
        new_token = await login(api, "frank")
        assert jwt.get_unverified_header(new_token)["kid"] == "new"
        jwt.decode(new_token, NEW_SECRET, algorithms=["HS256"], issuer=JWT_ISSUER)
        assert (await api.get("/v1/auth/me", headers=bearer(new_token))).status_code == 200
        # The legacy token names no key and carries version 0: signed by a listed key, but
        # revoked (the account's version started above it).
        assert (
            "revoked"
            in assert_problem(await api.get("/v1/auth/me", headers=bearer(legacy)), 401)["detail"]
        )
        unknown_kid = jwt.encode(
            jwt.get_unverified_claims(new_token),
            NEW_SECRET,
            algorithm="HS256",
            headers={"kid": "nope"},
        )
        assert_problem(await api.get("/v1/auth/me", headers=bearer(unknown_kid)), 401)
        wrong_kid = jwt.encode(
            jwt.get_unverified_claims(new_token),
            OLD_SECRET,  # the old key's signature under the new key's id
            algorithm="HS256",
            headers={"kid": "new"},
        )
        assert_problem(await api.get("/v1/auth/me", headers=bearer(wrong_kid)), 401)
    done = security_settings(settings, jwt_secret="", jwt_secrets=f"new:{NEW_SECRET}")
    async with serve(make_app(done)) as api:
        assert (await api.get("/v1/auth/me", headers=bearer(new_token))).status_code == 200
        assert_problem(await api.get("/v1/auth/me", headers=bearer(old_token)), 401)


def test_cursors_signed_before_a_key_rotation_still_verify() -> None:
    before = Settings(app_env="test", jwt_secret=OLD_SECRET)
    after = Settings(app_env="test", jwt_secrets=f"new:{NEW_SECRET},{OLD_SECRET}")
    cursor = encode_cursor(42, 1.5, "fp", before.cursor_key)
    assert decode_cursor(cursor, "fp", "popularity", after.cursor_keys) == (1.5, 42)
    assert after.cursor_key != before.cursor_key  # new cursors: the new key
    gone = Settings(app_env="test", jwt_secrets=f"new:{NEW_SECRET}")
    with pytest.raises(Exception, match="cursor"):
        decode_cursor(cursor, "fp", "popularity", gone.cursor_keys)
    # A cursor key is derived from, never equal to, the token key.
    assert OLD_SECRET.encode() not in after.cursor_keys


# --- per-user token revocation -------------------------------------------------------------


async def test_revoking_a_users_tokens_lands_within_the_cache_time(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """Two processes on one database: the one that revokes refuses the token at once, the
    other within TOKEN_REVOCATION_CACHE_SECONDS. A fresh login works on both at once."""
    user = await credentials.create_user(db, "gina", Role.viewer, PASSWORD)
    cache = 1.0
    here = make_app(security_settings(settings, token_revocation_cache_seconds=cache))
    there = make_app(security_settings(settings, token_revocation_cache_seconds=cache))
    async with serve(here) as a, serve(there) as b:
        token = await login(a, "gina")
        assert jwt.get_unverified_claims(token)["ver"] == user.token_version
        assert (await b.get("/v1/auth/me", headers=bearer(token))).status_code == 200
        revoked = await a.post("/v1/users/gina/revoke-tokens", headers=api_key(ADMIN_KEY))
        assert revoked.status_code == 200, revoked.text
        started = time.monotonic()
        assert_problem(await a.get("/v1/auth/me", headers=bearer(token)), 401)
        while (await b.get("/v1/auth/me", headers=bearer(token))).status_code == 200:
            assert time.monotonic() - started < cache + 2, "revocation never landed"
            await asyncio.sleep(0.05)
        fresh = await login(a, "gina")
        assert (await b.get("/v1/auth/me", headers=bearer(fresh))).status_code == 200
        assert (await a.get("/v1/auth/me", headers=bearer(fresh))).status_code == 200


async def test_a_newer_token_is_accepted_at_once_by_a_process_with_an_older_cache(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    """Process B caches a user's version for a minute; the user changes their password on A.
    B accepts A's new token at once (it is newer than what B knows, so B reads again), and from
    then on B refuses the old one."""
    await credentials.create_user(db, "hank", Role.viewer, PASSWORD)
    here = make_app(security_settings(settings))
    there = make_app(security_settings(settings, token_revocation_cache_seconds=60))
    async with serve(here) as a, serve(there) as b:
        old = await login(a, "hank")
        assert (await b.get("/v1/auth/me", headers=bearer(old))).status_code == 200
        changed = await a.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(old),
        )
        new = changed.json()["access_token"]
        assert (await b.get("/v1/auth/me", headers=bearer(new))).status_code == 200
        assert_problem(await b.get("/v1/auth/me", headers=bearer(old)), 401)


async def test_deleted_disabled_and_demoted_users_lose_their_tokens(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    for name in ("ivan", "judy", "kim"):
        await credentials.create_user(db, name, Role.predictor, PASSWORD)
    async with serve(make_app(security_settings(settings))) as api:
        tokens = {name: bearer(await login(api, name)) for name in ("ivan", "judy", "kim")}
        admin = api_key(ADMIN_KEY)
        assert (await api.delete("/v1/users/ivan", headers=admin)).status_code == 204
        assert (await api.patch("/v1/users/judy", json={"disabled": True}, headers=admin)).json()[
            "disabled"
        ] is True
        assert (await api.patch("/v1/users/kim", json={"role": "viewer"}, headers=admin)).json()[
            "role"
        ] == "viewer"
        for headers in tokens.values():
            assert_problem(await api.get("/v1/auth/me", headers=headers), 401)
        assert_problem(
            await api.post("/v1/auth/token", data={"username": "judy", "password": PASSWORD}),
            401,
        )
        kim = bearer(await login(api, "kim"))
        assert (await api.get("/v1/auth/me", headers=kim)).json()["role"] == "viewer"
        await api.patch("/v1/users/judy", json={"disabled": False}, headers=admin)
        await login(api, "judy")
        # Deleted and created again: the old account's tokens stay dead.
        await credentials.create_user(db, "ivan", Role.admin, PASSWORD)
        assert_problem(await api.get("/v1/auth/me", headers=tokens["ivan"]), 401)


async def test_a_token_for_a_user_who_never_existed_is_refused(
    settings: Settings,
) -> None:
    app_settings = security_settings(settings)
    token, _ = issue_token(app_settings, "nobody", Role.admin, version=10**15)
    async with serve(make_app(app_settings)) as api:
        assert (
            "revoked"
            in assert_problem(await api.get("/v1/auth/me", headers=bearer(token)), 401)["detail"]
        )


async def test_jwt_secret_alone_still_signs_and_verifies(settings: Settings) -> None:
    app_settings = security_settings(settings)
    assert app_settings.jwt_secret == JWT_SECRET and not app_settings.jwt_secrets
    token, _ = issue_token(app_settings, "x", Role.viewer)
    jwt.decode(token, JWT_SECRET, algorithms=["HS256"], issuer=JWT_ISSUER)
