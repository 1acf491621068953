"""The model registry: which version of each model serves, loaded once and swapped atomically.

- Startup loads the active version of every model (`ARTIFACTS_DIR/<model>/ACTIVE`, else the
  newest complete version). A model that cannot load is reported by `/ready`, never as a 500
  on a later request.
- `reload` re-reads the active pointer; `activate` serves a given version and moves the
  pointer. Both build and check the new model completely *before* the swap: the card must
  validate, the file must match the card's sha256 (a truncated or corrupt file never reaches
  the unpickler), the feature schema and scikit-learn version must match this code, and the
  pipeline must score sample films to finite numbers. Any failure raises `ArtifactError` and
  the old model keeps serving.
- The swap is one reference assignment. A request takes the `LoadedModel` once at its start
  and uses only that object, so in-flight requests finish on the model they started with.

Artifacts are pickles: only load them from a directory you control (ARTIFACTS_DIR).
"""

from __future__ import annotations

import asyncio
import json
import logging
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
from sklearn.pipeline import Pipeline

from app.ml import artifacts
from app.ml.card import ModelCard
from app.ml.explain import GroupOcclusion
from app.ml.fastpath import Scorer, compile_tail, pipeline_scorer, verified
from app.ml.features import FEATURE_SCHEMA_VERSION, FilmFeatures, film_record
from app.ml.monitoring import PredictionMonitor
from app.services.health import EXTRA_CHECKS
from app.state import AppState

log = logging.getLogger("app.ml.registry")
FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
REGISTRY_KEY = "models"
# Up to this many rows the compiled scorer wins (1 film: ~0.1 ms against ~3-10 ms; 64:
# ~2 ms against ~6-11 ms); from ~500 rows scikit-learn's own per-tree loop is as fast.
FAST_MAX_ROWS = 256

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
    features: FilmFeatures
    reference_scorer: Scorer
    fast_scorer: Scorer | None
    occlusion: GroupOcclusion
    path: Path
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    feature_names: tuple[str, ...] = field(init=False)
    feature_index: dict[str, int] = field(init=False)

    @property
    def classifier(self) -> bool:
        return self.card.task == "classification"

    def __post_init__(self) -> None:
        # Derived once: requests use these on every call.
        self.feature_names = tuple(self.features.feature_names_)
        self.feature_index = {n: i for i, n in enumerate(self.feature_names)}

    def score_matrix(self, X: FloatMatrix) -> FloatVector:
        if self.fast_scorer is not None and X.shape[0] <= FAST_MAX_ROWS:
            return self.fast_scorer(X)
        return self.reference_scorer(X)

    def transform(self, records: Sequence[Mapping[str, Any]]) -> FloatMatrix:
        return self.features.transform(records)

    def explain(self, X: FloatMatrix) -> tuple[FloatVector, FloatMatrix]:
        return self.occlusion.contributions(X, self.score_matrix)


def _check_versions(card: ModelCard) -> None:
    trained = card.library_versions.get("scikit-learn", "")
    running = metadata.version("scikit-learn")
    if trained.split(".")[:2] != running.split(".")[:2]:
        # Pickled estimators are only guaranteed to load in the version that wrote them.
        raise ArtifactError(
            f"trained with scikit-learn {trained or 'unknown'}, this service runs {running}; "
            "retrain (tmdb-analytics train)"
        )


