"""Train/validation/test split by release date.

Why time-aware rather than random: the models answer for films *before* they open, i.e. for
films later than everything they learnt from. A random split would let the model learn from
2015 films to "predict" 2009 ones, and the track-record features (a director's earlier
films) would be richer for test films than they ever are in production. Splitting by date
measures what users get: train on the past, validate on the next period, test on the most
recent films. The numbers are a little worse than a random split's, and honest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.ml.card import SplitInfo

TIME_SPLIT_REASON = (
    "time-aware: the model predicts films before release, so it is validated and tested on "
    "films released after everything it learnt from (and people's track records are only as "
    "complete as they would be in production)"
)
RANDOM_SPLIT_REASON = (
    "random (seeded): requested explicitly; optimistic for a pre-release predictor"
)


@dataclass
class Split:
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    info: SplitInfo


def time_split(
    records: Sequence[dict[str, Any]], validation: float = 0.15, test: float = 0.15
) -> Split:
    """Oldest films train, the next `validation` share validates, the newest `test` share
    tests. Undated films cannot be placed in time and go to train."""
    dated = sorted(
        (r for r in records if r.get("release_date")), key=lambda r: (r["release_date"], r["id"])
    )
    undated = [r for r in records if not r.get("release_date")]
    n = len(dated)
    a = round(n * (1 - validation - test))
    b = round(n * (1 - test))
    train, val, tst = undated + dated[:a], dated[a:b], dated[b:]
    return Split(
        train=train,
        validation=val,
        test=tst,
        info=SplitInfo(
            strategy="time",
            reason=TIME_SPLIT_REASON,
            train=len(train),
            validation=len(val),
            test=len(tst),
            train_until=dated[a - 1]["release_date"] if a > 0 else None,
            test_from=tst[0]["release_date"] if tst else None,
        ),
    )


def random_split(
    records: Sequence[dict[str, Any]], seed: int, validation: float = 0.15, test: float = 0.15
) -> Split:
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(records))
    shuffled = [records[i] for i in order]
    n = len(shuffled)
    a = round(n * (1 - validation - test))
    b = round(n * (1 - test))
    return Split(
        train=shuffled[:a],
        validation=shuffled[a:b],
        test=shuffled[b:],
        info=SplitInfo(
            strategy="random",
            reason=RANDOM_SPLIT_REASON,
            train=a,
            validation=b - a,
            test=n - b,
        ),
    )
