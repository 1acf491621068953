"""User and API key administration over HTTP (`/v1/users`, `/v1/keys`) and on the command line,
against the real local database: answers, errors, and that no secret or hash ever comes back
except a new key, once."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.db import Document
from app.security import Role
from app.services import credentials
from app.settings import Settings, get_settings
from tests.security_support import ADMIN_KEY, api_key, bearer, make_app, security_settings, serve
from tests.support import assert_problem

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "another long passphrase 77"
ADMIN = api_key(ADMIN_KEY)


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(security_settings(settings))) as client:
        yield client


async def test_users_over_http(api: httpx.AsyncClient, db: AsyncDatabase[Document]) -> None:
    created = await api.post(
        "/v1/users",
        json={"username": "alice", "role": "predictor", "password": PASSWORD},
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["username"] == "alice" and body["role"] == "predictor"
    assert body["disabled"] is False and body["disabled_at"] is None
    changed_at = datetime.fromisoformat(body["password_changed_at"])
    expires_at = datetime.fromisoformat(body["password_expires_at"])
    assert expires_at - changed_at == timedelta(days=90)
    assert set(body) == {
        "username",
        "role",
        "created_at",
        "password_changed_at",
        "password_expires_at",
        "disabled",
        "disabled_at",
    }
    duplicate = await api.post(
        "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=ADMIN
    )
    assert "already exists" in assert_problem(duplicate, 409)["detail"]
    for bad in (
        {"username": "-starts-with-dash", "password": PASSWORD},
        {"username": "bob", "password": PASSWORD, "role": "root"},
        {"username": "bob", "password": PASSWORD, "extra": 1},
        {"username": "bob"},
    ):
        assert_problem(await api.post("/v1/users", json=bad, headers=ADMIN), 422)
    assert (await api.get("/v1/users/alice", headers=ADMIN)).json()["role"] == "predictor"
    assert (
        "not found"
        in assert_problem(await api.get("/v1/users/nobody", headers=ADMIN), 404)["detail"]
    )
    listing = (await api.get("/v1/users", headers=ADMIN)).json()["items"]
    assert [u["username"] for u in listing] == ["alice"]

    token = bearer(
        (await api.post("/v1/auth/token", data={"username": "alice", "password": PASSWORD})).json()[
            "access_token"
        ]
    )
    promoted = await api.patch("/v1/users/alice", json={"role": "admin"}, headers=ADMIN)
    assert promoted.json()["role"] == "admin"
    assert_problem(await api.get("/v1/auth/me", headers=token), 401)  # carried the old role
    assert_problem(await api.patch("/v1/users/nobody", json={}, headers=ADMIN), 404)

    reset = await api.post(
        "/v1/users/alice/password", json={"password": OTHER_PASSWORD}, headers=ADMIN
    )
    assert reset.status_code == 200 and "password" not in reset.json()
    weak = await api.post("/v1/users/alice/password", json={"password": "alice"}, headers=ADMIN)
    assert_problem(weak, 400)
    assert_problem(
        await api.post("/v1/auth/token", data={"username": "alice", "password": PASSWORD}), 401
    )
    revoked = await api.post("/v1/users/alice/revoke-tokens", headers=ADMIN)
    assert revoked.status_code == 200
    assert_problem(await api.post("/v1/users/nobody/revoke-tokens", headers=ADMIN), 404)

    assert (await api.delete("/v1/users/alice", headers=ADMIN)).status_code == 204
    assert_problem(await api.delete("/v1/users/alice", headers=ADMIN), 404)
    assert await credentials.list_users(db) == []


async def test_admins_cannot_lock_themselves_out(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "root", Role.admin, PASSWORD)
    token = (
        await api.post("/v1/auth/token", data={"username": "root", "password": PASSWORD})
    ).json()["access_token"]
    me = bearer(token)
    for method, path, body in [
        ("PATCH", "/v1/users/root", {"role": "viewer"}),
        ("PATCH", "/v1/users/root", {"disabled": True}),
        ("DELETE", "/v1/users/root", None),
    ]:
        refused = await api.request(method, path, json=body, headers=me)
        assert "your own account" in assert_problem(refused, 409)["detail"]
    assert (await api.get("/v1/users/root", headers=me)).json()["role"] == "admin"


async def test_keys_over_http(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/v1/keys", json={"name": "acme", "role": "viewer", "expires_in": "90d"}, headers=ADMIN
    )
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    body = created.json()
    key, key_id = body["key"], body["key_id"]
    assert credentials.parse_api_key(key) == key_id and body["status"] == "active"
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(UTC) <= timedelta(days=90)
    assert body["last_used_at"] is None
    assert (await api.get("/v1/auth/me", headers=api_key(key))).json()["role"] == "viewer"

    shown = await api.get(f"/v1/keys/{key_id}", headers=ADMIN)
    assert "key" not in shown.json() and key not in shown.text
    listing = await api.get("/v1/keys", headers=ADMIN)
    assert [k["key_id"] for k in listing.json()["items"]] == [key_id]
    assert key not in listing.text and credentials.hash_api_key(key) not in listing.text

    never = await api.post("/v1/keys", json={"name": "forever"}, headers=ADMIN)
    assert never.json()["expires_at"] is None and never.json()["role"] == "viewer"
    for bad in ({"name": ""}, {"name": "x", "expires_in": "90 days"}, {"name": "x", "role": "?"}):
        assert_problem(await api.post("/v1/keys", json=bad, headers=ADMIN), 422)
    for bad in ({"name": "x", "expires_in": "0d"}, {"name": "x", "expires_in": "9999d"}):
        assert_problem(await api.post("/v1/keys", json=bad, headers=ADMIN), 400)

    rotated = await api.post(f"/v1/keys/{key_id}/rotate", json={"grace": "1h"}, headers=ADMIN)
    assert rotated.status_code == 200, rotated.text
    new_key = rotated.json()["key"]
    assert new_key != key and rotated.json()["key_id"] == key_id
    grace_end = datetime.fromisoformat(rotated.json()["previous_valid_until"])
    assert timedelta(minutes=59) < grace_end - datetime.now(UTC) <= timedelta(hours=1)
    for k in (key, new_key):
        assert (await api.get("/v1/auth/me", headers=api_key(k))).status_code == 200
    default = await api.post(f"/v1/keys/{key_id}/rotate", headers=ADMIN)  # no body: 24h
    assert default.status_code == 200
    assert_problem(await api.get("/v1/auth/me", headers=api_key(key)), 401)  # retired
    assert_problem(
        await api.post(f"/v1/keys/{key_id}/rotate", json={"grace": "31d"}, headers=ADMIN), 400
    )

    revoked = await api.post(f"/v1/keys/{key_id}/revoke", headers=ADMIN)
    assert revoked.json()["status"] == "revoked" and revoked.json()["revoked_at"]
    assert_problem(await api.get("/v1/auth/me", headers=api_key(default.json()["key"])), 401)
    assert_problem(await api.post(f"/v1/keys/{key_id}/rotate", headers=ADMIN), 409)

    assert (await api.delete(f"/v1/keys/{key_id}", headers=ADMIN)).status_code == 204
    for method, path in [
        ("GET", f"/v1/keys/{key_id}"),
        ("DELETE", f"/v1/keys/{key_id}"),
        ("POST", f"/v1/keys/{key_id}/revoke"),
        ("POST", f"/v1/keys/{key_id}/rotate"),
    ]:
        assert_problem(await api.request(method, path, headers=ADMIN), 404)
    assert_problem(await api.get("/v1/keys/not-an-id", headers=ADMIN), 422)


async def test_no_admin_answer_holds_a_secret_or_a_hash(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    """Everything the admin API answers, scanned for passwords, keys and hashes; the only key
    that appears is the one just created or rotated, in that one answer."""
    await api.post("/v1/users", json={"username": "zed", "password": PASSWORD}, headers=ADMIN)
    created = (await api.post("/v1/keys", json={"name": "k"}, headers=ADMIN)).json()
    rotated = (
        await api.post(f"/v1/keys/{created['key_id']}/rotate", json={"grace": "0m"}, headers=ADMIN)
    ).json()
    await api.post("/v1/users/zed/password", json={"password": OTHER_PASSWORD}, headers=ADMIN)
    stored = [d async for d in db["users"].find({})] + [d async for d in db["api_keys"].find({})]
    hashes = {d.get("password_hash") for d in stored} | {d.get("key_hash") for d in stored}
    hashes |= {d.get("previous_hash") for d in stored}
    secrets_ = {PASSWORD, OTHER_PASSWORD, created["key"], rotated["key"]} | (hashes - {None})
    answers = [
        await api.get("/v1/users", headers=ADMIN),
        await api.get("/v1/users/zed", headers=ADMIN),
        await api.get("/v1/keys", headers=ADMIN),
        await api.get(f"/v1/keys/{created['key_id']}", headers=ADMIN),
        await api.post(f"/v1/keys/{created['key_id']}/revoke", headers=ADMIN),
        await api.get("/v1/audit", headers=ADMIN),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        for secret in secrets_:
            assert str(secret) not in answer.text, answer.request.url
        assert "$argon2" not in answer.text


async def test_cli_account_lifecycle(
    settings: Settings,
    db: AsyncDatabase[Document],
    mongodb_uri: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`keys create --expires-in`, `keys rotate --grace`, `keys delete`, `users set-password`,
    `users revoke-tokens`, `users set-role`, `users disable|enable`, against the database the
    service uses."""
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("COLUMNS", "250")
    get_settings.cache_clear()
    runner = CliRunner()

    async def cli(*args: str, code: int = 0) -> str:
        result = await asyncio.to_thread(runner.invoke, cli_app, list(args))
        assert result.exit_code == code, result.output
        return result.stdout if code == 0 else result.output

    try:
        weak = await cli("users", "create", "pat", "--password", "password1234", code=1)
        assert "common" in weak
        await cli("users", "create", "pat", "--role", "viewer", "--password", PASSWORD)
        key = (await cli("keys", "create", "--name", "acme", "--expires-in", "90d")).strip()
        key_id = credentials.parse_api_key(key)
        assert key_id is not None
        record = await credentials.get_api_key(db, key_id)
        assert record.expires_at is not None
        assert timedelta(days=89) < record.expires_at - datetime.now(UTC) <= timedelta(days=90)
        assert "--expires-in" in await cli(
            "keys", "create", "--name", "x", "--expires-in", "soon", code=2
        )

        # The service reads the user on every request: the CLI is another process, whose
        # changes it would otherwise see within TOKEN_REVOCATION_CACHE_SECONDS.
        service = security_settings(settings, token_revocation_cache_seconds=0)
        async with serve(make_app(service)) as api:
            token = bearer(
                (
                    await api.post("/v1/auth/token", data={"username": "pat", "password": PASSWORD})
                ).json()["access_token"]
            )
            assert (await api.get("/v1/auth/me", headers=api_key(key))).status_code == 200
            listing = await cli("keys", "list")
            row = next(line for line in listing.splitlines() if key_id in line)
            assert "active" in row and re.search(r"\d{4}-\d{2}-\d{2}", row)
            assert key not in listing

            new_key = (await cli("keys", "rotate", key_id, "--grace", "0m")).strip()
            assert credentials.parse_api_key(new_key) == key_id and new_key != key
            assert_problem(await api.get("/v1/auth/me", headers=api_key(key)), 401)
            assert (await api.get("/v1/auth/me", headers=api_key(new_key))).status_code == 200
            await cli("keys", "delete", key_id)
            assert_problem(await api.get("/v1/auth/me", headers=api_key(new_key)), 401)
            await cli("keys", "delete", key_id, code=1)

            await cli("users", "revoke-tokens", "pat")
            assert_problem(await api.get("/v1/auth/me", headers=token), 401)
            await cli("users", "set-password", "pat", "--password", OTHER_PASSWORD)
            assert_problem(
                await api.post("/v1/auth/token", data={"username": "pat", "password": PASSWORD}),
                401,
            )
            await cli("users", "set-role", "pat", "predictor")
            await cli("users", "disable", "pat")
            assert "disabled" in await cli("users", "list")
            form = {"username": "pat", "password": OTHER_PASSWORD}
            assert_problem(await api.post("/v1/auth/token", data=form), 401)
            await cli("users", "enable", "pat")
            again = await api.post("/v1/auth/token", data=form)
            me = await api.get("/v1/auth/me", headers=bearer(again.json()["access_token"]))
            assert me.json()["role"] == "predictor"
            await cli("users", "revoke-tokens", "nobody", code=1)
        stored = json.dumps([d async for d in db["audit"].find({})], default=str)
        assert "cli:" in stored
        for secret in (PASSWORD, OTHER_PASSWORD, key, new_key):
            assert secret not in stored
    finally:
        get_settings.cache_clear()