def load_version(root: Path, name: str, version: str) -> LoadedModel:
    """Load and check one version (blocking: call it in a thread)."""
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
    if card.feature_schema_version != FEATURE_SCHEMA_VERSION:
        raise ArtifactError(
            f"{name} {version}: feature schema {card.feature_schema_version}, "
            f"this service speaks {FEATURE_SCHEMA_VERSION}"
        )
    _check_versions(card)
    if (name == "revenue") != (card.task == "regression"):
        raise ArtifactError(f"{name} {version}: task {card.task} does not fit model {name}")
    if card.task == "regression" and card.interval is None:
        raise ArtifactError(f"{name} {version}: card has no interval calibration")
    if card.task == "classification" and card.threshold is None:
        raise ArtifactError(f"{name} {version}: card has no decision threshold")
    digest = artifacts.sha256_file(model_path)
    if digest != card.artifact.sha256:
        raise ArtifactError(f"{name} {version}: model file does not match its card (corrupt?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=UserWarning)  # e.g. version mismatch
            pipeline = joblib.load(model_path)
    except Exception as exc:  # unpickling can fail in any way; none of them may serve
        raise ArtifactError(
            f"{name} {version}: cannot load model ({exc.__class__.__name__})"
        ) from None
    return _assemble(name, version, card, pipeline, directory)


def _assemble(
    name: str, version: str, card: ModelCard, pipeline: Any, directory: Path
) -> LoadedModel:
    if not isinstance(pipeline, Pipeline) or not isinstance(pipeline[0], FilmFeatures):
        raise ArtifactError(f"{name} {version}: not a FilmFeatures pipeline")
    features: FilmFeatures = pipeline[0]
    if list(features.feature_names_) != [f.name for f in card.features]:
        raise ArtifactError(f"{name} {version}: features differ from the card's schema")
    classifier = card.task == "classification"
    if classifier and not hasattr(pipeline, "predict_proba"):
        raise ArtifactError(f"{name} {version}: a classifier without predict_proba")
    reference = pipeline_scorer(pipeline, classifier)
    try:
        X = features.transform([film_record(f) for f in SMOKE_FILMS])
        X = np.vstack([X, np.asarray(features.reference_, dtype=np.float64)[None, :]])
        scores = reference(X)
    except Exception as exc:  # any failure to score sample films disqualifies the artifact
        raise ArtifactError(f"{name} {version}: scoring sample films failed ({exc!r})") from None
    if not np.all(np.isfinite(scores)) or (
        classifier and not np.all((scores >= 0) & (scores <= 1))
    ):
        raise ArtifactError(f"{name} {version}: sample predictions out of range")
    fast = compile_tail(pipeline)
    if fast is not None and not verified(fast, reference, X):
        log.warning("%s %s: compiled scorer disagrees with scikit-learn; not used", name, version)
        fast = None
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
    )


class ModelRegistry:
    """The active `LoadedModel` per name, plus why a model is missing when it is."""

    def __init__(self, root: Path, names: Sequence[str] = artifacts.MODEL_NAMES) -> None:
        self.root = root
        self.names = tuple(names)
        self.monitor = PredictionMonitor()
        self._models: dict[str, LoadedModel] = {}
        self._problems: dict[str, str] = {}
        self._lock = asyncio.Lock()  # one reload/activate at a time; reads never wait

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def problem(self, name: str) -> str | None:
        return self._problems.get(name)

    def versions(self, name: str) -> list[str]:
        return artifacts.list_versions(self.root, name)

    async def load_all(self) -> None:
        """Startup: load what can be loaded, remember why the rest cannot."""
        for name in self.names:
            try:
                await self.reload(name)
            except ArtifactError as exc:
                log.warning("model %s not loaded: %s", name, exc)

    async def reload(self, name: str) -> LoadedModel:
        """Serve the version `ACTIVE` names (re-read from disk)."""
        async with self._lock:
            version = artifacts.read_active(self.root, name)
            if version is None:
                message = f"no trained version under {self.root / name} (run tmdb-analytics train)"
                if name not in self._models:
                    self._problems[name] = message
                raise ArtifactError(message)
            return await self._load_and_swap(name, version, move_pointer=False)

    async def activate(self, name: str, version: str) -> LoadedModel:
        """Serve `version` and make it the one later startups load."""
        async with self._lock:
            return await self._load_and_swap(name, version, move_pointer=True)

    async def _load_and_swap(self, name: str, version: str, move_pointer: bool) -> LoadedModel:
        try:
            model = await asyncio.to_thread(load_version, self.root, name, version)
        except ArtifactError as exc:
            if name not in self._models:
                self._problems[name] = str(exc)
            raise
        if move_pointer:
            await asyncio.to_thread(artifacts.write_active, self.root, name, version)
        previous = self._models.get(name)
        self._models[name] = model  # the atomic swap
        self._problems.pop(name, None)
        log.info(
            "model %s: serving %s (was %s)",
            name,
            version,
            previous.version if previous else "nothing",
        )
        return model


def get_registry(state: AppState) -> ModelRegistry | None:
    registry = state.extras.get(REGISTRY_KEY)
    return registry if isinstance(registry, ModelRegistry) else None


async def startup(state: AppState) -> ModelRegistry:
    """Called from the app lifespan."""
    registry = ModelRegistry(state.settings.artifacts_dir)
    await registry.load_all()
    state.extras[REGISTRY_KEY] = registry
    return registry


async def models_check(state: AppState) -> str:
    """Readiness: every model serving, else which are not and why."""
    registry = get_registry(state)
    if registry is None:
        return "not ready: model registry not started"
    missing = [
        f"{n}: {registry.problem(n) or 'not loaded'}"
        for n in registry.names
        if registry.get(n) is None
    ]
    return "ok" if not missing else "not ready: " + "; ".join(missing)


EXTRA_CHECKS["models"] = models_check
