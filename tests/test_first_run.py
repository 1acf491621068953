"""A first run a person can use: `bootstrap` makes a local admin in development (never in
production), says once how to log in, and long lists of rejected or unmatched import lines go
to a file instead of the console."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from typer.testing import CliRunner

from app.cli import app as cli_app
from app.db import Document
from app.services import credentials
from app.services.credentials import Role
from app.services.first_run import ensure_local_admin
from app.settings import Settings, get_settings
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV, require_shared


async def test_a_local_admin_is_made_once_in_development(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    dev = settings.model_copy(update={"app_env": "development"})
    admin = await ensure_local_admin(db, dev)
    assert admin is not None and admin.username == "admin"
    user = await credentials.authenticate_user(db, admin.username, admin.password)
    assert user is not None and user.role is Role.admin
    key = await credentials.find_api_key(db, admin.api_key)
    assert key is not None and key.record.role is Role.admin
    saved = admin.saved_to.read_text()
    assert admin.password in saved and admin.api_key in saved
    assert stat.S_IMODE(admin.saved_to.stat().st_mode) == 0o600
    # Never a second one, nor a replaced password.
    assert await ensure_local_admin(db, dev) is None
    assert await credentials.authenticate_user(db, admin.username, admin.password) is not None


@pytest.mark.parametrize("app_env", ["production", "test"])
async def test_no_local_admin_outside_development(
    db: AsyncDatabase[Document], settings: Settings, app_env: str
) -> None:
    other = settings.model_copy(update={"app_env": app_env})
    assert await ensure_local_admin(db, other) is None
    assert await credentials.list_users(db) == []


async def test_an_existing_admin_means_no_first_run_account(
    db: AsyncDatabase[Document], settings: Settings
) -> None:
    await credentials.create_user(db, "root", Role.admin, "a-long-enough-password-1")
    dev = settings.model_copy(update={"app_env": "development"})
    assert await ensure_local_admin(db, dev) is None
    assert [u.username for u in await credentials.list_users(db)] == ["root"]


async def test_import_lines_beyond_the_first_few_go_to_a_file(
    settings: Settings, mongodb_uri: str, db_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The IMDB join reports about a thousand unmatched rows: the console shows five and a
    count, the file lists every one."""
    require_shared(TMDB_TRAIN_CSV)
    require_shared(IMDB_CSV)
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("LOCAL_DB_DIR", str(settings.local_db_dir))
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        loaded = await asyncio.to_thread(
            runner.invoke, cli_app, ["import", "tmdb-csv", str(TMDB_TRAIN_CSV)]
        )
        assert loaded.exit_code == 0, loaded.output
        joined = await asyncio.to_thread(
            runner.invoke, cli_app, ["import", "imdb-csv", str(IMDB_CSV)]
        )
        assert joined.exit_code == 0, joined.output
    finally:
        get_settings.cache_clear()
    console_lines = [line for line in joined.output.splitlines() if line.startswith("line ")]
    assert len(console_lines) == 5
    files = list((settings.local_db_dir / "reports").glob("imdb_5000_movie_metadata-*.txt"))
    assert len(files) == 1
    listed = files[0].read_text().splitlines()
    assert len(listed) > 100 and all(line.startswith("line ") for line in listed)
    assert f"{len(listed)} lines in all" in joined.output
    assert str(files[0]) in joined.output.replace("\n", "")


def test_bootstrap_trains_only_the_models_without_a_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install upgraded to a release with a new model gets that model at the next
    `make run`, without retraining the ones it has; a complete install trains nothing."""
    from app.cli import data as cli_data
    from app.ml import artifacts

    root = tmp_path / "artifacts"
    for name in ("revenue", "hit"):
        (root / name / "20260101T000000Z").mkdir(parents=True)
        artifacts.write_active(root, name, "20260101T000000Z")
    asked: list[list[str] | None] = []
    monkeypatch.setattr(cli_data, "train_command", lambda model=None: asked.append(model))
    settings = Settings(artifacts_dir=root, app_env="test")
    cli_data._train_if_no_models(settings)
    assert asked == [["engagement"]]
    (root / "engagement" / "20260101T000000Z").mkdir(parents=True)
    artifacts.write_active(root, "engagement", "20260101T000000Z")
    cli_data._train_if_no_models(settings)
    assert asked == [["engagement"]]


async def test_bootstrap_without_csvs_trains_missing_models_from_stored_films(
    db: AsyncDatabase[Document],
    settings: Settings,
    mongodb_uri: str,
    db_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make run` on a database an earlier run filled, with no CSV and no token: the missing
    models are trained from the stored films; an empty database trains nothing."""
    from app.cli import data as cli_data
    from app.services.movies_repo import MOVIES

    asked: list[list[str] | None] = []
    monkeypatch.setattr(cli_data, "train_command", lambda model=None: asked.append(model))
    monkeypatch.setenv("MONGODB_URI", mongodb_uri)
    monkeypatch.setenv("MONGODB_DB", db_name)
    monkeypatch.setenv("LOCAL_DB_DIR", str(settings.local_db_dir))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "no-csvs"))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.delenv("TMDB_API_TOKEN", raising=False)
    get_settings.cache_clear()
    try:
        await asyncio.to_thread(cli_data._load_data, get_settings())
        assert asked == []  # nothing stored: nothing to train on
        await db[MOVIES].insert_many([{"_id": str(i), "id": i, "title": f"F{i}"} for i in (1, 2)])
        await asyncio.to_thread(cli_data._load_data, get_settings())
        assert asked == [["revenue", "hit", "engagement"]]
    finally:
        get_settings.cache_clear()
