"""The model card: one JSON file beside every artifact, written by training, validated by the
registry before a model may serve, and returned by `GET /v1/models/{name}`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class FeatureSpec(BaseModel):
    name: str
    type: Literal["numeric", "binary", "count"]
    group: str = Field(description="Input field the feature derives from (explanations use it)")


class SplitInfo(BaseModel):
    strategy: Literal["time", "random"]
    reason: str
    train: int
    validation: int
    test: int
    train_until: str | None = Field(default=None, description="Last release date in train")
    test_from: str | None = Field(default=None, description="First release date in test")


class DataInfo(BaseModel):
    source: str = Field(examples=["mongodb:tmdb"])
    sha256: str = Field(description="Hash of the canonical training records")
    films: int = Field(description="Films read")
    rows: int = Field(description="Films with a known target (the modelling population)")
    split: SplitInfo


class Candidate(BaseModel):
    family: str
    params: dict[str, Any]
    validation: dict[str, float]
    fit_seconds: float


class IntervalSpec(BaseModel):
    """Split-conformal interval on log1p(revenue): prediction + the residual quantiles of
    held-out films, separately for films with and without a known budget (their errors
    differ several-fold, so one pooled width would over-cover one and under-cover the other)."""

    method: str
    quantiles: tuple[float, float] = (0.1, 0.9)
    offsets: dict[str, tuple[float, float]] = Field(
        description="group -> (low, high) offsets in log1p dollars"
    )
    calibration_rows: int
    coverage_test: float = Field(description="Share of test films inside their interval")
    levels: dict[str, dict[str, tuple[float, float]]] | None = Field(
        default=None,
        description="Nominal level (e.g. '0.95') -> group -> (low, high) offsets; a request "
        "may ask for any of these levels (schema 2)",
    )
    coverage_test_levels: dict[str, float] | None = Field(
        default=None, description="Level -> share of test films inside their interval"
    )


class OutputSpec(BaseModel):
    """One output of a multi-output model (`engagement`): what it predicts, in which units
    the estimator works, and its interval (offsets in those units)."""

    target: str
    transform: Literal["log1p", "identity"] = Field(
        description="log1p: the estimator predicts log1p(value); identity: the value itself"
    )
    bounds: tuple[float, float | None] = Field(description="Valid range of the value")
    interval: IntervalSpec


class ArtifactInfo(BaseModel):
    file: str
    sha256: str
    bytes: int


class ProfileInfo(BaseModel):
    """The reference profile beside the model (`app.ml.drift`): what drift is measured
    against."""

    file: str = Field(examples=["profile.json"])
    sha256: str
    films: int = Field(description="Training films it describes (the served fit's films)")


class MlflowInfo(BaseModel):
    tracking_uri: str | None = Field(
        default=None,
        description="Shown to admins only: it may carry credentials or local paths",
    )
    experiment: str
    run_id: str
    model_uri: str | None = None
    registered_model: str | None = None
    registered_version: str | None = None


class ModelCard(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: Literal["revenue", "hit", "engagement"]
    version: str
    created_at: datetime
    task: Literal["regression", "classification", "multi_regression"]
    target: str
    git_sha: str | None = None
    data: DataInfo
    feature_schema_version: int
    input_fields: list[str]
    features: list[FeatureSpec]
    family: str = Field(description="Chosen model family")
    params: dict[str, Any]
    candidates: list[Candidate]
    validation_metrics: dict[str, float]
    metrics: dict[str, Any] = Field(description="Test metrics (films the model never saw)")
    interval: IntervalSpec | None = None
    threshold: float | None = Field(default=None, description="Hit decision threshold")
    outputs: dict[str, OutputSpec] | None = Field(
        default=None, description="Multi-output models (engagement): each output and its interval"
    )
    final_fit: str = Field(description="What the served model was fitted on")
    library_versions: dict[str, str]
    artifact: ArtifactInfo
    profile: ProfileInfo | None = Field(
        default=None,
        description="Distribution of the monitored inputs and of the output over the training "
        "films (absent from versions trained before drift monitoring)",
    )
    mlflow: MlflowInfo | None = None
    training_seconds: float
    selection: dict[str, Any] | None = Field(
        default=None,
        description="Time-series cross-validation: folds, feature ablation, search space, "
        "stacking (schema 2)",
    )
    calibration: dict[str, Any] | None = Field(
        default=None, description="How P(hit) was calibrated (method chosen on validation)"
    )
    explanations: str | None = Field(
        default=None, description="How `explain=true` computes contributions: shap or occlusion"
    )

    def without_internals(self) -> ModelCard:
        """The card as non-admins see it: no MLflow tracking URI."""
        if self.mlflow is None or self.mlflow.tracking_uri is None:
            return self
        mlflow = self.mlflow.model_copy(update={"tracking_uri": None})
        return self.model_copy(update={"mlflow": mlflow})
