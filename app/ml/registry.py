"""The model registry: which version of each model serves, loaded once and swapped atomically.

- The active version of each model lives in the database (`app.services.model_versions`), so
  that every worker and replica serves the same one. `ARTIFACTS_DIR/<model>/ACTIVE` (else the
  newest complete version) is the fallback and seeds the database when it holds nothing.
- Startup loads the version the database names (the file's when the database has none or is
  unreachable). A model that cannot load is reported by `/ready`, never as a 500 on a later
  request.
- `activate` serves a given version; `reload` serves the one `ACTIVE` names. Both build and
  check the new model completely *before* anything changes: the card must validate, the file
  must match the card's sha256 (a truncated or corrupt file never reaches the unpickler), the
  feature schema and scikit-learn version must match this code, and the pipeline must score
  sample films to finite numbers. Any failure raises `ArtifactError` and the old model keeps
  serving. Only then is the version recorded in the database (and `ACTIVE`), then swapped in.
- Every process checks the database every `MODEL_CHECK_SECONDS` (one small query) and loads
  a version recorded elsewhere. One it cannot load leaves it serving its current version and
  reporting the gap (`/ready`, log, `model_version_behind`), retried on the next activation or
  after `FOLLOW_RETRY_SECONDS`.
- The swap is one reference assignment. A request takes the `LoadedModel` once at its start
  and uses only that object, so in-flight requests finish on the model they started with.

Artifacts are pickles: only load them from a directory you control (ARTIFACTS_DIR).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pickle
import socket
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from sklearn.pipeline import Pipeline

from app.db import Document
from app.ml import artifacts
from app.ml.batch_features import BatchFeatures
from app.ml.batch_features import verified as batch_verified
from app.ml.card import ModelCard
from app.ml.drift import InputReader, read_profile
from app.ml.engagement import OUTPUTS, EngagementFeatures, compile_engagement
from app.ml.engagement_explain import EngagementExplainer
from app.ml.explain import GroupOcclusion
from app.ml.fastpath import Scorer, compile_tail, pipeline_scorer, scales, verified
from app.ml.features import FilmFeatures, film_record
from app.ml.monitoring import PredictionMonitor
from app.ml.prerelease import SCHEMA_VERSION as LATEST_SCHEMA
from app.ml.shap_explain import ShapExplainer
from app.observability import MODEL_BEHIND, MODEL_FOLLOW_FAILURES
from app.services import model_versions
from app.services.model_versions import ActiveRecord

log = logging.getLogger("app.ml.registry")
FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
# Up to this many rows the compiled scorer's plain walk wins (1 film: ~0.1 ms against
# ~3-10 ms; 64: ~2 ms against ~6-11 ms); from ~500 rows scikit-learn's own per-tree loop is
# as fast. Shallow trees (boosting) padded to full depth beat it at any size.
FAST_MAX_ROWS = 256
# A version the database names but this process cannot load is tried again after this long
# (a missing file may be synced meanwhile); a new activation, even of it, is tried at once.
FOLLOW_RETRY_SECONDS = 30.0

# Schema 1: `FilmFeatures` (artifacts trained before issue 14 keep loading); schema 2:
# `PreReleaseFeatures`.
SUPPORTED_SCHEMAS = (1, LATEST_SCHEMA)

# Films that exercise every branch of the feature code: fully described, bare, undated,
# unknown budget. Used to check a freshly loaded artifact before it may serve.
SMOKE_FILMS: list[dict[str, Any]] = [
    {
        "title": "Sample Sequel 2",
        "budget": 150_000_000,
        "runtime": 128,
        "release_date": "2030-05-17",
        "genres": ["Action", "Adventure", "Science Fiction"],
        "original_language": "en",
        "production_companies": ["Walt Disney Pictures", "Marvel Studios"],
        "production_countries": ["US"],
        "spoken_languages": ["en"],
        "keywords": ["sequel", "superhero", "based on comic"],
        "homepage": "https://example.org",
        "tagline": "Again.",
        "belongs_to_collection": "Sample Collection",
        "cast": [{"name": "Robert Downey Jr.", "order": 0}, {"name": "Chris Evans", "order": 1}],
        "crew": [{"name": "Joss Whedon", "job": "Director"}],
    },
    {"title": "Bare"},
    {
        "title": "Small drama",
        "budget": 2_000_000,
        "genres": ["Drama"],
        "release_date": "1999-01-04",
    },
    {"title": "Unknown budget", "runtime": 95, "genres": ["Horror"], "original_language": "fr"},
]


class ArtifactError(Exception):
    """An artifact that must not serve: missing, corrupt, or incompatible."""


@dataclass
class LoadedModel:
    """One version of one model, ready to score. Immutable once built."""

    name: str
    version: str
    card: ModelCard
    pipeline: Pipeline
    features: FilmFeatures | EngagementFeatures
    reference_scorer: Scorer
    fast_scorer: Scorer | None
    occlusion: GroupOcclusion
    path: Path
    # What drift is measured against (`app.ml.drift`); None for versions trained without one,
    # which serve all the same (`profile_note` says why there is none).
    profile: dict[str, Any] | None = None
    profile_note: str = ""
    batch_features: BatchFeatures | None = None
    fast_max_rows: int = 0  # batches up to this size use `fast_scorer`
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    feature_names: tuple[str, ...] = field(init=False)
    feature_index: dict[str, int] = field(init=False)
    input_reader: InputReader = field(init=False)  # the monitored inputs, for the log
    _shap: ShapExplainer | bool | None = field(init=False, default=None, repr=False)
    _shap_lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)
    _per_output: EngagementExplainer | None = field(init=False, default=None, repr=False)

    @property
    def classifier(self) -> bool:
        return self.card.task == "classification"

    def __post_init__(self) -> None:
        # Derived once: requests use these on every call.
        self.feature_names = tuple(self.features.feature_names_)
        self.feature_index = {n: i for i, n in enumerate(self.feature_names)}
        self.input_reader = InputReader(self.feature_names)

    def score_matrix(self, X: FloatMatrix) -> FloatVector:
        if self.fast_scorer is not None and X.shape[0] <= self.fast_max_rows:
            return self.fast_scorer(X)
        return self.reference_scorer(X)

    def transform(self, records: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        if self.batch_features is not None:
            return self.batch_features(records)
        return self.features.transform(records)

    def explainer(self) -> ShapExplainer | GroupOcclusion:
        """SHAP for tree models of schema 2 (built on first use: importing shap and
        converting the trees takes a while), occlusion otherwise."""
        if self._shap is None:
            with self._shap_lock:
                if self._shap is None:
                    try:
                        built = ShapExplainer.build(self.pipeline)
                    except Exception:  # shap cannot read this model: occlusion still works
                        log.exception(
                            "%s %s: SHAP unavailable, using occlusion", self.name, self.version
                        )
                        built = None
                    self._shap = built if built is not None else False
        return self._shap if isinstance(self._shap, ShapExplainer) else self.occlusion

    @property
    def explanation_method(self) -> str:
        return "shap" if isinstance(self.explainer(), ShapExplainer) else "occlusion"

    def explain(self, X: FloatMatrix) -> tuple[FloatVector, FloatMatrix]:
        return self.explainer().contributions(X, self.score_matrix)

    def output_explainer(self) -> EngagementExplainer:
        """The engagement model's explainer, one per output (built on first use, like SHAP)."""
        if self._per_output is None:
            with self._shap_lock:
                if self._per_output is None:
                    self._per_output = EngagementExplainer.build(self.pipeline, self.occlusion)
        return self._per_output


