"""Helpers shared by the model tests: a small slice of the real films, models trained on it
once per session (quick mode, into a temporary directory), and an in-process client."""

from __future__ import annotations

import asyncio
import csv
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from app.cli import app as cli_app
from app.settings import Settings, get_settings
from tests import analytics_support
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV, require_shared
from training.data import Dataset, load_from_csv
from training.train import train_models
from training.types import TrainedModel, TrainOptions

ADMIN_KEY = "ml-tests-admin-key-0123456789abcdef0123456789"
SMALL_FILMS = 1200  # enough for every model family to learn something, fast in quick mode

_cache: dict[str, Any] = {}


def real_dataset() -> Dataset:
    """The 3,804 real train films joined with IMDB directors/actors (read once)."""
    if "full" not in _cache:
        _cache["full"] = load_from_csv(require_shared(TMDB_TRAIN_CSV), require_shared(IMDB_CSV))
    dataset: Dataset = _cache["full"]
    return dataset


def small_dataset() -> Dataset:
    full = real_dataset()
    return Dataset(records=full.records[:SMALL_FILMS], source=f"{full.source}[:{SMALL_FILMS}]")


def quick_options(**overrides: Any) -> TrainOptions:
    values: dict[str, Any] = {"quick": True, "mlflow": False, "report": False, **overrides}
    return TrainOptions(**values)


def trained_artifacts(factory: pytest.TempPathFactory) -> tuple[Path, list[list[TrainedModel]]]:
    """Two quick-trained versions of each model (different seeds; the second is active),
    trained once per session. Tests that change anything work on `copy_artifacts`."""
    if "trained" not in _cache:
        root = factory.mktemp("trained") / "artifacts"
        runs = [
            train_models(small_dataset(), root, quick_options(seed=seed), say=lambda _m: None)
            for seed in (1, 2)
        ]
        _cache["trained"] = (root, runs)
    trained: tuple[Path, list[list[TrainedModel]]] = _cache["trained"]
    return trained


def copy_artifacts(factory: pytest.TempPathFactory) -> Path:
    source, _ = trained_artifacts(factory)
    target = factory.mktemp("artifacts-copy") / "artifacts"
    shutil.copytree(source, target)
    return target


def versions(root: Path, name: str) -> list[str]:
    return sorted(p.name for p in (root / name).iterdir() if p.is_dir())


def app_settings(mongodb_uri: str, artifacts_dir: Path, workdir: Path) -> Settings:
    """The analytics tests' settings in a fresh database, serving `artifacts_dir`."""
    return analytics_support.app_settings(
        mongodb_uri,
        f"test_{uuid.uuid4().hex[:12]}",
        workdir,
        admin_api_key=ADMIN_KEY,
        artifacts_dir=artifacts_dir,
        rate_limit_per_minute=1_000_000,
    )


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app behind an in-process client with the admin key; drops its database after."""
    async with analytics_support.serve(settings, drop_database=True) as http:
        yield http


FILM: dict[str, Any] = {
    "title": "Interstellar Heist",
    "budget": 120_000_000,
    "runtime": 131,
    "release_date": "2017-07-14",
    "genres": [{"id": 28, "name": "Action"}, {"id": 878, "name": "Science Fiction"}],
    "original_language": "en",
    "production_companies": [{"id": 174, "name": "Warner Bros."}],
    "production_countries": [{"iso_3166_1": "US", "name": "United States of America"}],
    "spoken_languages": [{"iso_639_1": "en", "name": "English"}],
    "keywords": [{"id": 1, "name": "heist"}, {"id": 2, "name": "space"}],
    "homepage": "https://example.org/heist",
    "tagline": "Steal the stars.",
    "cast": [
        {"name": "Tom Hardy", "character": "Eames", "order": 0},
        {"name": "Zendaya", "order": 1},
    ],
    "crew": [
        {"name": "Christopher Nolan", "job": "Director", "department": "Directing"},
        {"name": "Hans Zimmer", "job": "Original Music Composer"},
    ],
}

# The same film with every list given as plain names (and ISO codes).
FILM_PLAIN: dict[str, Any] = {
    **FILM,
    "genres": ["Action", "Science Fiction"],
    "production_companies": ["Warner Bros."],
    "production_countries": ["US"],
    "spoken_languages": ["en"],
    "keywords": ["heist", "space"],
    "cast": ["Tom Hardy", "Zendaya"],
}


async def run_cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, args: list[str]) -> Result:
    """`tmdb-analytics ARGS` against this test's database and artifacts."""
    monkeypatch.setenv("MONGODB_URI", settings.mongodb_uri or "")
    monkeypatch.setenv("MONGODB_DB", settings.mongodb_db)
    monkeypatch.setenv("ARTIFACTS_DIR", str(settings.artifacts_dir))
    monkeypatch.setenv("LOCAL_DB_DIR", str(settings.local_db_dir))
    monkeypatch.setenv("APP_ENV", "test")
    monkeypatch.setenv("COLUMNS", "300")
    if settings.mlflow_tracking_uri:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_tracking_uri)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    get_settings.cache_clear()
    try:
        return await asyncio.to_thread(CliRunner().invoke, cli_app, args)
    finally:
        get_settings.cache_clear()


NBSP = "\u00a0"
TMDB_LISTS = ("genres", "keywords", "production_companies", "production_countries")


def tmdb_records() -> list[dict[str, Any]]:
    """Every film of the train CSV as TMDB's API has it: lists of TMDB objects (the CSV's own
    JSON cells), numbers as numbers, "" for an unknown date, post-release facts included."""
    out = []
    with require_shared(TMDB_TRAIN_CSV).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            record: dict[str, Any] = dict(row)
            for key in (*TMDB_LISTS, "spoken_languages"):
                record[key] = json.loads(row[key])
            for key in ("id", "budget", "revenue", "vote_count"):
                record[key] = int(float(row[key]))
            for key in ("popularity", "vote_average"):
                record[key] = float(row[key])
            record["runtime"] = float(row["runtime"]) if row["runtime"] else None
            out.append(record)
    return out


def tmdb_items(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """Real films as a client would send them (TMDB field names, plain-name lists)."""
    out = []
    for rec in real_dataset().records[offset : offset + n]:
        out.append(
            {
                "title": rec["title"],
                "budget": rec["budget"],
                "runtime": rec["runtime"],
                "release_date": rec["release_date"],
                "genres": rec["genres"],
                "original_language": rec["original_language"],
                "production_companies": rec["production_companies"],
                "production_countries": rec["production_countries"],
                "spoken_languages": rec["spoken_languages"],
                "keywords": rec["keywords"],
                "homepage": "https://example.org" if rec["homepage"] else None,
                "tagline": "yes" if rec["tagline"] else None,
                "cast": rec["actors"],
                "crew": [{"name": d, "job": "Director"} for d in rec["directors"]],
            }
        )
    return out
