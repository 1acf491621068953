"""What recency weights would do on the test films: one gradient-boosting model per task on
the schema-2 features the selection keeps, fitted on the development films of the time split
with each half-life, scored on the test films.

    .venv/bin/python -m bench.recency_check

A diagnostic, not a selection: the half-life the service uses is chosen by cross-validation on
the development films (`training.selection._try_recency`); picking it from these figures would
be picking it on the test films. Printed, not written to RESULTS.md (see "Why hit calibration
misses its target" there).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from training import evaluate  # noqa: E402
from training.candidates import TASKS, FeatureConfig, make_features, recency_weights  # noqa: E402
from training.data import load_from_csv  # noqa: E402
from training.split import time_split  # noqa: E402

DATA = REPO.parent / "shared" / "data"
GROUPS = {
    "revenue": frozenset({"content_rating", "franchise"}),
    "hit": frozenset({"content_rating", "franchise", "text", "release_context"}),
}
SETTINGS = {
    "max_iter": 400,
    "learning_rate": 0.03,
    "max_leaf_nodes": 7,
    "min_samples_leaf": 40,
    "l2_regularization": 5.0,
    "random_state": 0,
}


def main() -> None:
    dataset = load_from_csv(
        DATA / "tmdb_5000_movies.train.csv", DATA / "imdb_5000_movie_metadata.csv"
    )
    records = dataset.records
    schedule = tuple((int(r["id"]), r["release_date"], r["budget"]) for r in records if "id" in r)
    for name, groups in GROUPS.items():
        task = TASKS[name]
        split = time_split([r for r in records if task.population(r)])
        seen = [*split.train, *split.validation]
        features = make_features(FeatureConfig(groups), 0, schedule)
        X_seen, X_test = features.fit_transform(seen), features.transform(split.test)
        y_seen, y_test = task.label(seen), task.label(split.test)
        for half_life in (None, 20.0, 10.0, 6.0, 4.0):
            weights = recency_weights(seen, half_life)
            label = f"{name} half-life {half_life or 'none'}"
            if task.kind == "classification":
                clf = HistGradientBoostingClassifier(**SETTINGS).fit(X_seen, y_seen, weights)
                p = clf.predict_proba(X_test)[:, 1]
                print(
                    f"{label}: ROC AUC {roc_auc_score(y_test, p):.4f}, "
                    f"ECE {evaluate.expected_calibration_error(y_test, p):.4f}, "
                    f"mean probability {p.mean():.3f} (hit rate {y_test.mean():.3f})"
                )
            else:
                reg = HistGradientBoostingRegressor(**SETTINGS).fit(X_seen, y_seen, weights)
                rmsle = float(np.sqrt(np.mean((reg.predict(X_test) - y_test) ** 2)))
                print(f"{label}: RMSLE {rmsle:.4f}")


if __name__ == "__main__":
    main()
