"""Helpers for the analytics and movie-search tests: the real catalogue loaded into its own
database once per module, the app over it, and an independent pandas reading of the same CSV
with the documented cleaning rules (budget/revenue 0 -> unknown, values under 1000 are
millions, runtime 0 -> unknown)."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from app.db import Document
from app.main import create_app
from app.services.csv_io import import_imdb_csv, import_tmdb_csv
from app.services.indexes import ensure_indexes
from app.settings import Settings
from tests.support import IMDB_CSV, TMDB_TRAIN_CSV, in_process, require_shared

API_KEY = "analytics-tests-admin-key-0123456789abcdef"
# One signing key for every app built here: cursors (signed with a key derived from it) then
# carry over from one app to another, as they do across workers sharing JWT_SECRET.
JWT_SECRET = "analytics-tests-jwt-secret-0123456789abcdef"
MONEY = ("budget", "revenue", "profit")
STAT_FIELDS = ("revenue", "budget", "profit", "roi", "vote_average", "runtime")


def app_settings(uri: str, db_name: str, workdir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "app_env": "test",
        "mongodb_uri": uri,
        "mongodb_db": db_name,
        "admin_api_key": API_KEY,
        "jwt_secret": JWT_SECRET,
        "artifacts_dir": workdir / "artifacts",
        "data_dir": workdir / "data",
        "local_db_dir": workdir / "localdb",
        "rate_limit_per_minute": 100_000,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Catalogue:
    client: AsyncMongoClient[Document]
    db: AsyncDatabase[Document]
    name: str


@asynccontextmanager
async def real_catalogue(uri: str) -> AsyncIterator[Catalogue]:
    """The 3,804 real train films (with the IMDB enrichment) in a database of their own."""
    require_shared(TMDB_TRAIN_CSV)
    require_shared(IMDB_CSV)
    name = f"test_an_{uuid.uuid4().hex[:10]}"
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        uri, serverSelectionTimeoutMS=5000, tz_aware=True
    )
    db = client[name]
    try:
        await ensure_indexes(db)
        report = await import_tmdb_csv(db, TMDB_TRAIN_CSV)
        assert report.summary.inserted == 3804, report.errors[:5]
        await import_imdb_csv(db, IMDB_CSV)
        yield Catalogue(client, db, name)
    finally:
        await client.drop_database(name)
        await client.close()


@asynccontextmanager
async def serve(
    settings: Settings, drop_database: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (lifespan run) behind an in-process client sending the admin key of
    `settings`; `drop_database` drops the app's database on the way out."""
    app = create_app(settings)
    headers = {"X-API-Key": settings.admin_api_key} if settings.admin_api_key else {}
    async with in_process(app, headers=headers, base_url="http://test") as http:
        try:
            yield http
        finally:
            if drop_database:
                await app.state.app_state.client.drop_database(settings.mongodb_db)


def _names(cell: Any) -> list[str]:
    if not isinstance(cell, str) or not cell.strip():
        return []
    return list(dict.fromkeys(str(item["name"]) for item in json.loads(cell)))


def reference_frame() -> pd.DataFrame:
    """The train CSV cleaned independently of the importer, one row per film."""
    df = pd.read_csv(require_shared(TMDB_TRAIN_CSV))
    for col in ("budget", "revenue"):
        v = pd.to_numeric(df[col], errors="coerce").astype(float)
        v = v.where(v > 0)  # 0 means unknown
        v = v.where(v >= 1000, v * 1_000_000).round()  # tiny amounts are in millions
        df[col] = v
    df["profit"] = df["revenue"] - df["budget"]
    # Python's round (correctly rounded decimal), as stored; numpy's round can differ by 1e-6.
    df["roi"] = [
        round(p / b, 6) if not (math.isnan(p) or math.isnan(b)) else math.nan
        for p, b in zip(df["profit"], df["budget"], strict=True)
    ]
    df["runtime"] = df["runtime"].where(df["runtime"] > 0)
    released = pd.to_datetime(df["release_date"], errors="coerce")
    df["release_year"] = released.dt.year.astype(float)
    df["release_month"] = released.dt.month.astype(float)
    df["vote_count"] = df["vote_count"].astype(float)
    df["genre_list"] = df["genres"].map(_names)
    df["company_list"] = df["production_companies"].map(_names)
    df["title"] = df["title"].astype(str).str.strip()
    df.index = pd.Index(df["id"].to_numpy(), name=None)
    return df


async def attach_imdb(df: pd.DataFrame, db: AsyncDatabase[Document]) -> pd.DataFrame:
    """Add the IMDB enrichment as stored (the title+year join is the importer's, tested with
    it); the people statistics are then computed here, independently of the engine."""
    facts = {
        d["id"]: d.get("imdb") or {}
        async for d in db["movies"].find({}, {"_id": 0, "id": 1, "imdb": 1})
    }
    out = df.copy()
    out["director_list"] = [
        [facts[i]["director"]] if facts.get(i, {}).get("director") else [] for i in out.index
    ]
    out["actor_list"] = [
        list(dict.fromkeys(facts.get(i, {}).get("actors") or [])) for i in out.index
    ]
    out["imdb_score"] = [
        float("nan") if facts.get(i, {}).get("score") is None else facts[i]["score"]
        for i in out.index
    ]
    return out


def ref_stats(values: pd.Series) -> dict[str, Any]:
    s = values.dropna().astype(float)
    if s.empty:
        return {"n": 0}
    return {
        "n": len(s),
        "mean": s.mean(),
        "median": s.median(),
        "p25": s.quantile(0.25),
        "p75": s.quantile(0.75),
        "min": s.min(),
        "max": s.max(),
        "sum": s.sum(),
    }


def assert_stats(block: dict[str, Any], values: pd.Series, money: bool, label: str = "") -> None:
    ref = ref_stats(values)
    assert block["n"] == ref["n"], label
    if ref["n"] == 0:
        assert block["mean"] is None and block["median"] is None, label
        return
    for key in ("mean", "median", "p25", "p75", "min", "max"):
        assert block[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-9), f"{label} {key}"
    if money:
        assert block["sum"] == pytest.approx(ref["sum"], rel=1e-12), f"{label} sum"
    else:
        assert block["sum"] is None, label


def assert_economics(item: dict[str, Any], films: pd.DataFrame, label: str) -> None:
    assert item["count"] == len(films), label
    for name in STAT_FIELDS:
        assert_stats(item[name], films[name], name in MONEY, f"{label} {name}")


def filtered(
    df: pd.DataFrame,
    genres: list[str] | None = None,
    year_from: int | None = None,
    year_to: int | None = None,
    language: str | None = None,
    company: str | None = None,
    min_votes: int | None = None,
) -> pd.DataFrame:
    m = pd.Series(True, index=df.index)
    if genres:
        m &= df["genre_list"].map(lambda gs: any(g in gs for g in genres))
    if year_from is not None:
        m &= df["release_year"] >= year_from
    if year_to is not None:
        m &= df["release_year"] <= year_to
    if language is not None:
        m &= df["original_language"] == language
    if company is not None:
        m &= df["company_list"].map(lambda cs: company in cs)
    if min_votes is not None:
        m &= df["vote_count"] >= min_votes
    return df[m]


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def as_float_list(values: Any) -> list[float]:
    return [float(x) for x in np.asarray(values, dtype=float)]
