"""The audit log against the real local database: what is recorded (logins, account and key
changes, password changes, token revocations, model switches, imports, ingests) with who,
when, from where and the outcome; that no secret ever enters it; that a failing audit write
never fails what it records; and `GET /v1/audit` / `tmdb-analytics audit` with filters and
signed cursors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.db import Document
from app.localdb import free_port
from app.security import Role
from app.services import audit, credentials
from app.settings import Settings, get_settings
from tests import ml_support
from tests.fake_tmdb import TOKEN as TMDB_TOKEN
from tests.fake_tmdb import FakeTmdb, catalogue
from tests.security_support import (
    ADMIN_KEY,
    JWT_SECRET,
    api_key,
    bearer,
    client_at,
    make_app,
    running,
    security_settings,
    serve,
)
from tests.support import assert_problem
from tests.test_csv_import import HEADER, _row
from training.cli import record_activations

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a different long passphrase 42"
ADMIN = api_key(ADMIN_KEY)
CLIENT_IP = "203.0.113.7"


def dropped() -> float:
    return sum(
        sample.value
        for metric in audit.DROPPED.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def entries(db: AsyncDatabase[Document], **where: Any) -> list[Document]:
    await audit.flush_all()
    return [d async for d in db["audit"].find(where).sort("_id", -1)]


def assert_no_secret(docs: list[Document], secrets_: set[str]) -> None:
    text = json.dumps(docs, default=str)
    for secret in secrets_:
        assert secret not in text, f"a secret entered the audit log: {secret[:6]}..."
    assert "$argon2" not in text


# --- record(): never raises, never blocks, drops are counted -------------------------------


def test_record_outside_an_event_loop_is_dropped_not_raised(db: AsyncDatabase[Document]) -> None:
    before = dropped()
    result = audit.record(db, action="test.sync", actor="cli:test")
    assert isinstance(result, audit._Settled) and result.value is False
    assert dropped() == before + 1


async def test_a_database_that_refuses_drops_the_entry_and_counts_it() -> None:
    dead: AsyncMongoClient[Document] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=200, connectTimeoutMS=200
    )
    try:
        before = dropped()
        started = asyncio.get_running_loop().time()
        pending = audit.record(dead["nowhere"], action="test.dead", actor="cli:test")
        assert asyncio.get_running_loop().time() - started < 0.05  # queued, not written inline
        assert await pending is False
        assert dropped() == before + 1
    finally:
        await audit.close_all()
        await dead.close()


async def test_a_bad_entry_is_dropped_and_the_writer_carries_on(
    db: AsyncDatabase[Document],
) -> None:
    bad = audit.record(db, action="test.bad", actor="cli:test", details={"x": object()})
    assert await bad is False
    good = audit.record(db, action="test.good", actor="cli:test", details={"n": 1})
    assert await good is True
    assert [d["action"] for d in await entries(db)] == ["test.good"]


async def test_secret_sounding_details_are_redacted(db: AsyncDatabase[Document]) -> None:
    await audit.record(
        db,
        action="test.redact",
        actor="cli:test",
        details={"password": PASSWORD, "api_key": "tak_x", "password_expired": True, "n": 2},
    )
    (doc,) = await entries(db)
    assert doc["details"] == {
        "password": "[redacted]",
        "api_key": "[redacted]",
        "password_expired": True,
        "n": 2,
    }


async def test_a_failing_audit_write_never_breaks_a_login(
    settings: Settings, db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every audit write is refused by the database (the same `_id` twice); logins, admin
    changes and a password change still succeed, and the loss is counted."""
    await credentials.create_user(db, "amy", Role.viewer, PASSWORD)
    await audit.record(db, action="test.first", actor="cli:test")
    taken = (await entries(db))[0]["_id"]
    monkeypatch.setattr(audit, "_new_id", lambda _at: taken)
    before = dropped()
    async with serve(make_app(security_settings(settings))) as api:
        ok = await api.post("/v1/auth/token", data={"username": "amy", "password": PASSWORD})
        assert ok.status_code == 200, ok.text
        assert_problem(
            await api.post("/v1/auth/token", data={"username": "amy", "password": "wrong!"}), 401
        )
        created = await api.post("/v1/keys", json={"name": "k"}, headers=ADMIN)
        assert created.status_code == 201
        changed = await api.post(
            "/v1/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=bearer(ok.json()["access_token"]),
        )
        assert changed.status_code == 200
        await audit.flush_all()
    assert dropped() >= before + 4
    assert len(await entries(db)) == 1


