"""Blends of boosted trees compile to one tree walk (`app.ml.fastpath._merged_trees`) that
scores exactly as scikit-learn and LightGBM do, missing values included."""

from __future__ import annotations

import os
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestRegressor,
)

from app.ml import fastpath, tree_kernel
from app.ml.estimators import AveragedRegressor, CalibratedHit, fit_calibration
from app.ml.fastpath import CompiledTrees, compile_estimator


def data(rows: int = 600) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(rows, 6))
    y = X[:, 0] * 2 - X[:, 1] + np.sin(X[:, 2]) + rng.normal(scale=0.3, size=rows)
    X[rng.random(X.shape) < 0.1] = np.nan  # missing facts go where training sent them
    return X, y


def test_a_regression_blend_is_one_walk_with_the_same_scores() -> None:
    X, y = data()
    blend = AveragedRegressor(
        [
            HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=7, random_state=0),
            lgb.LGBMRegressor(n_estimators=80, num_leaves=7, verbose=-1, random_state=0),
        ]
    ).fit(X, y)
    scorer = compile_estimator(blend)
    assert isinstance(scorer, CompiledTrees)  # merged: one ensemble, not one per member
    assert len(scorer.roots) == 60 + 80
    np.testing.assert_allclose(scorer(X), blend.predict(X), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(scorer(X[:1]), blend.predict(X[:1]), rtol=1e-9, atol=1e-9)


def test_a_calibrated_classifier_blend_merges_the_log_odds() -> None:
    X, y = data()
    label = (y > 0).astype(float)
    members = [
        HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=7, random_state=0),
        lgb.LGBMClassifier(n_estimators=70, num_leaves=7, verbose=-1, random_state=0),
    ]
    raw = AveragedRegressor(members).fit(X, label).predict(X)
    hit = CalibratedHit(AveragedRegressor(members), "label", fit_calibration("platt", raw, label))
    hit.fit(X, label)
    scorer = compile_estimator(hit)
    assert scorer is not None
    np.testing.assert_allclose(scorer(X), hit.predict_proba(X)[:, 1], rtol=1e-9, atol=1e-9)


def test_a_blend_with_a_forest_is_not_merged() -> None:
    X, y = data(300)
    X = np.nan_to_num(X)
    blend = AveragedRegressor(
        [
            HistGradientBoostingRegressor(max_iter=30, random_state=0),
            RandomForestRegressor(n_estimators=10, random_state=0),
        ]
    ).fit(X, y)
    scorer = compile_estimator(blend)
    assert scorer is not None and not isinstance(scorer, CompiledTrees)
    np.testing.assert_allclose(scorer(X), blend.predict(X), rtol=1e-6, atol=1e-6)


def test_a_big_batch_walked_in_two_threads_matches_the_walk_in_one() -> None:
    """From 512 films the walk shares its chunks with a second thread; every row must land
    in its own place, a ragged last chunk included."""
    X, y = data(1_000)
    model = HistGradientBoostingRegressor(max_iter=40, max_leaf_nodes=7, random_state=0)
    scorer = compile_estimator(model.fit(X, y))
    assert isinstance(scorer, CompiledTrees) and scorer.perfect is not None
    assert (fastpath._walk_helper() is not None) == ((os.cpu_count() or 1) >= 2)
    split = scorer.perfect.leaves(X)
    alone = np.vstack([scorer.perfect.leaves(X[i : i + 100]) for i in range(0, 1_000, 100)])
    np.testing.assert_array_equal(split, alone)
    np.testing.assert_allclose(scorer(X), model.predict(X), rtol=1e-9, atol=1e-9)


