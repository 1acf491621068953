"""Bodies of model monitoring: drift, live accuracy, outcomes, and MLflow's record of what
serves (see `app.services.monitoring`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

DriftStatus = Literal["ok", "warn", "drift"]
# The served models (`app.ml.artifacts.MODEL_NAMES`); defined here, the leaf module of the two.
ModelName = Literal["revenue", "hit", "engagement"]


class DriftFeature(BaseModel):
    feature: str = Field(
        examples=["budget"],
        description="A monitored input (by its readable name) or `output` (the model's score: "
        "log1p revenue, or the probability of a hit)",
    )
    kind: Literal["numeric", "category", "output"]
    psi: float | None = Field(
        description="Population stability index against the training films (null when n = 0)"
    )
    p_value: float | None = Field(
        description="Two-sample test: Kolmogorov-Smirnov for numbers (with a chi-squared test "
        "of the missing share), chi-squared for categories"
    )
    status: DriftStatus
    missing_rate: float | None = Field(default=None, description="Among the logged predictions")
    reference_missing_rate: float = Field(description="Among the training films")


class DriftReport(BaseModel):
    model: ModelName
    version: str = Field(description="The version whose predictions and profile are compared")
    status: DriftStatus = Field(description="The worst status of the features")
    n: int = Field(description="Logged predictions compared (0: status ok)")
    since: str
    until: str
    features: list[DriftFeature]
    note: str | None = Field(
        default=None,
        description="Why nothing was compared, when so (e.g. a version trained before "
        "reference profiles)",
    )


class DriftSummary(BaseModel):
    """The model's last drift check in this process (the list shows it without computing)."""

    status: DriftStatus
    version: str
    n: int
    checked_at: str
    drifting: list[str] = Field(description="Features with status drift")


class PerformanceSlice(BaseModel):
    n: int = Field(description="Predictions whose outcome is known (each film once)")
    metrics: dict[str, Any]


class VersionPerformance(PerformanceSlice):
    version: str
    test_metrics: dict[str, Any] | None = Field(
        default=None, description="The same figures on the version's test films (its card)"
    )


class MonthPerformance(PerformanceSlice):
    month: str = Field(examples=["2026-11"], description="Month the predictions were made")


class PerformanceReport(BaseModel):
    model: ModelName
    n: int = Field(description="Films predicted whose outcome is known (each film once)")
    metrics: dict[str, Any] = Field(
        description="revenue: rmsle, interval_coverage, mae_usd, median_ae_usd; hit: roc_auc, "
        "precision, recall, f1, accuracy, confusion_matrix (null where undefined)"
    )
    by_version: list[VersionPerformance]
    by_month: list[MonthPerformance]


class OutcomeItem(BaseModel):
    id: int = Field(ge=1, le=2**53, description="TMDB id of the film, as sent with its prediction")
    revenue: float | None = Field(
        default=None, gt=0, le=1e12, description="Actual worldwide revenue in USD"
    )
    vote_count: int | None = Field(
        default=None, ge=0, le=10**9, description="TMDB votes the film has now (engagement)"
    )
    vote_average: float | None = Field(
        default=None, ge=0, le=10, description="Its TMDB rating now, 0-10 (engagement)"
    )

    @model_validator(mode="after")
    def _some_figure(self) -> OutcomeItem:
        if self.revenue is None and self.vote_count is None and self.vote_average is None:
            raise ValueError("give at least one of revenue, vote_count, vote_average")
        return self

    def figures(self) -> dict[str, float]:
        return {
            k: float(v)
            for k, v in (
                ("revenue", self.revenue),
                ("vote_count", self.vote_count),
                ("vote_average", self.vote_average),
            )
            if v is not None
        }


class OutcomesRequest(BaseModel):
    items: list[OutcomeItem] = Field(min_length=1, max_length=1000)


class OutcomesResult(BaseModel):
    recorded: int = Field(description="Films whose outcome is now known")
    new: int = Field(description="Of which were not known before")
    predicted: int = Field(description="Of which some logged prediction names")


class MlflowSync(BaseModel):
    """Whether MLflow's registered model follows the switch (its `champion` alias)."""

    status: Literal["set", "failed", "pending", "skipped"] = Field(
        description="`failed`: MLflow unreachable or refused (serving is unaffected); "
        "`pending`: still trying when the answer was sent; `skipped`: nothing to set"
    )
    registered_model: str | None = None
    registered_version: str | None = None
    detail: str | None = None
