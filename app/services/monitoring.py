"""Model monitoring behind `/v1/models/{name}/drift|performance|monitoring` and
`tmdb-analytics monitor`: drift of the logged inputs against the serving version's reference
profile, live accuracy of the logged predictions whose outcome became known, the Prometheus
gauges, the drift status the model list shows (cached: the list never computes), and the
retraining advice.

*Drift* compares the newest `DRIFT_MAX_PREDICTIONS` logged predictions of the version in the
window (default: the last `DRIFT_WINDOW_DAYS`) with its profile (`app.ml.drift`). A version
trained before profiles existed serves normally; its drift is `ok` with `n` counted, no
features and a `note` saying why nothing was compared.

*Live accuracy* joins each logged prediction that carries a TMDB id to that film's outcome
(`app.services.outcomes`, one per film). A film predicted several times counts once: its
latest prediction overall, its latest per version in `by_version`, its latest per month in
`by_month`. Revenue: RMSLE, interval coverage, absolute errors. Hit: the outcome is a hit as
training defines it (`app.ml.targets.is_hit`, with the budget the model was given; films
predicted without a budget cannot be judged and are left out), then ROC AUC, precision,
recall, F1, accuracy and the confusion matrix of the calls made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import Gauge
from pydantic import ValidationError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from app.db import Document
from app.errors import InvalidQueryError
from app.ml import artifacts, drift, live_metrics
from app.ml.card import ModelCard
from app.ml.engagement import MIN_RATED_VOTES
from app.ml.registry import LoadedModel, ModelRegistry
from app.ml.targets import is_hit
from app.models.monitoring import (
    DriftFeature,
    DriftReport,
    DriftSummary,
    MonthPerformance,
    OutcomesResult,
    PerformanceReport,
    VersionPerformance,
)
from app.services import model_versions, outcomes, prediction_log
from app.services.model_admin import known_model, serving_model
from app.settings import Settings

log = logging.getLogger("app.services.monitoring")

# Drift reads at most this many predictions (the newest of the window): enough for the tests
# to see a shift of a few percent, and a bounded read.
DRIFT_MAX_PREDICTIONS = 20_000

DRIFT_PSI = Gauge(
    "model_drift_psi",
    "Population stability index of a monitored input (or `output`) over the drift window.",
    ["model", "version", "feature"],
)
DRIFT_STATUS = Gauge(
    "model_drift_status",
    "Drift status over the drift window: 0 ok, 1 warn, 2 drift (feature `all`: the model's).",
    ["model", "version", "feature"],
)
DRIFT_PREDICTIONS = Gauge(
    "model_drift_predictions", "Logged predictions in the drift window.", ["model", "version"]
)


@dataclass(frozen=True)
class Watched:
    """What monitoring needs of a version: its card and reference profile (not the model)."""

    name: str
    version: str
    card: ModelCard
    profile: dict[str, Any] | None
    profile_note: str

    @classmethod
    def of(cls, model: LoadedModel) -> Watched:
        return cls(model.name, model.version, model.card, model.profile, model.profile_note)


def watched_on_disk(root: Path, name: str, version: str) -> Watched:
    """A version's card and profile read from its directory, without unpickling the model
    (commands; blocking). Raises `ValueError` for a version that is not there or not valid."""
    directory = artifacts.version_dir(root, name, version)
    try:
        card = ModelCard.model_validate_json((directory / artifacts.CARD_FILE).read_bytes())
    except (OSError, ValidationError) as exc:
        raise ValueError(
            f"{name} {version}: no readable model card ({exc.__class__.__name__})"
        ) from None
    profile, note = drift.read_profile(directory, card.profile)
    return Watched(name, version, card, profile, note)


def test_metrics(root: Path, name: str, version: str) -> dict[str, Any] | None:
    """The test metrics on a version's card, if the card can be read (blocking), named as
    live accuracy names them (the engagement card keeps them per output)."""
    try:
        metrics = watched_on_disk(root, name, version).card.metrics
    except ValueError:
        return None
    return live_metrics.flat_test_metrics(name, metrics)


def thresholds(settings: Settings) -> drift.Thresholds:
    return drift.Thresholds(
        psi_warn=settings.drift_psi_warn,
        psi_drift=max(settings.drift_psi_drift, settings.drift_psi_warn),
        p_value=settings.drift_p_value,
        min_n=settings.drift_min_n,
    )


def window(
    settings: Settings, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """[since, until) in UTC; defaults: the last `DRIFT_WINDOW_DAYS` up to now. Naive times
    are read as UTC."""
    try:
        end = _utc(until) if until is not None else datetime.now(UTC)
        start = (
            _utc(since) if since is not None else end - timedelta(days=settings.drift_window_days)
        )
    except (OverflowError, ValueError):  # e.g. until=0001-01-01: no window before it
        raise InvalidQueryError("since/until out of range") from None
    if start >= end:
        raise InvalidQueryError("since must be earlier than until")
    return start, end


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- drift --------------------------------------------------------------------------------------


async def drift_report(
    db: AsyncDatabase[Document],
    watched: Watched,
    since: datetime,
    until: datetime,
    limits: drift.Thresholds,
) -> DriftReport:
    docs = await prediction_log.read_inputs(
        db, watched.name, watched.version, since, until, DRIFT_MAX_PREDICTIONS
    )
    base = {
        "model": watched.name,
        "version": watched.version,
        "n": len(docs),
        "since": since.isoformat(),
        "until": until.isoformat(),
    }
    if watched.profile is None:
        return DriftReport(**base, status="ok", features=[], note=watched.profile_note)
    profile = watched.profile
    rows = [doc.get("inputs") or {} for doc in docs]
    scores = np.asarray(
        [_number((doc.get("output") or {}).get("score")) for doc in docs], dtype=np.float64
    )
    # scipy's tests over thousands of values: milliseconds, but off the event loop.
    entries = await asyncio.to_thread(drift.compare, profile, rows, scores, limits)
    features = [DriftFeature.model_validate(e) for e in entries]
    note = None if docs else "no logged predictions of this version in the window"
    return DriftReport(
        **base,
        status=drift.worst(f.status for f in features),
        features=features,
        note=note,
    )


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("nan")


def _export(report: DriftReport) -> None:
    labels = (report.model, report.version)
    DRIFT_PREDICTIONS.labels(*labels).set(report.n)
    DRIFT_STATUS.labels(*labels, "all").set(drift.STATUS_LEVEL[report.status])
    for f in report.features:
        DRIFT_STATUS.labels(*labels, f.feature).set(drift.STATUS_LEVEL[f.status])
        if f.psi is not None:
            DRIFT_PSI.labels(*labels, f.feature).set(f.psi)


class DriftWatch:
    """The latest drift check of each served model over the default window: refreshed every
    `DRIFT_REFRESH_SECONDS` in the background (0: only when someone asks), exported as
    gauges, and shown by the model list without computing anything."""

    def __init__(
        self, db: AsyncDatabase[Document], registry: ModelRegistry, settings: Settings
    ) -> None:
        self._db = db
        self._registry = registry
        self._settings = settings
        self._latest: dict[str, DriftReport] = {}
        self._checked_at: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None

    def summary(self, name: str) -> DriftSummary | None:
        report = self._latest.get(name)
        model = self._registry.get(name)
        if report is None or model is None or model.version != report.version:
            return None  # never checked, or checked before the version changed
        return DriftSummary(
            status=report.status,
            version=report.version,
            n=report.n,
            checked_at=self._checked_at[name].isoformat(),
            drifting=[f.feature for f in report.features if f.status == "drift"],
        )

    def remember(self, report: DriftReport) -> None:
        """A check over the default window: the list's status and the gauges."""
        self._latest[report.model] = report
        self._checked_at[report.model] = datetime.now(UTC)
        _export(report)

    async def check(self, model: LoadedModel) -> DriftReport:
        since, until = window(self._settings, None, None)
        report = await drift_report(
            self._db, Watched.of(model), since, until, thresholds(self._settings)
        )
        self.remember(report)
        return report

    def start(self) -> None:
        if self._settings.drift_refresh_seconds > 0 and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        this = asyncio.current_task()
        while True:
            # A cancel landing inside a driver call can be swallowed there (see the registry).
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            for name in self._registry.names:
                model = self._registry.get(name)
                if model is None:
                    continue
                try:
                    await self.check(model)
                except PyMongoError as exc:
                    log.warning("drift check of %s failed: %s", name, exc.__class__.__name__)
                except Exception:  # the loop must outlive any surprise; the next round retries
                    log.exception("drift check of %s failed", name)
            # Again before the long sleep: a cancel swallowed by a check's driver call would
            # otherwise keep `close` (and the app's shutdown) waiting a whole refresh period.
            if this is not None and this.cancelling():
                raise asyncio.CancelledError
            await asyncio.sleep(self._settings.drift_refresh_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


# --- live accuracy ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Judged:
    """One logged prediction whose outcome is known."""

    at: datetime
    version: str
    film: int
    output: Mapping[str, Any]
    actual: Mapping[str, float]  # the outcome's known figures (`outcomes.FIGURES`)
    budget: float | None  # as the model was given it


async def judged(
    db: AsyncDatabase[Document], name: str, since: datetime | None, until: datetime | None
) -> list[Judged]:
    """Every logged prediction of `name` in the window joined with its film's outcome."""
    known = await outcomes.read(db)
    if not known:
        return []
    docs = await prediction_log.read_identified(db, name, known, since, until)
    out: list[Judged] = []
    for doc in docs:
        budget = (doc.get("inputs") or {}).get("budget")
        out.append(
            Judged(
                at=doc["at"],
                version=str(doc["version"]),
                film=int(doc["id"]),
                output=doc.get("output") or {},
                actual=known[int(doc["id"])],
                budget=float(budget) if isinstance(budget, int | float) else None,
            )
        )
    return out


def _latest(items: Iterable[Judged], key: Callable[[Judged], Any]) -> list[Judged]:
    """Per key, the latest prediction of each film (items oldest first)."""
    found: dict[tuple[Any, int], Judged] = {}
    for item in items:
        found[(key(item), item.film)] = item
    return list(found.values())


def metrics_of(name: str, items: Sequence[Judged]) -> tuple[int, dict[str, Any]]:
    """(films judged, their metrics); each film in `items` at most once. A film counts for a
    model once the figure that model predicts is known."""
    if name == "engagement":
        votes = [j for j in items if "vote_count" in j.actual]
        rated = [
            j
            for j in votes
            if "vote_average" in j.actual and j.actual["vote_count"] >= MIN_RATED_VOTES
        ]
        return len(votes), live_metrics.engagement(
            [j.actual["vote_count"] for j in votes],
            [_number(j.output.get("vote_count")) for j in votes],
            [_number(j.output.get("vote_count_low")) for j in votes],
            [_number(j.output.get("vote_count_high")) for j in votes],
            [j.actual["vote_average"] for j in rated],
            [_number(j.output.get("vote_average")) for j in rated],
            [_number(j.output.get("vote_average_low")) for j in rated],
            [_number(j.output.get("vote_average_high")) for j in rated],
        )
    earned = [j for j in items if "revenue" in j.actual]
    if name == "revenue":
        return len(earned), live_metrics.regression(
            [j.actual["revenue"] for j in earned],
            [_number(j.output.get("revenue")) for j in earned],
            [_number(j.output.get("low")) for j in earned],
            [_number(j.output.get("high")) for j in earned],
        )
    hits = [j for j in earned if j.budget is not None and j.budget > 0]
    return len(hits), live_metrics.classification(
        [is_hit(j.actual["revenue"], j.budget or 0.0) for j in hits],
        [_number(j.output.get("score", j.output.get("probability"))) for j in hits],
        [bool(j.output.get("hit")) for j in hits],
    )


def performance_report(
    name: str,
    items: Sequence[Judged],
    test: Callable[[str], dict[str, Any] | None],
) -> PerformanceReport:
    """The whole report from the joined predictions (CPU only: call it in a thread)."""
    n, overall = metrics_of(name, _latest(items, lambda _j: None))
    by_version: list[VersionPerformance] = []
    for version in sorted({j.version for j in items}):
        chosen = _latest((j for j in items if j.version == version), lambda _j: None)
        count, figures = metrics_of(name, chosen)
        by_version.append(
            VersionPerformance(
                version=version, n=count, metrics=figures, test_metrics=test(version)
            )
        )
    by_month: list[MonthPerformance] = []
    for month in sorted({_month(j.at) for j in items}):
        chosen = _latest((j for j in items if _month(j.at) == month), lambda _j: None)
        count, figures = metrics_of(name, chosen)
        by_month.append(MonthPerformance(month=month, n=count, metrics=figures))
    return PerformanceReport(
        model=name,
        n=n,
        metrics=overall,
        by_version=by_version,
        by_month=by_month,
    )


def _month(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


async def performance(
    db: AsyncDatabase[Document],
    name: str,
    since: datetime | None,
    until: datetime | None,
    test: Callable[[str], dict[str, Any] | None],
) -> PerformanceReport:
    items = await judged(db, name, since, until)
    return await asyncio.to_thread(performance_report, name, items, test)


# --- advice -------------------------------------------------------------------------------------


def advice(
    report: DriftReport,
    live: PerformanceReport,
    test: dict[str, Any] | None,
    settings: Settings,
) -> list[str]:
    """Why retraining is advised for the serving version (empty: it is not)."""
    reasons: list[str] = []
    if report.status == "drift":
        drifting = [
            f"{f.feature} (PSI {f.psi:.2f})" for f in report.features if f.status == "drift"
        ]
        reasons.append(
            f"{report.model} {report.version}: inputs drift over {report.n} predictions: "
            + ", ".join(drifting)
        )
    entry = next((v for v in live.by_version if v.version == report.version), None)
    if entry is not None and test is not None and entry.n >= settings.monitor_min_outcomes:
        worse = live_metrics.worse_than_test(
            report.model, entry.metrics, test, settings.monitor_accuracy_margin
        )
        if worse:
            reasons.append(f"{report.model} {report.version}: {worse} over {entry.n} films")
    return reasons


# --- what the routes call -----------------------------------------------------------------------


async def model_drift(
    db: AsyncDatabase[Document],
    registry: ModelRegistry,
    watch: DriftWatch,
    settings: Settings,
    name: str,
    since: datetime | None,
    until: datetime | None,
) -> DriftReport:
    """Drift of the serving version; over the default window it refreshes the list's status
    and the gauges too."""
    known_model(name)
    model = serving_model(registry, name)
    if since is None and until is None:
        return await watch.check(model)
    start, end = window(settings, since, until)
    return await drift_report(db, Watched.of(model), start, end, thresholds(settings))


async def model_performance(
    db: AsyncDatabase[Document],
    settings: Settings,
    name: str,
    since: datetime | None,
    until: datetime | None,
) -> PerformanceReport:
    """Live accuracy of every version of `name` (all the log holds unless a window is given)."""
    known_model(name)
    if since is not None or until is not None:
        since, until = window(settings, since, until)
    root = settings.artifacts_dir
    return await performance(db, name, since, until, lambda v: test_metrics(root, name, v))


async def record_outcomes(
    db: AsyncDatabase[Document], figures: Mapping[int, Mapping[str, float]], by: str
) -> OutcomesResult:
    predicted = await prediction_log.predicted_among(db, figures)
    done = await outcomes.record(db, figures, "api", by)
    return OutcomesResult(recorded=done.recorded, new=done.new, predicted=len(predicted))


# --- what the commands call ---------------------------------------------------------------------


@dataclass(frozen=True)
class Assessment:
    """The served version of one model judged: drift, live accuracy, retraining advice."""

    watched: Watched
    drift: DriftReport
    live: PerformanceReport
    reasons: list[str]

    @property
    def version_live(self) -> VersionPerformance | None:
        return next((v for v in self.live.by_version if v.version == self.watched.version), None)


async def served_version(db: AsyncDatabase[Document], root: Path, name: str) -> str | None:
    """The version every service process serves: the database's record, else `ACTIVE`."""
    record = await model_versions.read(db, name)
    if record is not None:
        return record.version
    return await asyncio.to_thread(artifacts.read_active, root, name)


class NotServedError(ValueError):
    """No version of the model was ever trained or activated."""


async def assess(db: AsyncDatabase[Document], settings: Settings, name: str) -> Assessment:
    """Judge the version of `name` that serves (raises `ValueError` when none can be read,
    `NotServedError` when there is none)."""
    root = settings.artifacts_dir
    version = await served_version(db, root, name)
    if version is None:
        raise NotServedError(f"{name}: no version serves (run tmdb-analytics train)")
    watched = await asyncio.to_thread(watched_on_disk, root, name, version)
    since, until = window(settings, None, None)
    report = await drift_report(db, watched, since, until, thresholds(settings))
    live = await performance(db, name, None, None, lambda v: test_metrics(root, name, v))
    reasons = advice(
        report, live, live_metrics.flat_test_metrics(name, watched.card.metrics), settings
    )
    return Assessment(watched, report, live, reasons)


def mlflow_metrics(assessment: Assessment) -> dict[str, float]:
    """What `monitor report` adds to the version's MLflow run: `live_drift_*` per feature and
    `live_*` accuracy figures (beside the run's `test_*`), numbers only."""
    report = assessment.drift
    out: dict[str, float] = {
        "live_drift_n": float(report.n),
        "live_drift_status": float(drift.STATUS_LEVEL[report.status]),
    }
    for f in report.features:
        if f.psi is not None:
            out[f"live_drift_psi_{f.feature}"] = f.psi
        if f.p_value is not None:
            out[f"live_drift_p_{f.feature}"] = f.p_value
    entry = assessment.version_live
    if entry is not None:
        out["live_n"] = float(entry.n)
        for key, value in entry.metrics.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"live_{key}"] = float(value)
            elif isinstance(value, dict):
                for cell, count in value.items():
                    out[f"live_{key}_{cell}"] = float(count)
    return out