# --- what is recorded ----------------------------------------------------------------------


async def test_logins_and_account_changes_are_recorded_with_who_when_where(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await credentials.create_user(db, "root", Role.admin, PASSWORD)
    await credentials.create_user(db, "bea", Role.viewer, PASSWORD)
    started = datetime.now(UTC)
    app = make_app(security_settings(settings))
    secrets_ = {PASSWORD, NEW_PASSWORD}
    async with running(app) as live, client_at(live, CLIENT_IP) as api:
        # Logins: a wrong password, an unknown name (someone's password typed as the name),
        # and two successes.
        assert_problem(
            await api.post("/v1/auth/token", data={"username": "bea", "password": "nope"}), 401
        )
        typo = "Tr0ub4dor-and-3"  # looks like a password, typed as the username
        secrets_.add(typo)
        assert_problem(
            await api.post("/v1/auth/token", data={"username": typo, "password": PASSWORD}), 401
        )
        root = await api.post("/v1/auth/token", data={"username": "root", "password": PASSWORD})
        admin = bearer(root.json()["access_token"])
        bea = await api.post("/v1/auth/token", data={"username": "bea", "password": PASSWORD})
        login_request_id = bea.headers["x-request-id"]
        secrets_ |= {root.json()["access_token"], bea.json()["access_token"]}

        # Account administration by the admin user.
        new_user = {"username": "cid", "role": "viewer", "password": PASSWORD}
        assert (await api.post("/v1/users", json=new_user, headers=admin)).status_code == 201
        assert (await api.post("/v1/users", json=new_user, headers=admin)).status_code == 409
        await api.patch("/v1/users/cid", json={"role": "predictor"}, headers=admin)
        await api.post("/v1/users/cid/password", json={"password": NEW_PASSWORD}, headers=admin)
        await api.post("/v1/users/cid/revoke-tokens", headers=admin)
        await api.delete("/v1/users/cid", headers=admin)
        created = (
            await api.post("/v1/keys", json={"name": "acme", "expires_in": "30d"}, headers=admin)
        ).json()
        key_id = created["key_id"]
        rotated = (await api.post(f"/v1/keys/{key_id}/rotate", headers=admin)).json()
        secrets_ |= {created["key"], rotated["key"]}
        await api.post(f"/v1/keys/{key_id}/revoke", headers=admin)
        await api.delete(f"/v1/keys/{key_id}", headers=admin)

        # The user changes their own password: once wrong, then right.
        own = bearer(bea.json()["access_token"])
        wrong = {"current_password": "not it at all", "new_password": NEW_PASSWORD}
        assert_problem(await api.post("/v1/auth/password", json=wrong, headers=own), 400)
        right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        assert (await api.post("/v1/auth/password", json=right, headers=own)).status_code == 200

        docs = await entries(db)
        listed = (await api.get("/v1/audit?limit=500", headers=admin)).json()["items"]
    assert [d["id"] for d in listed] == [d["_id"] for d in docs]

    seen = {(d["action"], d["outcome"], d["actor"], d["target"]) for d in docs}
    expected = {
        ("auth.login", "failure", "user:bea", "bea"),
        ("auth.login", "failure", "user:<unknown user>", "<unknown user>"),
        ("auth.login", "success", "user:root", "root"),
        ("auth.login", "success", "user:bea", "bea"),
        ("user.create", "success", "user:root", "cid"),
        ("user.create", "failure", "user:root", "cid"),
        ("user.update", "success", "user:root", "cid"),
        ("user.password_set", "success", "user:root", "cid"),
        ("user.revoke_tokens", "success", "user:root", "cid"),
        ("user.delete", "success", "user:root", "cid"),
        ("key.create", "success", "user:root", key_id),
        ("key.rotate", "success", "user:root", key_id),
        ("key.revoke", "success", "user:root", key_id),
        ("key.delete", "success", "user:root", key_id),
        ("auth.password_change", "failure", "user:bea", "bea"),
        ("auth.password_change", "success", "user:bea", "bea"),
    }
    assert expected <= seen, expected - seen
    for doc in docs:
        assert doc["source_ip"] == CLIENT_IP
        assert started - timedelta(seconds=1) <= doc["at"] <= datetime.now(UTC)
    by_action = {(d["action"], d["outcome"]): d for d in docs}
    assert by_action[("user.create", "failure")]["details"]["reason"].endswith("already exists")
    assert by_action[("user.update", "success")]["details"] == {"role": "predictor"}
    assert by_action[("key.create", "success")]["details"]["name"] == "acme"
    assert by_action[("key.rotate", "success")]["details"] == {"grace_seconds": 86400}
    logins = [d for d in docs if d["action"] == "auth.login" and d["target"] == "bea"]
    assert login_request_id in {d["request_id"] for d in logins}
    assert_no_secret(docs, secrets_)


async def test_cli_changes_are_recorded_as_cli(
    settings: Settings,
    db: AsyncDatabase[Document],
    mongodb_uri: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with cli_env(monkeypatch, mongodb_uri, db_name) as cli:
        await cli("users", "create", "dan", "--password", PASSWORD)
        key = (await cli("keys", "create", "--name", "ops", "--expires-in", "1d")).strip()
        await cli("keys", "rotate", str(credentials.parse_api_key(key)), "--grace", "1h")
        await cli("users", "set-password", "dan", "--password", NEW_PASSWORD)
    docs = await entries(db)
    assert {d["action"] for d in docs} == {
        "user.create",
        "key.create",
        "key.rotate",
        "user.password_set",
    }
    assert {(d["actor"][:4], d["source_ip"], d["outcome"]) for d in docs} == {
        ("cli:", "cli", "success")
    }
    assert_no_secret(docs, {PASSWORD, NEW_PASSWORD, key})


async def test_imports_ingests_and_training_activations_are_recorded(
    db: AsyncDatabase[Document],
    mongodb_uri: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    good = tmp_path / "films.csv"
    good.write_text("\n".join([HEADER, _row("1", "One"), _row("2", "Two", budget="lots")]) + "\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("name,year\nOne,2001\n")
    fake = FakeTmdb(catalogue({2001: 3}), rate_limit=None)
    with fake.serve() as base_url, cli_env(monkeypatch, mongodb_uri, db_name) as cli:
        monkeypatch.setenv("TMDB_API_BASE_URL", base_url)
        monkeypatch.setenv("TMDB_API_TOKEN", TMDB_TOKEN)
        get_settings.cache_clear()
        await cli("import", "tmdb-csv", str(good))
        refused = await cli("import", "tmdb-csv", str(broken), code=2)
        assert "not imported" in refused and "missing columns" in refused
        await cli("ingest", "tmdb")
        version = [("revenue", "20260101T000000Z")]
        assert await asyncio.to_thread(record_activations, get_settings(), version, print)
    imports = await entries(db, action="data.import")
    assert [(d["outcome"], d["target"]) for d in imports] == [
        ("failure", "broken.csv"),
        ("success", "films.csv"),
    ]
    details = imports[1]["details"]
    assert details["kind"] == "tmdb-csv" and details["rows"] == 2
    assert details["inserted"] == 1 and details["rejected_rows"] == 1
    assert "missing columns" in imports[0]["details"]["reason"]
    (ingest,) = await entries(db, action="data.ingest")
    assert ingest["outcome"] == "success" and ingest["target"] == "tmdb"
    assert ingest["details"]["status"] == "done" and ingest["details"]["inserted"] == 3
    (trained,) = await entries(db, action="model.activate")
    assert trained["target"] == "revenue" and trained["details"] == {
        "version": "20260101T000000Z",
        "source": "training",
    }
    everything = await entries(db)
    assert all(d["actor"].startswith("cli:") for d in everything)
    assert_no_secret(everything, {TMDB_TOKEN})


async def test_model_activations_and_rollbacks_are_recorded(
    mongodb_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = ml_support.copy_artifacts(tmp_path_factory)
    old, new = ml_support.versions(root, "revenue")
    settings = ml_support.app_settings(mongodb_uri, root, tmp_path_factory.mktemp("work"))
    async with ml_support.serve(settings) as api:
        back = await api.post("/v1/models/revenue/activate", json={"version": old})
        assert back.status_code == 200, back.text
        forward = await api.post("/v1/models/revenue/activate", json={"version": new})
        assert forward.status_code == 200
        missing = await api.post(
            "/v1/models/revenue/activate", json={"version": "29990101T000000Z"}
        )
        assert_problem(missing, 404)
        assert (await api.post("/v1/models/hit/reload")).status_code == 200
        await audit.flush_all()
        listed = (await api.get("/v1/audit", params={"actor": "admin-key"})).json()["items"]
    got = [(e["action"], e["outcome"], e["target"], e["details"].get("version")) for e in listed]
    hit = ml_support.versions(root, "hit")[-1]
    assert got == [
        ("model.reload", "success", "hit", hit),
        ("model.activate", "failure", "revenue", "29990101T000000Z"),
        ("model.activate", "success", "revenue", new),
        ("model.rollback", "success", "revenue", old),
    ]
    assert listed[-1]["details"]["previous_version"] == new


# --- reading the log -----------------------------------------------------------------------


@pytest.fixture
async def seeded(db: AsyncDatabase[Document]) -> list[Document]:
    """25 entries from three actors, oldest first."""
    for i in range(25):
        await audit.record(
            db,
            action=("auth.login", "key.create", "user.delete")[i % 3],
            actor="key:0123456789ab" if i % 3 == 0 else ("user:ann" if i % 2 else "user:bob"),
            outcome="failure" if i % 5 == 0 else "success",
            target=f"t{i}",
            details={"i": i},
        )
    return list(reversed(await entries(db)))


@pytest.fixture
async def admin_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app(security_settings(settings)), headers=ADMIN) as client:
        yield client


async def all_pages(api: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = await api.get("/v1/audit", params=query)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= params.get("limit", 50)
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return items


async def test_pages_cover_every_entry_once_newest_first(
    admin_api: httpx.AsyncClient, seeded: list[Document]
) -> None:
    items = await all_pages(admin_api, limit=7)
    assert [e["id"] for e in items] == [d["_id"] for d in reversed(seeded)]
    assert [e["details"]["i"] for e in items] == list(range(24, -1, -1))


@pytest.mark.parametrize(
    "filters",
    [
        {"action": "key.create"},
        {"actor": "user:bob"},
        {"outcome": "failure"},
        {"action": "auth.login", "outcome": "success"},
        {"actor": "nobody"},
    ],
)
async def test_filters(
    admin_api: httpx.AsyncClient, seeded: list[Document], filters: dict[str, str]
) -> None:
    items = await all_pages(admin_api, limit=4, **filters)
    expected = [d for d in reversed(seeded) if all(d[k] == v for k, v in filters.items())]
    assert [e["id"] for e in items] == [d["_id"] for d in expected]


async def test_time_window(admin_api: httpx.AsyncClient, seeded: list[Document]) -> None:
    since, until = seeded[5]["at"], seeded[15]["at"]
    items = await all_pages(admin_api, limit=3, since=since.isoformat(), until=until.isoformat())
    # Entries at `since` count, entries at `until` do not (times to the microsecond).
    expected = [d for d in reversed(seeded) if since <= d["at"] < until]
    assert [e["id"] for e in items] == [d["_id"] for d in expected] and items
    naive = await admin_api.get("/v1/audit", params={"since": "2000-01-01T00:00:00"})
    assert len(naive.json()["items"]) == 25
    future = await admin_api.get("/v1/audit", params={"since": "2999-01-01T00:00:00+05:00"})
    assert future.json()["items"] == []
    backwards = {"since": until.isoformat(), "until": since.isoformat()}
    assert (
        "before"
        in assert_problem(await admin_api.get("/v1/audit", params=backwards), 400)["detail"]
    )


async def test_cursors_are_signed_and_bound_to_their_filters(
    settings: Settings, admin_api: httpx.AsyncClient, seeded: list[Document]
) -> None:
    first = (await admin_api.get("/v1/audit", params={"limit": 5, "actor": "user:ann"})).json()
    cursor = first["next_cursor"]
    assert cursor
    other = await admin_api.get("/v1/audit", params={"cursor": cursor, "actor": "user:bob"})
    assert "different filters" in assert_problem(other, 400)["detail"]
    payload, _, signature = cursor.partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for forged in (payload, f"{payload}.{flipped}", "garbage", f"x{cursor}"):
        refused = await admin_api.get("/v1/audit", params={"cursor": forged, "actor": "user:ann"})
        assert "cursor" in assert_problem(refused, 400)["detail"]
    # After a signing-key rotation (the old key listed second) the cursor still pages.
    rotated = security_settings(
        settings,
        jwt_secret="",
        jwt_secrets=f"next:rotated-secret-0123456789abcdef0123,{JWT_SECRET}",
    )
    async with serve(make_app(rotated), headers=ADMIN) as api:
        later = await api.get("/v1/audit", params={"cursor": cursor, "actor": "user:ann"})
        assert later.status_code == 200, later.text
        assert [e["actor"] for e in later.json()["items"]] == ["user:ann"] * len(
            later.json()["items"]
        )


async def test_the_cli_reads_the_log(
    db: AsyncDatabase[Document],
    seeded: list[Document],
    mongodb_uri: str,
    db_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with cli_env(monkeypatch, mongodb_uri, db_name) as cli:
        lines = (await cli("audit", "--action", "key.create", "--limit", "1000", "--json")).split(
            "\n"
        )
        got = [json.loads(line) for line in lines if line.strip()]
        expected = [d for d in reversed(seeded) if d["action"] == "key.create"]
        assert [g["id"] for g in got] == [d["_id"] for d in expected]
        assert got[0]["actor"] and got[0]["outcome"] in ("success", "failure")
        assert len((await cli("audit", "--limit", "3", "--json")).strip().splitlines()) == 3
        table = await cli("audit", "--since", "1h", "--outcome", "failure")
        assert "5 audit entries" in table and "user:" in table
        assert "0 audit entries" in await cli("audit", "--until", "2000-01-01")
        assert "--since" in await cli("audit", "--since", "yesterday-ish", code=2)


# --- helpers -------------------------------------------------------------------------------


class cli_env:
    """Point the CLI at the test database and run commands in a thread (each runs its own
    event loop); `await cli(*args, code=0)` returns stdout (or all output on failure)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mongodb_uri: str, db_name: str) -> None:
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("MONGODB_URI", mongodb_uri)
        monkeypatch.setenv("MONGODB_DB", db_name)
        monkeypatch.setenv("COLUMNS", "250")
        monkeypatch.setenv("APP_ENV", "test")
        self.runner = CliRunner()

    def __enter__(self) -> Any:
        get_settings.cache_clear()

        async def cli(*args: str, code: int = 0) -> str:
            result = await asyncio.to_thread(self.runner.invoke, cli_app, list(args))
            assert result.exit_code == code, result.output
            return result.stdout if code == 0 else result.output

        return cli

    def __exit__(self, *_exc: object) -> None:
        get_settings.cache_clear()