def _check_versions(card: ModelCard) -> None:
    trained = card.library_versions.get("scikit-learn", "")
    running = metadata.version("scikit-learn")
    if trained.split(".")[:2] != running.split(".")[:2]:
        # Pickled estimators are only guaranteed to load in the version that wrote them.
        raise ArtifactError(
            f"trained with scikit-learn {trained or 'unknown'}, this service runs {running}; "
            "retrain (tmdb-analytics train)"
        )


def load_version(root: Path, name: str, version: str, cache_dir: Path | None = None) -> LoadedModel:
    """Load and check one version (blocking: call it in a thread); `cache_dir`: see
    `_unpickled`."""
    try:
        directory = artifacts.version_dir(root, name, version)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    card_path = directory / artifacts.CARD_FILE
    model_path = directory / artifacts.MODEL_FILE
    if not card_path.is_file() or not model_path.is_file():
        raise ArtifactError(f"{name} {version}: no such version under {root}")
    try:
        card = ModelCard.model_validate(json.loads(card_path.read_text(encoding="utf-8")))
    except (ValueError, ValidationError) as exc:
        raise ArtifactError(
            f"{name} {version}: invalid model card ({exc.__class__.__name__})"
        ) from None
    if card.name != name or card.version != version:
        raise ArtifactError(f"{name} {version}: card describes {card.name} {card.version}")
    if card.feature_schema_version not in SUPPORTED_SCHEMAS:
        raise ArtifactError(
            f"{name} {version}: feature schema {card.feature_schema_version}, "
            f"this service speaks {', '.join(map(str, SUPPORTED_SCHEMAS))}"
        )
    _check_versions(card)
    if card.task != artifacts.MODEL_TASKS.get(name):
        raise ArtifactError(f"{name} {version}: task {card.task} does not fit model {name}")
    if card.task == "regression" and card.interval is None:
        raise ArtifactError(f"{name} {version}: card has no interval calibration")
    if card.task == "multi_regression" and set(card.outputs or {}) != set(OUTPUTS):
        raise ArtifactError(f"{name} {version}: card does not describe outputs {OUTPUTS}")
    if card.task == "classification" and card.threshold is None:
        raise ArtifactError(f"{name} {version}: card has no decision threshold")
    digest = artifacts.sha256_file(model_path)
    if digest != card.artifact.sha256:
        raise ArtifactError(f"{name} {version}: model file does not match its card (corrupt?)")
    try:
        pipeline = _unpickled(model_path, digest, cache_dir)
    except Exception as exc:  # unpickling can fail in any way; none of them may serve
        raise ArtifactError(
            f"{name} {version}: cannot load model ({exc.__class__.__name__})"
        ) from None
    return _assemble(name, version, card, pipeline, directory)