def test_trees_walked_in_depth_groups_give_the_padded_walks_leaves() -> None:
    """Chunks of 8 rows or more walk each depth's trees padded to that depth only, smaller
    ones walk every tree padded to the deepest: the same leaves, bit for bit, so a film
    scores the same alone and in a batch."""
    X, y = data(300)
    model = HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=9, random_state=0)
    scorer = compile_estimator(model.fit(X, y))
    assert isinstance(scorer, CompiledTrees) and scorer.perfect is not None
    forest = scorer.perfect
    assert len(forest.groups) > 1  # the trees really have several depths
    assert fastpath.GROUPED_MIN_ROWS > 1
    batch = forest.leaves(X)
    one_by_one = np.vstack([forest.leaves(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_array_equal(batch, one_by_one)
    np.testing.assert_array_equal(
        scorer(X), np.concatenate([scorer(X[i : i + 1]) for i in range(300)])
    )
    np.testing.assert_allclose(scorer(X), model.predict(X), rtol=1e-9, atol=1e-9)


def _chain(depth: int) -> dict[str, np.ndarray]:
    """A tree `depth` levels deep: each inner node sends x0 <= i left to a leaf."""
    inner, n = depth, 2 * depth + 1
    left = np.zeros(n, dtype=np.intp)
    right = np.zeros(n, dtype=np.intp)
    for i in range(inner):
        left[i], right[i] = inner + i, i + 1 if i + 1 < inner else n - 1
    leaf = np.arange(n) >= inner
    return {
        "feature": np.zeros(n, dtype=np.intp),
        "threshold": np.arange(n, dtype=np.float64),
        "missing_left": np.zeros(n, dtype=bool),
        "left": left,
        "right": right,
        "leaf": leaf,
        "value": np.arange(n, dtype=np.float64),
        "depth": np.asarray(depth),
    }


def test_trees_too_deep_to_pad_are_walked_node_by_node() -> None:
    """Padding is bounded by every tree padded to the deepest (small chunks walk them so):
    one deep tree among shallow ones keeps the node walk, as before depth groups, instead of
    building millions of padded nodes when the model loads."""
    deep = fastpath.PERFECT_MAX_NODES.bit_length() - 2  # 2**deep is half the bound
    scorer = fastpath.CompiledTrees(
        [_chain(deep), _chain(1), _chain(1), _chain(2)], "sum", 0.0, "identity", False
    )
    assert scorer.perfect is None
    X = np.asarray([[-1.0], [0.5], [float(deep) + 3]])
    by_hand = [sum(t["value"][_leaf(t, x[0])] for t in scorer.trees) for x in X]
    np.testing.assert_allclose(scorer(X), by_hand)
    shallow = fastpath.CompiledTrees([_chain(3), _chain(5)], "sum", 0.0, "identity", False)
    assert shallow.perfect is not None
    np.testing.assert_allclose(
        shallow(X), [sum(t["value"][_leaf(t, x[0])] for t in shallow.trees) for x in X]
    )


def _leaf(tree: dict[str, np.ndarray], x: float) -> int:
    node = 0
    while not tree["leaf"][node]:
        node = int(tree["left"][node] if x <= tree["threshold"][node] else tree["right"][node])
    return node


def test_the_compiled_walk_gives_the_numpy_walks_leaves_bit_for_bit() -> None:
    """`app.ml.tree_kernel` replaces the numpy walk once built: every leaf the same, for one
    film, a small batch, and a batch big enough to be split between two threads, missing
    values included; so a film's score never depends on which walk ran."""
    X, y = data(1_200)
    blend = AveragedRegressor(
        [
            HistGradientBoostingRegressor(max_iter=60, max_leaf_nodes=9, random_state=0),
            lgb.LGBMRegressor(n_estimators=80, num_leaves=7, verbose=-1, random_state=0),
        ]
    ).fit(X, y)
    scorer = compile_estimator(blend)
    assert isinstance(scorer, CompiledTrees) and scorer.perfect is not None
    assert len(scorer.perfect.groups) > 1
    before = tree_kernel.ready()
    try:
        tree_kernel.disable()
        by_numpy = [scorer.perfect.leaves(X[:n]) for n in (1, 7, 100, 1_200)]
        assert tree_kernel.build() is not None
        by_kernel = [scorer.perfect.leaves(X[:n]) for n in (1, 7, 100, 1_200)]
        for numpy_leaves, kernel_leaves in zip(by_numpy, by_kernel, strict=True):
            np.testing.assert_array_equal(kernel_leaves, numpy_leaves)
        np.testing.assert_allclose(scorer(X), blend.predict(X), rtol=1e-9, atol=1e-9)
    finally:
        tree_kernel.disable()
        if before is not None:
            tree_kernel.build()


def test_a_compiled_walk_that_disagrees_with_the_reference_is_not_used() -> None:
    """The kernel is checked against a plain-Python walk before it serves: one that sends
    missing values the wrong way (here: always right) fails the check."""
    kernel = tree_kernel.build()
    assert kernel is not None and tree_kernel._agrees(kernel)

    def nan_goes_right(rows: Any, columns: Any, *rest: Any) -> None:
        # Every node reads the row as posted, NaN included: NaN <= threshold is false.
        kernel(rows, columns % (rows.shape[1] // 2), *rest)

    assert not tree_kernel._agrees(nan_goes_right)


def test_the_compiled_walk_is_built_in_the_background_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`start` returns at once; the numpy walk serves until the thread has built and checked
    the kernel; a second `start` builds nothing."""
    monkeypatch.setattr(tree_kernel, "_kernel", None)
    monkeypatch.setattr(tree_kernel, "_started", False)
    thread = tree_kernel.start()
    assert thread is not None and tree_kernel.start() is None
    thread.join(timeout=120)
    assert tree_kernel.ready() is not None
