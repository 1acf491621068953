"""The model registry: startup loading, atomic activation and rollback, refusal of corrupt or
incompatible artifacts (the old model keeps serving), and the compiled fast path."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from app.ml import artifacts
from app.ml.features import film_record
from app.ml.registry import SMOKE_FILMS, ArtifactError, ModelRegistry, load_version
from app.settings import Settings
from tests.ml_support import copy_artifacts, real_dataset, trained_artifacts, versions


@pytest.fixture
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_artifacts(tmp_path_factory)


def _clone(root: Path, name: str, source: str, target: str, **card_changes: Any) -> Path:
    """A copy of version `source` published as version `target` (card adjusted)."""
    src, dst = root / name / source, root / name / target
    shutil.copytree(src, dst)
    card = json.loads((dst / artifacts.CARD_FILE).read_text())
    card["version"] = target
    for key, value in card_changes.items():
        card[key] = value
    (dst / artifacts.CARD_FILE).write_text(json.dumps(card))
    return dst


async def test_startup_loads_the_active_version_of_each_model(root: Path) -> None:
    registry = ModelRegistry(root)
    await registry.load_all()
    for name in ("revenue", "hit", "engagement"):
        model = registry.get(name)
        assert model is not None
        assert model.version == artifacts.read_active(root, name) == versions(root, name)[-1]
        assert registry.problem(name) is None


async def test_activate_rolls_back_and_forward_atomically(root: Path) -> None:
    registry = ModelRegistry(root)
    await registry.load_all()
    old, new = versions(root, "revenue")
    serving = registry.get("revenue")
    assert serving is not None and serving.version == new
    rolled = await registry.activate("revenue", old)
    assert rolled.version == old and registry.get("revenue") is rolled
    assert artifacts.read_active(root, "revenue") == old
    # A request that took the model before the swap still finishes on it.
    X = serving.transform([film_record({"title": "x", "budget": 5e7})])
    assert np.isfinite(serving.score_matrix(X)).all() and serving.version == new
    # A fresh registry (a restart) serves what was activated.
    restarted = ModelRegistry(root)
    await restarted.load_all()
    assert restarted.get("revenue").version == old  # type: ignore[union-attr]
    assert (await registry.activate("revenue", new)).version == new


@pytest.mark.parametrize(
    "damage",
    [
        "truncated",
        "flipped",
        "card-json",
        "card-schema",
        "feature-schema",
        "sklearn",
        "not-pipeline",
    ],
)
async def test_a_bad_artifact_is_refused_and_the_old_model_keeps_serving(
    root: Path, damage: str
) -> None:
    registry = ModelRegistry(root)
    await registry.load_all()
    before = registry.get("hit")
    assert before is not None
    bad = "29990101T000000Z"
    directory = _clone(root, "hit", before.version, bad)
    model_file, card_file = directory / artifacts.MODEL_FILE, directory / artifacts.CARD_FILE
    card = json.loads(card_file.read_text())
    if damage == "truncated":
        whole = model_file.read_bytes()
        model_file.write_bytes(whole[: len(whole) // 2])
    elif damage == "flipped":
        flipped = bytearray(model_file.read_bytes())
        flipped[len(flipped) // 2] ^= 0xFF
        model_file.write_bytes(bytes(flipped))
    elif damage == "card-json":
        card_file.write_text("{not json")
    elif damage == "card-schema":
        del card["metrics"]
        card_file.write_text(json.dumps(card))
    elif damage == "feature-schema":
        card["feature_schema_version"] = 999
        card_file.write_text(json.dumps(card))
    elif damage == "sklearn":
        card["library_versions"]["scikit-learn"] = "0.24.2"
        card_file.write_text(json.dumps(card))
    elif damage == "not-pipeline":
        # A well-formed pickle whose hash matches its card, but that is no model.
        joblib.dump({"weights": [1, 2, 3]}, model_file)
        card["artifact"]["sha256"] = artifacts.sha256_file(model_file)
        card_file.write_text(json.dumps(card))
    with pytest.raises(ArtifactError):
        await registry.activate("hit", bad)
    assert registry.get("hit") is before
    assert artifacts.read_active(root, "hit") == before.version
    # The same through the pointer: ACTIVE names the bad version, reload refuses it.
    artifacts.write_active(root, "hit", bad)
    with pytest.raises(ArtifactError):
        await registry.reload("hit")
    assert registry.get("hit") is before


async def test_in_flight_requests_finish_on_the_model_they_started_with(root: Path) -> None:
    registry = ModelRegistry(root)
    await registry.load_all()
    old, new = versions(root, "hit")
    films = [film_record(r) for r in real_dataset().records[:50]]
    expected = {}
    for version in (old, new):
        model = load_version(root, "hit", version)
        expected[version] = model.score_matrix(model.transform(films))

    async def request() -> tuple[str, np.ndarray]:
        model = registry.get("hit")  # what a request does first
        assert model is not None
        await asyncio.sleep(0)  # let a swap happen mid-request
        X = await asyncio.to_thread(model.transform, films)
        return model.version, await asyncio.to_thread(model.score_matrix, X)

    async def flip() -> None:
        for version in (old, new, old, new):
            await registry.activate("hit", version)

    results = await asyncio.gather(*(request() for _ in range(20)), flip())
    seen = set()
    for version, scores in results[:-1]:  # type: ignore[misc]
        np.testing.assert_allclose(scores, expected[version])
        seen.add(version)
    assert seen <= {old, new}


async def test_no_artifacts_means_not_ready_with_a_reason(
    tmp_path: Path, settings: Settings
) -> None:
    registry = ModelRegistry(tmp_path / "empty")
    await registry.load_all()
    assert registry.get("revenue") is None and registry.get("hit") is None
    assert "no trained version" in (registry.problem("revenue") or "")
    check = await registry.readiness()
    assert check.startswith("not ready") and "revenue" in check and "hit" in check


async def test_compiled_scorer_matches_scikit_learn_on_real_films(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root, runs = trained_artifacts(tmp_path_factory)
    films = [film_record(r) for r in real_dataset().records[1500:1700]]
    for run in runs:
        for trained in run:
            model = load_version(root, trained.name, trained.version)
            X = model.transform(films)
            reference = model.reference_scorer(X)
            if model.fast_scorer is not None:
                np.testing.assert_allclose(model.fast_scorer(X), reference, rtol=1e-6, atol=1e-6)
            # One film alone (compiled path) scores as it does inside a big batch.
            assert model.score_matrix(X[:1])[0] == pytest.approx(reference[0], abs=1e-6)


def test_versions_are_sortable_and_validated(tmp_path: Path) -> None:
    first = artifacts.new_version(tmp_path, "hit")
    (tmp_path / "hit" / first).mkdir(parents=True)
    second = artifacts.new_version(tmp_path, "hit")
    assert second != first and artifacts.VERSION_RE.match(second)
    with pytest.raises(ValueError):
        artifacts.version_dir(tmp_path, "hit", "../../etc")


PRE_RENAME = Path(__file__).parent / "fixtures" / "artifacts-pre-rename"


@pytest.mark.parametrize("name", ["revenue", "hit"])
def test_an_artifact_trained_before_the_restructure_still_loads_and_scores(name: str) -> None:
    """Committed artifacts quick-trained at df0b079, before modules were moved and renamed:
    the pickles name `app.ml.*` classes, so what they import must keep existing (add an import
    alias there before moving one), and their cards must keep validating."""
    version = artifacts.read_active(PRE_RENAME, name)
    assert version is not None
    model = load_version(PRE_RENAME, name, version)  # checks the card, sha256 and smoke films
    films = [film_record(f) for f in SMOKE_FILMS]
    scores = model.score_matrix(model.transform(films))
    assert scores.shape == (len(films),) and np.isfinite(scores).all()


def test_the_model_cache_loads_the_same_model_and_never_replaces_a_check(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version loaded once is kept as a standard pickle (C unpickler) and loaded from
    it the next time, with the same scores; an unreadable copy falls back to the artifact;
    a model file that no longer matches its card is still refused."""
    cache = tmp_path / "model-cache"
    version = versions(root, "revenue")[-1]
    first = load_version(root, "revenue", version, cache)
    (copy,) = cache.glob("*.pickle")
    X = first.transform([film_record({"title": "x", "budget": 5e7, "runtime": 120})])

    def no_joblib(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("the cached copy must be used")

    monkeypatch.setattr(joblib, "load", no_joblib)
    again = load_version(root, "revenue", version, cache)
    np.testing.assert_array_equal(again.score_matrix(X), first.score_matrix(X))
    monkeypatch.undo()
    copy.write_bytes(b"not a pickle")
    fallback = load_version(root, "revenue", version, cache)  # read from the artifact
    np.testing.assert_array_equal(fallback.score_matrix(X), first.score_matrix(X))
    assert copy.read_bytes() != b"not a pickle"  # and the copy written again
    # Copies no start has read for a month, and old partial writes, are dropped.
    stale, recent, partial = (
        cache / "0ld-1.9-2.4-4.7.pickle",
        cache / "n3w.pickle",
        cache / ".x.tmp",
    )
    for path in (stale, recent, partial):
        path.write_bytes(b"")
    month_ago = time.time() - 31 * 86400
    os.utime(stale, (month_ago, month_ago))
    os.utime(partial, (month_ago, month_ago))
    copy.unlink()
    load_version(root, "revenue", version, cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted([copy.name, recent.name])
    model_file = artifacts.version_dir(root, "revenue", version) / artifacts.MODEL_FILE
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    with pytest.raises(ArtifactError, match="does not match its card"):
        load_version(root, "revenue", version, cache)