def _unpickled(model_path: Path, digest: str, cache_dir: Path | None) -> Any:
    """The object in `model_path`, whose bytes match `digest` (the card's). joblib reads with
    Python's pure-Python unpickler (about 1.3 s for the three models, most of a model's
    load); a copy in the standard pickle format, kept in `cache_dir` under that digest and
    the running library versions, loads in C in a quarter of the time. The copy is written
    by this service in its own data folder, and any failure to read it falls back to the
    artifact."""
    key = "-".join(
        [digest[:32], *(metadata.version(p) for p in ("scikit-learn", "numpy", "lightgbm"))]
    )
    cached = cache_dir / f"{key}.pickle" if cache_dir is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)  # e.g. version mismatch
        if cached is not None and cached.is_file():
            try:
                with cached.open("rb") as fh:
                    pipeline = pickle.load(fh)
                with contextlib.suppress(OSError):
                    os.utime(cached)  # in use: kept by `_prune_cache`
                return pipeline
            except Exception as exc:
                log.warning("model cache %s unreadable (%s): loading the artifact", cached, exc)
        pipeline = joblib.load(model_path)
    if cached is not None:
        try:
            cached.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            partial = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            with partial.open("wb") as fh:
                pickle.dump(pipeline, fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, cached)  # whole or not at all, for other processes too
        except (OSError, pickle.PicklingError) as exc:
            log.warning("model cache not written (%s)", exc)
        _prune_cache(cached.parent)
    return pipeline


CACHE_UNUSED_DAYS = 30


def _prune_cache(cache_dir: Path) -> None:
    """Drop the copies no start has read for CACHE_UNUSED_DAYS (retired versions, older
    library versions) and partial writes a day old (a process killed while writing)."""
    now = time.time()
    for path in cache_dir.iterdir():
        with contextlib.suppress(OSError):
            age = now - path.stat().st_mtime
            if (path.suffix == ".pickle" and age > CACHE_UNUSED_DAYS * 86400) or (
                path.name.endswith(".tmp") and age > 86400
            ):
                path.unlink()


