"""Drift arithmetic, shared by training (which writes each version's reference profile) and the
service (which compares logged predictions with it). Pure: numbers in, numbers out.

*Monitored inputs* are a handful of the model's inputs, by readable name, as the model saw
them: money and season, how much the caller told us, the strongest track-record signals, and
categories (genres, original language, homepage, collection). The release year is left out on
purpose: every film predicted lies after the films the model learnt from, so it would always
"drift" and the alarm would mean nothing. `monitored_rows` takes them from the feature
matrix the model scored (and the records it was built from), so the training profile and the
prediction log hold the very same quantities.

A *profile* describes their distribution over a version's training films: for a number, bin
edges (deciles, or one bin per value when there are few distinct values), the share of films
per bin, the missing rate and a capped random sample (for the two-sample test); for a
category, the frequency of each value (every genre of a film counts; rare ones are pooled as
`<other>`, a missing value is `<missing>`). The model's output (its score: log1p revenue, or
the probability of a hit) is profiled like a number.

*Drift* of one input: the population stability index (PSI) over those bins (the missing share
is a bin of its own) and a two-sample test: Kolmogorov-Smirnov (`scipy.stats.ks_2samp`)
between the known values and the reference sample, combined (Bonferroni) with a chi-squared
test of the missing share; chi-squared against the reference frequencies for a category. A
feature drifts when the shift is both large (PSI) and real (p-value); see `feature_status`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from app.ml import artifacts
from app.ml.card import ProfileInfo

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]
Kind = Literal["numeric", "category"]
Status = Literal["ok", "warn", "drift"]
STATUS_LEVEL: dict[str, int] = {"ok": 0, "warn": 1, "drift": 2}

PROFILE_FILE = "profile.json"
PROFILE_SCHEMA = 1
OTHER = "<other>"
MISSING = "<missing>"
OUTPUT = "output"  # the name the model's output goes by among the features
BINS = 10
FEW_VALUES = 20  # up to this many distinct values, every value is a bin of its own
TOP_CATEGORIES = 40
SAMPLE_SIZE = 2000
EPSILON = 1e-4  # floor of a bin's share in the PSI (an empty bin would be infinite)


@dataclass(frozen=True)
class MonitoredInput:
    name: str
    kind: Kind
    feature: str | None = None  # the column of the feature matrix it is read from
    record_field: str | None = None  # else the canonical record's field


MONITORED_INPUTS: tuple[MonitoredInput, ...] = (
    MonitoredInput("budget", "numeric", feature="log_budget"),  # in USD (expm1 of the feature)
    MonitoredInput("runtime", "numeric", feature="runtime"),
    MonitoredInput("release_month", "numeric", feature="release_month"),
    MonitoredInput("n_genres", "numeric", feature="n_genres"),
    MonitoredInput("n_keywords", "numeric", feature="n_keywords"),
    MonitoredInput("n_companies", "numeric", feature="n_companies"),
    MonitoredInput("n_lead_actors", "numeric", feature="n_lead_actors"),
    MonitoredInput(
        "director_prior_mean_log_revenue", "numeric", feature="director_prior_mean_log_revenue"
    ),
    MonitoredInput("cast_prior_mean_log_revenue", "numeric", feature="cast_prior_mean_log_revenue"),
    MonitoredInput(
        "companies_prior_mean_log_revenue", "numeric", feature="companies_prior_mean_log_revenue"
    ),
    MonitoredInput("has_homepage", "category", feature="has_homepage"),
    MonitoredInput("in_collection", "category", feature="in_collection"),
    MonitoredInput("genres", "category", record_field="genres"),
    MonitoredInput("original_language", "category", record_field="original_language"),
)
INPUT_KINDS: dict[str, Kind] = {m.name: m.kind for m in MONITORED_INPUTS}


# --- what the model saw ---------------------------------------------------------------------


class InputReader:
    """Reads the monitored inputs of scored films; built once per model version (the column
    positions depend on its feature layout), then a few microseconds per film."""

    def __init__(self, feature_names: Sequence[str]) -> None:
        index = {n: i for i, n in enumerate(feature_names)}
        self._matrix = [m for m in MONITORED_INPUTS if m.feature is not None and m.feature in index]
        self._columns = np.asarray([index[m.feature or ""] for m in self._matrix], dtype=np.intp)
        self._names = [m.name for m in self._matrix]
        self._budget = self._names.index("budget") if "budget" in self._names else -1
        self._categories = {m.name for m in self._matrix if m.kind == "category"}
        self._fields = [(m.name, m.record_field) for m in MONITORED_INPUTS if m.record_field]

    def rows(self, X: FloatMatrix, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One dict per film: name -> value (None when unknown; categories as given)."""
        columns = self.columns(X, records)
        if not columns:
            return [{} for _ in records]
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def columns(self, X: FloatMatrix, records: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
        """`rows` column by column: name -> one value per film (what the prediction log
        stores; a Python step per cell cost ~9 ms of a 1,000-film batch)."""
        block = X[:, self._columns] if len(self._columns) else np.zeros((len(records), 0))
        columns: list[list[Any]] = []
        for j, (name, values) in enumerate(zip(self._names, block.T.tolist(), strict=True)):
            if j == self._budget:
                columns.append([None if v != v else round(math.expm1(v), 2) for v in values])
            elif name in self._categories:
                columns.append([None if v != v else int(v) for v in values])
            else:
                columns.append([None if v != v else v for v in values])
        for _name, source in self._fields:
            columns.append([rec.get(source) for rec in records])
        keys = [*self._names, *(name for name, _source in self._fields)]
        return dict(zip(keys, columns, strict=True))


def numeric_values(rows: Iterable[Mapping[str, Any]], name: str) -> FloatVector:
    """One input's values as floats, NaN where unknown."""
    return np.asarray(
        [
            float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
            for v in (r.get(name) for r in rows)
        ],
        dtype=np.float64,
    )


def category_values(rows: Iterable[Mapping[str, Any]], name: str) -> list[list[str]]:
    """One input's values per film as lists of strings (several for genres; empty: missing)."""
    out: list[list[str]] = []
    for row in rows:
        value = row.get(name)
        if value is None or value == "" or value == []:
            out.append([])
        elif isinstance(value, list | tuple):
            out.append([str(v) for v in value])
        elif isinstance(value, bool):
            out.append([str(int(value))])
        else:
            out.append([str(value)])
    return out


# --- profiles ---------------------------------------------------------------------------------


def _edges(known: FloatVector) -> list[float]:
    """Interior bin edges: between distinct values when there are few, else deciles."""
    distinct = np.unique(known)
    if len(distinct) <= 1:
        return []
    if len(distinct) <= FEW_VALUES:
        return [float(e) for e in ((distinct[:-1] + distinct[1:]) / 2).tolist()]
    quantiles = np.quantile(known, np.linspace(0, 1, BINS + 1)[1:-1])
    return [float(e) for e in np.unique(quantiles).tolist()]


def _bin_shares(known: FloatVector, edges: Sequence[float]) -> list[float]:
    if len(known) == 0:
        return [0.0] * (len(edges) + 1)
    # Right-closed bins: (-inf, e0], (e0, e1], ..., (e_last, inf).
    counts = np.bincount(
        np.searchsorted(np.asarray(edges), known, side="left"), minlength=len(edges) + 1
    )
    return [float(c) / len(known) for c in counts.tolist()]


def numeric_profile(values: FloatVector, rng: np.random.Generator) -> dict[str, Any]:
    known = values[~np.isnan(values)]
    edges = _edges(known)
    sample = rng.choice(known, size=min(SAMPLE_SIZE, len(known)), replace=False)
    return {
        "kind": "numeric",
        "n": len(values),
        "missing_rate": float(1 - len(known) / len(values)) if len(values) else 0.0,
        "edges": edges,
        "proportions": _bin_shares(known, edges),
        "sample": [float(f"{v:.6g}") for v in np.sort(sample)],
    }


def category_profile(values: Sequence[Sequence[str]]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    missing = 0
    for items in values:
        if not items:
            missing += 1
            counts[MISSING] += 1
        counts.update(items)
    top = {k: n for k, n in counts.most_common() if k != MISSING}
    kept = dict(list(top.items())[:TOP_CATEGORIES])
    other = sum(top.values()) - sum(kept.values())
    kept[MISSING] = missing  # kept at 0 too: a value that goes missing later is drift
    kept[OTHER] = other
    total = sum(kept.values()) or 1
    return {
        "kind": "category",
        "n": len(values),
        "missing_rate": missing / len(values) if values else 0.0,
        "counts": kept,
        "proportions": {k: n / total for k, n in kept.items()},
    }


def build_profile(
    rows: Sequence[Mapping[str, Any]], outputs: FloatVector, seed: int = 0
) -> dict[str, Any]:
    """The reference profile of a version: every monitored input over its training films
    (`rows` from `InputReader.rows`) and the model's output on them."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, Any] = {}
    for m in MONITORED_INPUTS:
        if not any(m.name in r for r in rows[:1]):
            continue  # a feature this version does not have
        inputs[m.name] = (
            numeric_profile(numeric_values(rows, m.name), rng)
            if m.kind == "numeric"
            else category_profile(category_values(rows, m.name))
        )
    return {
        "schema": PROFILE_SCHEMA,
        "films": len(rows),
        "bins": BINS,
        "sample_size": SAMPLE_SIZE,
        "inputs": inputs,
        "output": numeric_profile(np.asarray(outputs, dtype=np.float64), rng),
    }


def read_profile(directory: Path, info: ProfileInfo | None) -> tuple[dict[str, Any] | None, str]:
    """A version's reference profile and, when there is none to use, why (blocking). A
    missing or damaged profile never stops the model from serving: drift is then not
    measured for that version, and the reason says so."""
    if info is None:
        return None, "this version was trained before reference profiles; retrain to measure drift"
    path = directory / info.file
    if path.parent != directory or not path.is_file():
        return None, f"reference profile {info.file} missing from the version's directory"
    if artifacts.sha256_file(path) != info.sha256:
        return None, f"reference profile {info.file} does not match its card (corrupt?)"
    try:
        profile = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return None, f"reference profile {info.file} is not valid JSON"
    if not isinstance(profile, dict) or profile.get("schema") != PROFILE_SCHEMA:
        return None, f"reference profile {info.file} has an unknown layout"
    return profile, ""


# --- comparison -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_drift: float = 0.25
    p_value: float = 0.01
    min_n: int = 100


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index: sum over bins of (a - e) * ln(a / e), shares floored."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def _chi2_p(observed: Sequence[float], expected_shares: Sequence[float]) -> float | None:
    from scipy.stats import chisquare

    obs = np.asarray(observed, dtype=np.float64)
    total = obs.sum()
    if total <= 0 or len(obs) < 2:
        return None
    # Additive smoothing: a value never seen in training must not make the test infinite.
    shares = np.asarray(expected_shares, dtype=np.float64) + 0.5 / max(total, 1)
    shares /= shares.sum()
    p = float(chisquare(obs, shares * total).pvalue)
    return p if math.isfinite(p) else None


def compare_numeric(
    reference: Mapping[str, Any], values: FloatVector
) -> tuple[float, float | None]:
    """(PSI, p-value) of `values` against a numeric profile."""
    from scipy.stats import ks_2samp

    known = values[~np.isnan(values)]
    n = len(values)
    ref_missing = float(reference.get("missing_rate", 0.0))
    expected = [s * (1 - ref_missing) for s in reference["proportions"]] + [ref_missing]
    observed_missing = 1 - len(known) / n if n else 0.0
    actual = [s * (1 - observed_missing) for s in _bin_shares(known, reference["edges"])]
    value = psi(expected, [*actual, observed_missing])
    p_values: list[float] = []
    sample = np.asarray(reference.get("sample") or [], dtype=np.float64)
    if len(known) and len(sample):
        p_values.append(float(ks_2samp(sample, known).pvalue))
    if n and (ref_missing > 0 or observed_missing > 0):
        p = _chi2_p([n - len(known), len(known)], [ref_missing, 1 - ref_missing])
        if p is not None:
            p_values.append(p)
    if not p_values:
        return value, None
    return value, min(1.0, min(p_values) * len(p_values))


def compare_category(
    reference: Mapping[str, Any], values: Sequence[Sequence[str]]
) -> tuple[float, float | None]:
    """(PSI, p-value) of `values` against a category profile."""
    shares: dict[str, float] = dict(reference["proportions"])
    counts: Counter[str] = Counter()
    for items in values:
        if not items:
            counts[MISSING] += 1
        for item in items:
            counts[item if item in shares and item not in (OTHER, MISSING) else OTHER] += 1
    shares.setdefault(MISSING, 0.0)
    shares.setdefault(OTHER, 0.0)
    keys = list(shares)
    observed = [float(counts.get(k, 0)) for k in keys]
    total = sum(observed)
    if total <= 0:
        return 0.0, None
    value = psi([shares[k] for k in keys], [o / total for o in observed])
    return value, _chi2_p(observed, [shares[k] for k in keys])


def feature_status(
    n: int, value: float | None, p_value: float | None, thresholds: Thresholds
) -> Status:
    """`drift` when the shift is large (PSI >= psi_drift) and real (p < p_value), `warn` when
    it is moderate (PSI >= psi_warn) and real; `ok` otherwise and below `min_n` predictions."""
    if n < thresholds.min_n or value is None:
        return "ok"
    real = p_value is None or p_value < thresholds.p_value
    if value >= thresholds.psi_drift and real:
        return "drift"
    if value >= thresholds.psi_warn and real:
        return "warn"
    return "ok"


def worst(statuses: Iterable[str]) -> Status:
    level = max((STATUS_LEVEL[s] for s in statuses), default=0)
    ordered: tuple[Status, ...] = ("ok", "warn", "drift")
    return ordered[level]


def compare(
    profile: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    outputs: FloatVector,
    thresholds: Thresholds,
) -> list[dict[str, Any]]:
    """Per monitored input of the profile, then the output: feature, kind, psi, p_value,
    status, and the observed missing rate beside the reference one."""
    n = len(rows)
    out: list[dict[str, Any]] = []
    for name, reference in profile.get("inputs", {}).items():
        if reference["kind"] == "numeric":
            values = numeric_values(rows, name)
            value, p = compare_numeric(reference, values)
            missing = float(np.isnan(values).mean()) if n else None
        else:
            cats = category_values(rows, name)
            value, p = compare_category(reference, cats)
            missing = sum(1 for c in cats if not c) / n if n else None
        out.append(_entry(name, reference["kind"], n, value, p, missing, reference, thresholds))
    reference = profile.get("output")
    if reference is not None:
        values = np.asarray(outputs, dtype=np.float64)
        value, p = compare_numeric(reference, values)
        out.append(_entry(OUTPUT, "output", n, value, p, None, reference, thresholds))
    return out


def _entry(
    name: str,
    kind: str,
    n: int,
    value: float,
    p: float | None,
    missing: float | None,
    reference: Mapping[str, Any],
    thresholds: Thresholds,
) -> dict[str, Any]:
    value_or_none = round(value, 6) if n else None
    return {
        "feature": name,
        "kind": kind,
        "psi": value_or_none,
        "p_value": (float(f"{p:.6g}") if p is not None else None) if n else None,
        "status": feature_status(n, value_or_none, p, thresholds),
        "missing_rate": round(missing, 6) if missing is not None else None,
        "reference_missing_rate": round(float(reference.get("missing_rate", 0.0)), 6),
    }
