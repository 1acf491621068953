"""Model selection by time-series cross-validation on the development films (train +
validation of the time split; the test films are never looked at here).

1. **Folds**: the dated development films ordered by release date, cut by scikit-learn's
   `TimeSeriesSplit` (each fold validates on films released after all of its training films;
   undated films only ever train).
2. **Feature ablation**: starting from the schema-1 columns, each schema-2 group
   (`FEATURE_GROUPS`) is added in turn with a fixed reference model and kept only if it
   improves the mean cross-validated score.
3. **Search**: every (family, settings) of `SEARCH_SPACE` on the kept features.
4. **Stacking**: the equal-weight average of the two best families, kept if it beats the
   best single model.
4b. **Recency**: the chosen model refitted with weights that halve every few years of a
   film's age (`recency_weights`), a half-life kept only if it beats the unweighted model
   (RMSLE; for hit the Brier score of its probabilities, see `_try_recency`).
5. **Calibration** (hit): isotonic or Platt, fitted on every earlier fold's out-of-fold
   scores or on the latest fold's only, whichever gives the lower Brier score on the last
   fold; then refitted one fold later (`choose_calibration`).

Feature matrices are computed once per (features, fold) and shared by the candidates: the
feature step is deterministic, so this equals fitting each full pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import TimeSeriesSplit

from app.ml.card import Candidate
from app.ml.estimators import Calibration, fit_calibration, fit_weighted, raw_score
from training.candidates import (
    FEATURE_GROUPS,
    QUICK_HALF_LIVES,
    RECENCY_HALF_LIVES,
    SEARCH_SPACE,
    Array,
    CandidateSpec,
    FeatureConfig,
    Task,
    ablation_candidate,
    build_tail,
    candidates,
    fit_target,
    make_features,
    recency_weights,
    uses_roi,
)

Records = Sequence[dict[str, Any]]
Schedule = tuple[tuple[int, str, float | None], ...]
FULL_FOLDS = 4
QUICK_FOLDS = 2


@dataclass
class Fold:
    train: list[int]
    validation: list[int]


def time_folds(records: Records, n_splits: int) -> list[Fold]:
    """`TimeSeriesSplit` over the dated films in release order; each validation block is an
    eighth of them (quick: a fifth), so the first fold still trains on half of the films."""
    dated = sorted(
        (i for i, r in enumerate(records) if r.get("release_date")),
        key=lambda i: (records[i]["release_date"], records[i].get("id", 0)),
    )
    undated = [i for i, r in enumerate(records) if not r.get("release_date")]
    size = max(1, len(dated) // (8 if n_splits >= 4 else 5))
    splitter = TimeSeriesSplit(n_splits=n_splits, test_size=size)
    return [
        Fold(undated + [dated[i] for i in tr], [dated[i] for i in va])
        for tr, va in splitter.split(dated)
    ]


def cv_metric(task: Task, y: Array, score: Array) -> float:
    """The selection metric on one fold: RMSLE (lower is better) or ROC AUC."""
    if task.kind == "regression":
        return float(np.sqrt(np.mean((score - y) ** 2)))
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def better(task: Task, a: float, b: float) -> bool:
    if np.isnan(b):
        return not np.isnan(a)
    return a > b if task.higher_is_better else a < b


@dataclass
class CvResult:
    spec: CandidateSpec
    config: FeatureConfig
    fold_scores: list[float]
    oof: Array  # raw out-of-fold scores, NaN where a film never validated
    seconds: float
    half_life: float | None = None

    @property
    def score(self) -> float:
        return float(np.nanmean(self.fold_scores))


@dataclass
class Selection:
    """What the search found, for training, the card and the report."""

    config: FeatureConfig
    chosen: CandidateSpec
    results: list[CvResult]
    ablation: list[dict[str, Any]]
    stacking: dict[str, Any]
    folds: list[Fold]
    oof: Array  # raw scores of the chosen model, out of fold
    oof_fold: npt.NDArray[np.intp]  # which fold validated each film (-1: none)
    calibration: Calibration | None = None
    calibration_report: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, Any] = field(default_factory=dict)
    half_life: float | None = None  # recency weights of the served model (None: unweighted)
    recency: dict[str, Any] = field(default_factory=dict)

    def candidates(self) -> list[Candidate]:
        """The family search as the card lists it (ablation rows are in `ablation`)."""
        return [
            Candidate(
                family=r.spec.family,
                params=r.spec.params,
                validation={
                    "cv_mean": round(r.score, 5),
                    **{f"fold_{k}": round(v, 5) for k, v in enumerate(r.fold_scores)},
                },
                fit_seconds=round(r.seconds, 2),
            )
            for r in self.results
        ]


class Selector:
    def __init__(
        self,
        task: Task,
        records: Records,
        folds: list[Fold],
        seed: int,
        schedule: Schedule | None,
        say: Callable[[str], None],
    ) -> None:
        self.task = task
        self.records = list(records)
        self.folds = folds
        self.seed = seed
        self.schedule = schedule
        self.say = say
        self.y = task.label(self.records)
        self._matrices: dict[tuple[str, int], tuple[Array, Array]] = {}

    def matrices(self, config: FeatureConfig, k: int) -> tuple[Array, Array]:
        key = (config.label(), k)
        if key not in self._matrices:
            fold = self.folds[k]
            features = make_features(config, self.seed, self.schedule)
            train = [self.records[i] for i in fold.train]
            validation = [self.records[i] for i in fold.validation]
            self._matrices[key] = (features.fit_transform(train), features.transform(validation))
        return self._matrices[key]

    def forget(self, keep: FeatureConfig) -> None:
        """Drop cached matrices of other feature sets (memory)."""
        self._matrices = {k: v for k, v in self._matrices.items() if k[0] == keep.label()}

    def run(
        self, config: FeatureConfig, spec: CandidateSpec, half_life: float | None = None
    ) -> CvResult:
        started = time.perf_counter()
        oof = np.full(len(self.records), np.nan)
        scores: list[float] = []
        for k, fold in enumerate(self.folds):
            X_train, X_val = self.matrices(config, k)
            train = [self.records[i] for i in fold.train]
            # Uncalibrated here: selection ranks raw scores (AUC and RMSLE need no calibration).
            tail = fit_weighted(
                build_tail(self.task, spec, self.seed, config),
                X_train,
                fit_target(self.task, spec, train),
                recency_weights(train, half_life),
            )
            estimator = (
                getattr(tail, "estimator_", tail) if self.task.kind != "regression" else tail
            )
            pred = (
                np.asarray(tail.predict(X_val), dtype=np.float64)
                if self.task.kind == "regression"
                else raw_score(estimator, X_val)
            )
            oof[fold.validation] = pred
            scores.append(cv_metric(self.task, self.y[fold.validation], pred))
        result = CvResult(spec, config, scores, oof, time.perf_counter() - started, half_life)
        weighted = f" half-life {half_life:g}y" if half_life is not None else ""
        self.say(
            f"  {self.task.name} [{config.label()}] {spec.family}{weighted} {spec.params}: "
            f"cv {self.task.selection_metric}={result.score:.4f} "
            f"(folds {', '.join(f'{s:.3f}' for s in scores)}; {result.seconds:.1f}s)"
        )
        return result

    def fold_ids(self) -> npt.NDArray[np.intp]:
        ids = np.full(len(self.records), -1, dtype=np.intp)
        for k, fold in enumerate(self.folds):
            ids[fold.validation] = k
        return ids


def select(
    task: Task,
    records: Records,
    quick: bool,
    seed: int,
    schedule: Schedule | None,
    say: Callable[[str], None],
    groups: Sequence[str] = FEATURE_GROUPS,
) -> Selection:
    folds = time_folds(records, QUICK_FOLDS if quick else FULL_FOLDS)
    sel = Selector(task, records, folds, seed, schedule, say)

    # 1. Which feature groups earn their place (fixed reference model).
    reference = ablation_candidate(quick)
    config = FeatureConfig()
    current = sel.run(config, reference)
    ablation: list[dict[str, Any]] = [
        {"features": "base (schema 1 columns)", "cv": round(current.score, 5), "kept": True}
    ]
    for group in groups:
        trial = sel.run(config.with_group(group), reference)
        kept = better(task, trial.score, current.score)
        ablation.append(
            {
                "features": f"+{group}",
                "cv": round(trial.score, 5),
                "change": round(trial.score - current.score, 5),
                "kept": kept,
            }
        )
        if kept:
            config, current = config.with_group(group), trial
    sel.forget(config)
    say(f"  {task.name}: features {config.label()}")

    # 2. The family search on those features.
    results = [sel.run(config, spec) for spec in candidates(task, quick)]
    best = results[0]
    for r in results[1:]:
        if better(task, r.score, best.score):
            best = r

    # 3. Stacking: the average of the two best families (same kind of raw score).
    stacking = _try_stacking(task, sel, config, results, best)
    chosen = stacking.pop("_chosen")
    oof = stacking.pop("_oof")
    unweighted = float(stacking["cv"]) if chosen.family == "blend" else best.score

    # 4b. Recency weights for the chosen model.
    half_life, oof, recency = _try_recency(
        task,
        sel,
        config,
        chosen,
        unweighted,
        oof,
        QUICK_HALF_LIVES if quick else RECENCY_HALF_LIVES,
    )

    selection = Selection(
        config=config,
        chosen=chosen,
        results=results,
        ablation=ablation,
        stacking=stacking,
        folds=folds,
        oof=oof,
        oof_fold=sel.fold_ids(),
        half_life=half_life,
        recency=recency,
        search_space={
            "cv": f"TimeSeriesSplit(n_splits={len(folds)}) over development films by release date",
            "ablation_model": {"family": reference.family, **reference.params},
            "families": sorted({r.spec.family for r in results}),
            "grid": {k: v for k, v in SEARCH_SPACE.items()} if not quick else "quick: one each",
        },
    )
    if task.kind == "classification":
        selection.calibration, selection.calibration_report = choose_calibration(
            sel.y, oof, selection.oof_fold, allow_identity=not uses_roi(chosen)
        )
    return selection


def _try_recency(
    task: Task,
    sel: Selector,
    config: FeatureConfig,
    chosen: CandidateSpec,
    unweighted: float,
    oof: Array,
    half_lives: Sequence[float | None],
) -> tuple[float | None, Array, dict[str, Any]]:
    """The half-life of the recency weights with the lowest cross-validated loss (None when
    no weighting beats the unweighted model), its out-of-fold scores, and the trials.

    The loss is RMSLE for revenue. For hit it is the Brier score of the out-of-fold
    probabilities when the model's score is a log-odds (a `*_roi` score is no probability
    before calibration, so ROC AUC decides there): what weighting recent films changes is
    mostly the level of the probabilities, which ROC AUC does not see."""
    brier = task.kind == "classification" and not uses_roi(chosen)
    metric = "brier" if brier else task.selection_metric

    def loss(scores: Array, cv: float) -> float:
        if not brier:
            return cv if not task.higher_is_better else -cv
        folds = [
            brier_score_loss(sel.y[f.validation], 1 / (1 + np.exp(-scores[f.validation])))
            for f in sel.folds
        ]
        return float(np.mean(folds))

    best_half_life, best_oof = None, oof
    best_loss = loss(oof, unweighted)
    tried: list[dict[str, Any]] = [
        {"half_life_years": None, "cv": round(unweighted, 5), metric: round(abs(best_loss), 5)}
    ]
    for half_life in half_lives:
        if half_life is None:
            continue
        result = sel.run(config, chosen, half_life)
        trial_loss = loss(result.oof, result.score)
        tried.append(
            {
                "half_life_years": half_life,
                "cv": round(result.score, 5),
                metric: round(abs(trial_loss), 5),
            }
        )
        if trial_loss < best_loss:
            best_half_life, best_loss, best_oof = half_life, trial_loss, result.oof
    sel.say(
        f"  {task.name} recency: "
        + (f"half-life {best_half_life:g} years" if best_half_life else "unweighted")
        + f" (cv {metric} {abs(best_loss):.4f} vs unweighted {abs(tried[0][metric]):.4f})"
    )
    return (
        best_half_life,
        best_oof,
        {"tried": tried, "judged_by": metric, "half_life_years": best_half_life},
    )


def _try_stacking(
    task: Task, sel: Selector, config: FeatureConfig, results: list[CvResult], best: CvResult
) -> dict[str, Any]:
    by_family: dict[str, CvResult] = {}
    for r in results:
        if r.spec.family not in by_family or better(task, r.score, by_family[r.spec.family].score):
            by_family[r.spec.family] = r
    kind = uses_roi(best.spec)
    ranked = sorted(
        (r for r in by_family.values() if uses_roi(r.spec) == kind),
        key=lambda r: -r.score if task.higher_is_better else r.score,
    )
    report: dict[str, Any] = {"tried": False, "_chosen": best.spec, "_oof": best.oof}
    if len(ranked) < 2:
        return report
    a, b = ranked[0], ranked[1]
    blend = (a.oof + b.oof) / 2
    scores = [
        cv_metric(task, sel.y[f.validation], blend[f.validation])
        if task.kind == "regression" or not np.isnan(blend[f.validation]).any()
        else float("nan")
        for f in sel.folds
    ]
    score = float(np.nanmean(scores))
    wins = better(task, score, best.score)
    report.update(
        tried=True,
        members=[a.spec.family, b.spec.family],
        cv=round(score, 5),
        best_single=round(best.score, 5),
        chosen=wins,
    )
    sel.say(
        f"  {task.name} stacking {a.spec.family}+{b.spec.family}: cv {score:.4f} "
        f"vs best single {best.score:.4f} -> {'kept' if wins else 'not kept'}"
    )
    if wins:
        report["_chosen"] = CandidateSpec(
            "blend",
            {"members": [a.spec.family, b.spec.family], "settings": [a.spec.params, b.spec.params]},
        )
        report["_oof"] = blend
    return report


Method = Literal["isotonic", "platt", "identity"]
Window = Literal["all", "recent"]


def choose_calibration(
    y: Array, score: Array, fold: npt.NDArray[np.intp], allow_identity: bool
) -> tuple[Calibration, dict[str, Any]]:
    """Pick a calibration map by its Brier score on the last fold, then refit it.

    Each method is fitted on two windows of out-of-fold scores before the last fold: all of
    them, and only the fold just before it (`recent`). The hit rate drifts with release years
    (about 0.5 for films of 2000-2010, 0.6 after), and a map fitted on the latest films follows
    the rate of the films the model will score next; the last fold decides whether that beats
    the larger window. The winner is refitted the same way one fold later: on every
    out-of-fold score, or on the last fold's."""
    seen = fold >= 0
    last = int(fold.max())
    eval_mask = fold == last
    windows: dict[Window, npt.NDArray[np.bool_]] = {
        "all": seen & (fold < last),
        "recent": fold == last - 1,
    }
    candidates: list[tuple[Method, Window]] = [
        (method, window) for method in ("platt", "isotonic") for window in ("all", "recent")
    ]
    if allow_identity:
        candidates.append(("identity", "all"))
    briers: dict[str, float] = {}
    usable: list[tuple[Method, Window]] = []
    for method, window in candidates:
        fit_mask = windows[window]
        if fit_mask.sum() < 20 or len(np.unique(y[fit_mask])) < 2:
            if window == "recent":
                continue  # too few recent films to fit on
            fit_mask = seen  # too little for a split
        cal = fit_calibration(method, score[fit_mask], y[fit_mask])
        briers[_label(method, window)] = float(
            brier_score_loss(y[eval_mask], cal(score[eval_mask]))
        )
        usable.append((method, window))
    chosen, window = min(usable, key=lambda c: briers[_label(*c)])
    refit = eval_mask if window == "recent" else seen
    calibration = fit_calibration(chosen, score[refit], y[refit])
    return calibration, {
        "chosen": chosen,
        "window": window,
        "validation_brier": {k: round(v, 5) for k, v in briers.items()},
        "fitted_on": int(refit.sum()),
        **calibration.describe(),
    }


def _label(method: Method, window: Window) -> str:
    return method if window == "all" or method == "identity" else f"{method}_recent"


def conformal_levels(
    residuals: Array, budget_known: npt.NDArray[np.bool_], levels: Sequence[float]
) -> dict[str, dict[str, tuple[float, float]]]:
    """Mondrian split-conformal offsets (by budget known/unknown) at every level."""
    from training.evaluate import fit_interval

    return {
        f"{level:.2f}": fit_interval(residuals, budget_known, ((1 - level) / 2, (1 + level) / 2))
        for level in levels
    }