def _assemble(
    name: str, version: str, card: ModelCard, pipeline: Any, directory: Path
) -> LoadedModel:
    multi = card.task == "multi_regression"
    step = EngagementFeatures if multi else FilmFeatures
    if not isinstance(pipeline, Pipeline) or not isinstance(pipeline[0], step):
        raise ArtifactError(f"{name} {version}: not a {step.__name__} pipeline")
    features: FilmFeatures | EngagementFeatures = pipeline[0]
    # The engagement transformer wraps a `FilmFeatures`: its schema is that of the wrapped one.
    base = features.base_ if isinstance(features, EngagementFeatures) else features
    if base.schema_version != card.feature_schema_version:
        raise ArtifactError(
            f"{name} {version}: features are not schema {card.feature_schema_version}"
        )
    if list(features.feature_names_) != [f.name for f in card.features]:
        raise ArtifactError(f"{name} {version}: features differ from the card's schema")
    classifier = card.task == "classification"
    if classifier and not hasattr(pipeline, "predict_proba"):
        raise ArtifactError(f"{name} {version}: a classifier without predict_proba")
    reference = pipeline_scorer(pipeline, classifier)
    smoke = [film_record(f) for f in SMOKE_FILMS]
    try:
        X = features.transform(smoke)
        X = np.vstack([X, np.asarray(features.reference_, dtype=np.float64)[None, :]])
        scores = reference(X)
    except Exception as exc:  # any failure to score sample films disqualifies the artifact
        raise ArtifactError(f"{name} {version}: scoring sample films failed ({exc!r})") from None
    if (
        not np.all(np.isfinite(scores))
        or (classifier and not np.all((scores >= 0) & (scores <= 1)))
        or (multi and scores.shape != (len(X), len(OUTPUTS)))
    ):
        raise ArtifactError(f"{name} {version}: sample predictions out of range")
    fast = compile_engagement(pipeline) if multi else compile_tail(pipeline)
    if fast is not None and not verified(fast, reference, X):
        log.warning("%s %s: compiled scorer disagrees with scikit-learn; not used", name, version)
        fast = None
    profile, note = read_profile(directory, card.profile)
    if note and card.profile is not None:
        log.warning("%s %s: %s; drift is not measured for it", name, version, note)
    batch: BatchFeatures | None = None
    # The batch path mirrors `FilmFeatures` (schema 2's `PreReleaseFeatures` adds its own
    # columns through its code): the engagement model's features (its own audience track
    # record on top) go through their transformer, item by item.
    if isinstance(features, FilmFeatures):
        try:
            batch = BatchFeatures(features)
        except (KeyError, AttributeError, ValueError) as exc:  # a fitted state it cannot read
            log.warning("%s %s: no batch feature path (%r)", name, version, exc)
    if batch is not None and not batch_verified(batch, smoke):
        log.warning("%s %s: batch features disagree with FilmFeatures; not used", name, version)
        batch = None
    return LoadedModel(
        name=name,
        version=version,
        card=card,
        pipeline=pipeline,
        features=features,
        reference_scorer=reference,
        fast_scorer=fast,
        occlusion=GroupOcclusion(features.feature_groups_, features.reference_),
        path=directory,
        profile=profile,
        profile_note=note,
        batch_features=batch,
        fast_max_rows=(0 if fast is None else sys.maxsize if scales(fast) else FAST_MAX_ROWS),
    )


@dataclass(frozen=True, slots=True)
class FollowFailure:
    """The database names a version this process cannot load; it keeps serving its own."""

    record: ActiveRecord
    reason: str
    at: float  # time.monotonic()


