"""Helpers for the dashboard tests: people and keys of every role, a small catalogue written
in the TMDB 5000 CSV format and loaded through the project's own import, and dashboards."""

from __future__ import annotations

import asyncio
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.security import Role
from app.services import credentials
from app.services.csv_io import import_tmdb_csv
from app.services.indexes import ensure_indexes
from tests.security_support import ADMIN_KEY, api_key, bearer

PASSWORD = "correct horse battery staple"
CSV_COLUMNS = [
    "budget", "genres", "homepage", "id", "keywords", "original_language", "original_title",
    "overview", "popularity", "production_companies", "production_countries", "release_date",
    "revenue", "runtime", "spoken_languages", "status", "tagline", "title", "vote_average",
    "vote_count",
]  # fmt: skip
GENRES = ["Action", "Comedy", "Drama", "Animation", "Horror"]


def _named(names: list[str]) -> str:
    return json.dumps([{"id": i + 1, "name": n} for i, n in enumerate(names)])


def write_films_csv(path: Path, count: int = 60) -> Path:
    """`count` invented films in the Kaggle TMDB 5000 format, deterministic."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for i in range(count):
            budget = 0 if i % 7 == 0 else (i + 1) * 1_500_000
            writer.writerow(
                {
                    "budget": budget,
                    "genres": _named([GENRES[i % 5], GENRES[(i * 3 + 1) % 5]]),
                    "homepage": "",
                    "id": 1000 + i,
                    "keywords": _named(["kw"]),
                    "original_language": "en" if i % 4 else "fr",
                    "original_title": f"Film {i}",
                    "overview": "An invented film.",
                    "popularity": round(5 + (i * 37 % 100) / 3, 3),
                    "production_companies": _named(["Studio A" if i % 2 else "Studio B"]),
                    "production_countries": json.dumps([{"iso_3166_1": "US", "name": "USA"}]),
                    "release_date": f"{1990 + i % 25}-{1 + i % 12:02d}-15",
                    "revenue": 0 if i % 9 == 0 else (i + 2) * 4_100_000,
                    "runtime": 90 + i % 40,
                    "spoken_languages": json.dumps([{"iso_639_1": "en", "name": "English"}]),
                    "status": "Released",
                    "tagline": "",
                    "title": f"Film {i}",
                    "vote_average": round(4 + (i % 50) / 10, 1),
                    "vote_count": 10 * i,
                }
            )
    return path


async def load_films(db: AsyncDatabase[Document], workdir: Path, count: int = 60) -> None:
    await ensure_indexes(db)
    report = await import_tmdb_csv(db, write_films_csv(workdir / "films.csv", count))
    assert report.summary.inserted == count, report.errors[:3]


async def wait_for_films(api: httpx.AsyncClient, headers: dict[str, str], count: int) -> None:
    """Until the analytics snapshot (rebuilt in the background after a write) holds them."""
    async with asyncio.timeout(30):
        while True:
            summary = (await api.get("/v1/analytics/summary", headers=headers)).json()
            if summary.get("catalogue_films") == count:
                return
            await asyncio.sleep(0.2)


@dataclass
class Callers:
    """Headers of every kind of caller: users (bearer tokens) and API keys of each role,
    and the operator's admin key."""

    headers: dict[str, dict[str, str]]

    def __getitem__(self, name: str) -> dict[str, str]:
        return self.headers[name]


async def make_callers(db: AsyncDatabase[Document], api: httpx.AsyncClient) -> Callers:
    headers: dict[str, dict[str, str]] = {}
    people = {
        "alice": Role.viewer,
        "bob": Role.viewer,
        "pat": Role.predictor,
        "ada": Role.admin,
    }
    for name, role in people.items():
        await credentials.create_user(db, name, role, PASSWORD)
        answer = await api.post("/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        headers[name] = bearer(answer.json()["access_token"])
    for role in Role:
        # A key named like a user must not see that user's dashboards.
        _, key = await credentials.create_api_key(db, "alice", role)
        headers[f"key-{role.value}"] = api_key(key)
    headers["admin-key"] = api_key(ADMIN_KEY)
    return Callers(headers)


def dashboard_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Genres",
        "widgets": [
            {
                "title": "Films per genre",
                "endpoint": "/v1/analytics/genres",
                "params": {},
                "chart": "bar",
            }
        ],
    }
    body.update(overrides)
    return body