class ModelRegistry:
    """The active `LoadedModel` per name, plus why a model is missing when it is.

    Without `db` (tests, tools) the `ACTIVE` files alone say what serves, as before the
    database kept it.
    """

    def __init__(
        self,
        root: Path,
        names: Sequence[str] = artifacts.MODEL_NAMES,
        db: AsyncDatabase[Document] | None = None,
        check_seconds: float = 1.0,
        cache_dir: Path | None = None,
    ) -> None:
        self.root = root
        self.cache_dir = cache_dir  # faster loads (`_unpickled`); None: none kept
        self.names = tuple(names)
        self.monitor = PredictionMonitor()
        self._db = db
        self._check_seconds = check_seconds
        self._models: dict[str, LoadedModel] = {}
        self._problems: dict[str, str] = {}
        self._records: dict[str, ActiveRecord] = {}  # as last read from the database
        self._failures: dict[str, FollowFailure] = {}
        self._lock = asyncio.Lock()  # one load/activation at a time; reads never wait
        self._follower: asyncio.Task[None] | None = None
        self._check_failing = False

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def problem(self, name: str) -> str | None:
        return self._problems.get(name)

    def record(self, name: str) -> ActiveRecord | None:
        """The database's active version of `name`, as this process last read it."""
        return self._records.get(name)

    def behind(self, name: str, *, reason: bool = True) -> str | None:
        """Why this process serves another version than the database names, if it does;
        `reason=False` leaves out the load error (it may name paths) for non-admins."""
        failure = self._failures.get(name)
        if failure is None:
            return None
        current = self._models.get(name)
        rec = failure.record
        return (
            f"serving {current.version if current else 'nothing'}, but the database names "
            f"{rec.version} (by {rec.activated_by} at {rec.activated_at:%Y-%m-%dT%H:%M:%SZ}), "
            f"which cannot load here" + (f": {failure.reason}" if reason else "")
        )

    async def readiness(self) -> str:
        """Readiness: every model serving, else which are not and why (an optional model
        never trained in this artifacts directory does not count, see `_never_trained`)."""
        # A process serving another version than the database names is not ready either: it
        # would answer with a version the others no longer use.
        missing = [
            f"{n}: {self.problem(n) or 'not loaded'}"
            if self.get(n) is None
            else f"{n}: {self.behind(n)}"
            for n in self.names
            if (self.get(n) is None and not self._never_trained(n)) or self.behind(n)
        ]
        return "ok" if not missing else "not ready: " + "; ".join(missing)

    def _never_trained(self, name: str) -> bool:
        """An optional model (artifacts.OPTIONAL_MODELS) with no version on disk and none
        named by the database: an artifacts directory from before it existed. Everything
        else still serves, so the process is ready; its endpoint says why it cannot answer."""
        return (
            name in artifacts.OPTIONAL_MODELS
            and self._records.get(name) is None
            and not self.versions(name)
        )

    def versions(self, name: str) -> list[str]:
        return artifacts.list_versions(self.root, name)

    async def load_all(self) -> None:
        """Startup: load what the database (else `ACTIVE`) names; remember why not when not."""
        records: dict[str, ActiveRecord] | None = None
        if self._db is not None:
            try:
                records = await model_versions.read_all(self._db, self.names)
            except PyMongoError as exc:
                # Serve the files' versions now; the follower catches up once the database is back.
                log.warning("model versions unreadable at startup: %s", exc.__class__.__name__)
        for name in self.names:
            async with self._lock:
                rec = (records or {}).get(name)
                if rec is not None:
                    await self._follow(name, rec)
                if name in self._models:
                    continue
                version = artifacts.read_active(self.root, name)
                if version is None:
                    # Keep the reason the database's version failed, when it did.
                    self._problems.setdefault(name, self._nothing_trained(name))
                    log.warning("model %s not loaded: %s", name, self._problems[name])
                elif rec is None or version != rec.version:  # the fallback, unless just failed
                    try:
                        self._swap(await self._load(name, version))
                    except ArtifactError as exc:
                        log.warning("model %s not loaded: %s", name, exc)
        if records is not None:
            with contextlib.suppress(PyMongoError):  # the follower retries
                await self.follow()  # records the files' versions where the database had none

    async def reload(self, name: str, by: str = "unknown") -> LoadedModel:
        """Serve the version `ACTIVE` names (re-read from disk) everywhere."""
        async with self._lock:
            version = artifacts.read_active(self.root, name)
            if version is None:
                message = self._nothing_trained(name)
                if name not in self._models:
                    self._problems[name] = message
                raise ArtifactError(message)
            return await self._activate(name, version, by, "reload", write_file=False)

    async def activate(self, name: str, version: str, by: str = "unknown") -> LoadedModel:
        """Serve `version` everywhere and make it the one later startups load."""
        async with self._lock:
            return await self._activate(name, version, by, "activate", write_file=True)

    async def _activate(
        self, name: str, version: str, by: str, source: str, write_file: bool
    ) -> LoadedModel:
        model = await self._load(name, version)  # refused here: nothing has changed
        if self._db is not None:
            # Raises when the database is unreachable: still nothing changed anywhere.
            self._records[name] = await model_versions.record(self._db, name, version, by, source)
        if write_file:
            try:
                await asyncio.to_thread(artifacts.write_active, self.root, name, version)
            except OSError as exc:  # only the fallback; the database already holds the truth
                if self._db is None:
                    raise
                log.warning("model %s: could not write %s: %s", name, artifacts.ACTIVE_FILE, exc)
        self._swap(model)
        self._caught_up(name)
        return model

    async def follow(self) -> None:
        """One check: serve what the database names, recording what serves where it names
        nothing yet. Raises `PyMongoError` when the database does not answer."""
        if self._db is None:
            return
        records = await model_versions.read_all(self._db, self.names)
        for name in self.names:
            if not self._wants(name, records.get(name)):
                continue
            async with self._lock:
                # Re-read under the lock: an activation in this process may have just
                # overtaken what the first read saw.
                rec = await model_versions.read(self._db, name)
                if rec is None:
                    current = self._models.get(name)
                    if current is None:
                        continue
                    rec = await model_versions.seed(self._db, name, current.version, _process())
                await self._follow(name, rec)

    def _wants(self, name: str, rec: ActiveRecord | None) -> bool:
        if rec is None:
            return name in self._models  # to seed the database
        current = self._models.get(name)
        failure = self._failures.get(name)
        if current is not None and current.version == rec.version:
            return failure is not None or self._records.get(name) != rec
        if failure is not None and failure.record == rec:
            return time.monotonic() - failure.at >= FOLLOW_RETRY_SECONDS
        return True

    async def _follow(self, name: str, rec: ActiveRecord) -> None:
        """Serve `rec`'s version (under the lock); one that cannot load is reported, never
        raised: this process keeps serving what it has."""
        self._records[name] = rec
        current = self._models.get(name)
        if current is None or current.version != rec.version:
            try:
                self._swap(await self._load(name, rec.version))
            except ArtifactError as exc:
                self._failures[name] = FollowFailure(rec, str(exc), time.monotonic())
                MODEL_FOLLOW_FAILURES.labels(name).inc()
                MODEL_BEHIND.labels(name).set(1)
                log.warning("model %s: %s", name, self.behind(name))
                return
        self._caught_up(name)

    def _caught_up(self, name: str) -> None:
        if self._failures.pop(name, None) is not None:
            log.info("model %s: serving the version the database names again", name)
        MODEL_BEHIND.labels(name).set(0)

    def _nothing_trained(self, name: str) -> str:
        return f"no trained version under {self.root / name} (run tmdb-analytics train)"

    async def _load(self, name: str, version: str) -> LoadedModel:
        try:
            return await asyncio.to_thread(load_version, self.root, name, version, self.cache_dir)
        except ArtifactError as exc:
            if name not in self._models:
                self._problems[name] = str(exc)
            raise

    def _swap(self, model: LoadedModel) -> None:
        previous = self._models.get(model.name)
        self._models[model.name] = model  # the atomic swap
        self._problems.pop(model.name, None)
        log.info(
            "model %s: serving %s (was %s)",
            model.name,
            model.version,
            previous.version if previous else "nothing",
        )

    def start_following(self) -> None:
        """Check the database every `check_seconds` in the background (no-op without one)."""
        if self._db is not None and self._follower is None:
            self._follower = asyncio.create_task(self._follow_loop())

    async def _follow_loop(self) -> None:
        this = asyncio.current_task()
        while True:
            # A cancel that lands inside a driver call can be swallowed there (seen with
            # PyMongo's async client): the loop would then run on and `close` wait forever.
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self._check_seconds)
            try:
                await self.follow()
            except PyMongoError as exc:
                if not self._check_failing:  # once per outage, not once a second
                    log.warning("model version check failed: %s", exc.__class__.__name__)
                self._check_failing = True
                continue
            except Exception:  # the loop must outlive any surprise; the next check retries
                log.exception("model version check failed")
                continue
            if self._check_failing:
                log.info("model version check works again")
                self._check_failing = False

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None


def _process() -> str:
    """Who seeded the database from its ACTIVE file, for the record."""
    return f"{socket.gethostname()} pid {os.getpid()}"
