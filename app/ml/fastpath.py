"""Fast evaluation of a fitted pipeline's estimator for small batches.

scikit-learn's tree ensembles evaluate one tree per Python-level call: a 300-tree gradient
boosting model costs ~3 ms for a single film, almost all of it call overhead, and a random
forest even more. A pre-release predictor answers one film at a time most of the time, so
the registry "compiles" the fitted estimator into flat numpy arrays evaluated for all trees
at once, one tree level per step (~0.1 ms per film). Linear pipelines (impute, scale,
dot product) compile to three array operations.

Trees padded to full depth are walked by compiled code once `app.ml.tree_kernel` has built it
in the background (the same leaves, about twice as fast); numpy walks them until then.

The compiled form is an optimisation only: it is built from the same fitted objects, checked
against scikit-learn's own predictions on real rows before use (`verified`), and big batches,
where scikit-learn's per-call overhead no longer matters, still go through the pipeline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from app.ml import tree_kernel

FloatMatrix = npt.NDArray[np.float64]
FloatVector = npt.NDArray[np.float64]


class Scorer(Protocol):
    """Feature matrix -> the served score (log revenue, or P(hit))."""

    def __call__(self, X: FloatMatrix) -> FloatVector: ...


class Composed:
    """A scorer made of compiled parts (the wrappers of `app.ml.estimators`): `parts` lets
    `scales` judge it by what it is made of."""

    def __init__(self, score: Callable[[FloatMatrix], FloatVector], *parts: Scorer) -> None:
        self.score = score
        self.parts = parts

    def __call__(self, X: FloatMatrix) -> FloatVector:
        return self.score(X)


def scales(scorer: Scorer) -> bool:
    """Whether a compiled scorer beats scikit-learn at any batch size: linear models and
    trees padded to full depth do; the node-by-node tree walk only on small batches."""
    if isinstance(scorer, Composed):
        return all(scales(p) for p in scorer.parts)
    return isinstance(scorer, CompiledLinear) or (
        isinstance(scorer, CompiledTrees) and scorer.perfect is not None
    )


def _sigmoid(raw: FloatVector) -> FloatVector:
    out: FloatVector = 1.0 / (1.0 + np.exp(-raw))
    return out


class CompiledTrees:
    """Every node of every tree in flat arrays; leaves point to themselves so that walking
    `depth` levels from the roots lands every (row, tree) pair on its leaf."""

    def __init__(
        self,
        trees: list[dict[str, npt.NDArray[Any]]],
        combine: str,
        baseline: float,
        link: str,
        float32_inputs: bool,
    ) -> None:
        self.trees = trees  # kept to merge the members of a blend (`_merged_trees`)
        offsets = np.cumsum([0] + [len(t["feature"]) for t in trees[:-1]])
        self.roots = offsets.astype(np.intp)
        self.feature = np.concatenate([t["feature"] for t in trees]).astype(np.intp)
        self.threshold = np.concatenate([t["threshold"] for t in trees]).astype(np.float64)
        self.missing_left = np.concatenate([t["missing_left"] for t in trees]).astype(bool)
        self.value = np.concatenate([t["value"] for t in trees]).astype(np.float64)
        left, right = [], []
        for off, t in zip(offsets, trees, strict=True):
            own = np.arange(len(t["feature"])) + off
            leaf = t["leaf"].astype(bool)
            left.append(np.where(leaf, own, t["left"] + off))
            right.append(np.where(leaf, own, t["right"] + off))
        self.left = np.concatenate(left).astype(np.intp)
        self.right = np.concatenate(right).astype(np.intp)
        self.depth = max(int(t["depth"]) for t in trees)
        self.combine = combine
        self.baseline = baseline
        self.link = link
        self.float32_inputs = float32_inputs
        self.perfect = (
            _PerfectForest(trees)
            if len(trees) * 2**self.depth <= PERFECT_MAX_NODES  # padded to the deepest too
            else None
        )

    def __call__(self, X: FloatMatrix) -> FloatVector:
        if self.float32_inputs:  # scikit-learn's CART trees compare float32 inputs
            X = X.astype(np.float32).astype(np.float64)
        if self.perfect is not None:
            leaves = self.perfect.leaves(X)
            raw = leaves.sum(axis=1) if self.combine == "sum" else leaves.mean(axis=1)
            raw = raw + self.baseline
            scores: FloatVector = _sigmoid(raw) if self.link == "sigmoid" else raw
            return scores
        n, width = X.shape
        flat = np.ascontiguousarray(X).ravel()
        # 1-D `take` on flat arrays is the cheapest numpy gather; one walk step per level.
        offsets = (np.arange(n, dtype=np.intp) * width)[:, None]
        node = np.broadcast_to(self.roots, (n, len(self.roots)))
        with_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            x = flat.take(offsets + self.feature.take(node))
            go_left = x <= self.threshold.take(node)  # False for NaN...
            if with_nan:  # ...which then goes where training sent missing values
                go_left |= np.isnan(x) & self.missing_left.take(node)
            node = np.where(go_left, self.left.take(node), self.right.take(node))
        leaves = self.value.take(node)
        raw = leaves.sum(axis=1) if self.combine == "sum" else leaves.mean(axis=1)
        raw = raw + self.baseline
        out: FloatVector = _sigmoid(raw) if self.link == "sigmoid" else raw
        return out


# Trees padded to full depth cost 2**depth nodes each: fine for boosting's shallow trees
# (400 trees of depth 6: 51,200 nodes), not for a forest's deep ones (the walk above).
PERFECT_MAX_NODES = 1 << 22
CHUNK_ROWS = 128  # rows per pass: the (rows x trees) working arrays stay in cache
GROUPED_MIN_ROWS = 8  # chunks this big walk the trees in depth groups (`_PerfectForest`)


class _PerfectTrees:
    """Trees of one depth padded to complete binary trees of that depth, in heap order, so
    that a child's index is arithmetic (2i + 1 or 2i + 2) instead of a lookup. A leaf above
    full depth becomes a chain of always-left nodes (threshold +inf, missing values left)
    ending in its value. Walking `depth` levels costs three gathers per level."""

    def __init__(self, trees: list[dict[str, npt.NDArray[Any]]], depth: int) -> None:
        inner, width = 2**depth - 1, 2**depth
        n = len(trees)
        feature = np.zeros((n, inner), dtype=np.intp)
        threshold = np.full((n, inner), np.inf)
        missing_left = np.ones((n, inner), dtype=bool)
        value = np.zeros((n, width))
        for t, tree in enumerate(trees):
            stack = [(0, 0, 0)]  # (node, heap position, level)
            while stack:
                node, at, level = stack.pop()
                if tree["leaf"][node]:
                    while level < depth:  # always left down to full depth
                        at, level = 2 * at + 1, level + 1
                    value[t, at - inner] = tree["value"][node]
                    continue
                feature[t, at] = tree["feature"][node]
                threshold[t, at] = tree["threshold"][node]
                missing_left[t, at] = tree["missing_left"][node]
                stack.append((int(tree["left"][node]), 2 * at + 1, level + 1))
                stack.append((int(tree["right"][node]), 2 * at + 2, level + 1))
        self.depth = depth
        self.inner = inner
        self.n_trees = n
        self.feature = feature.ravel()
        self.missing_left = missing_left.ravel()
        self.threshold = threshold.ravel()
        self.value = value.ravel()
        self.tree_inner = (np.arange(n, dtype=np.intp) * inner)[None, :]
        self.tree_leaf = (np.arange(n, dtype=np.intp) * width)[None, :]
        self.child_shift = 2 - self.tree_inner
        self._columns: dict[int, npt.NDArray[np.intp]] = {}

    def _column_of(self, block: int) -> npt.NDArray[np.intp]:
        # Which copy of a row each node reads: missing values go left where training sent
        # them left, so those nodes read a copy with NaN as -inf (left of any threshold);
        # the others read NaN itself, which compares false and goes right.
        columns = self._columns.get(block)
        if columns is None:
            columns = self._columns[block] = self.feature + self.missing_left * block
        return columns

    def walk(self, both: FloatMatrix, offsets: npt.NDArray[np.intp], out: FloatMatrix) -> None:
        """The leaf value of each (row, tree) of one chunk into `out` (rows x these trees).
        `both`: the chunk's rows flattened, then again with NaN as -inf; `offsets`: each
        row's start in them."""
        rows = offsets.shape[0]
        columns = self._column_of(both.shape[0] // 2)
        node = np.repeat(self.tree_inner, rows, axis=0)
        cell = np.empty_like(node)
        goes_left = np.empty(node.shape, dtype=bool)
        for _ in range(self.depth):
            np.add(offsets, columns.take(node), out=cell)
            np.less_equal(both.take(cell), self.threshold.take(node), out=goes_left)
            # The heap child, tree-global: 2 * node + 2 - tree offset - went left.
            node *= 2
            node += self.child_shift
            node -= goes_left
        leaf = node - self.inner - self.tree_inner + self.tree_leaf
        out[:] = self.value.take(leaf)


class _PerfectForest:
    """The trees grouped by depth, each group padded only to its own depth (a boosted
    model mixes depths 3 to 6: padding all of them to 6 walked a quarter more levels), and
    walked over chunks of rows sized for the cache: about twice as fast as scikit-learn's
    per-tree loop on a 1,000-film batch, and as fast as the node walk on one film. Leaves
    come out in depth order (`order`), which only a sum or a mean of them reads."""

    def __init__(self, trees: list[dict[str, npt.NDArray[Any]]]) -> None:
        depths = [int(t["depth"]) for t in trees]
        self.order = sorted(range(len(trees)), key=lambda i: depths[i])
        self.groups: list[tuple[int, int, _PerfectTrees]] = []
        start = 0
        for depth in sorted(set(depths)):
            members = [trees[i] for i in self.order if depths[i] == depth]
            self.groups.append((start, start + len(members), _PerfectTrees(members, depth)))
            start += len(members)
        self.n_trees = len(trees)
        # A few rows pay numpy's per-call cost once per level and group: one group padded to
        # the deepest tree walks fewer calls (one film: 0.12 ms against 0.23 ms grouped; even
        # at 8 rows).
        # Same trees in the same order, so the leaves, and their sums, are the same.
        self.padded = [
            (0, self.n_trees, _PerfectTrees([trees[i] for i in self.order], max(depths)))
        ]
        # For the compiled walk: every group's nodes end to end, so that one call (one GIL
        # release) walks them all.
        self.feature = np.concatenate([g.feature for _, _, g in self.groups])
        self.missing_left = np.concatenate([g.missing_left for _, _, g in self.groups])
        self.threshold = np.concatenate([g.threshold for _, _, g in self.groups])
        self.value = np.concatenate([g.value for _, _, g in self.groups])
        self.depths = np.asarray([g.depth for _, _, g in self.groups], dtype=np.intp)
        self.counts = np.asarray([g.n_trees for _, _, g in self.groups], dtype=np.intp)
        self._row_columns: dict[int, npt.NDArray[np.intp]] = {}

    def leaves(self, X: FloatMatrix) -> FloatMatrix:
        """(rows, trees in `order`): each tree's leaf value for each row. A big batch's
        chunks are shared with a second thread: numpy releases the GIL inside every step
        of the walk."""
        n = X.shape[0]
        out = np.empty((n, self.n_trees))
        X = np.ascontiguousarray(X, dtype=np.float64)
        kernel = tree_kernel.ready()
        if kernel is not None:
            self._walk_compiled(kernel, X, out)
            return out
        chunks = -(-n // CHUNK_ROWS)
        helper = _walk_helper() if chunks >= PARALLEL_MIN_CHUNKS else None
        if helper is None:
            self._walk(X, out, 0, n)
            return out
        middle = (chunks // 2) * CHUNK_ROWS
        other = helper.submit(self._walk, X, out, middle, n)
        self._walk(X, out, 0, middle)
        other.result()
        return out

    def _walk_compiled(self, kernel: tree_kernel.Kernel, X: FloatMatrix, out: FloatMatrix) -> None:
        """`leaves` by the compiled walk (`app.ml.tree_kernel`): each group's trees over all
        rows, a big batch's second half in the helper thread (the kernel releases the GIL)."""
        n, width = X.shape
        rows = np.empty((n, 2 * width))
        rows[:, :width] = X
        left = rows[:, width:]
        left[:] = X
        left[np.isnan(left)] = -np.inf
        helper = _walk_helper() if n >= PARALLEL_MIN_CHUNKS * CHUNK_ROWS else None
        if helper is None:
            self._kernel_rows(kernel, rows, out, width)
            return
        middle = n // 2
        other = helper.submit(self._kernel_rows, kernel, rows[middle:], out[middle:], width)
        self._kernel_rows(kernel, rows[:middle], out[:middle], width)
        other.result()

    def _kernel_rows(
        self, kernel: tree_kernel.Kernel, rows: FloatMatrix, out: FloatMatrix, width: int
    ) -> None:
        # Which half of a row each node reads, as `_PerfectTrees._column_of` says for chunks.
        columns = self._row_columns.get(width)
        if columns is None:
            columns = self._row_columns[width] = self.feature + self.missing_left * width
        kernel(rows, columns, self.threshold, self.value, self.depths, self.counts, out)

    def _walk(self, X: FloatMatrix, out: FloatMatrix, start: int, stop: int) -> None:
        """Rows start..stop of `leaves`, written into `out`."""
        width = X.shape[1]
        for first in range(start, stop, CHUNK_ROWS):
            chunk = X[first : min(first + CHUNK_ROWS, stop)]
            rows = chunk.shape[0]
            block = rows * width
            both = np.empty(2 * block)
            both[:block] = chunk.ravel()
            left = both[block:]
            left[:] = both[:block]
            left[np.isnan(left)] = -np.inf
            offsets = (np.arange(rows, dtype=np.intp) * width)[:, None]
            groups = self.groups if rows >= GROUPED_MIN_ROWS else self.padded
            for lo, hi, group in groups:
                group.walk(both, offsets, out[first : first + rows, lo:hi])


# Batches of at least this many chunks (512 films) walk in two threads, on machines with more
# than one core: measured on 1,000 films, see `bench/RESULTS.md` (predict-bench).
PARALLEL_MIN_CHUNKS = 4
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _walk_helper() -> ThreadPoolExecutor | None:
    """One thread, made on first use, that walks half of a big batch (None on one core)."""
    global _helper
    if (os.cpu_count() or 1) < 2:
        return None
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tree-walk")
        return _helper


def _hgb_trees(model: Any) -> list[dict[str, npt.NDArray[Any]]] | None:
    trees = []
    for per_iteration in model._predictors:
        if len(per_iteration) != 1:
            return None  # multi-class: not ours
        nodes = per_iteration[0].nodes
        if nodes["is_categorical"].any():
            return None
        trees.append(
            {
                "feature": nodes["feature_idx"],
                "threshold": nodes["num_threshold"],
                "missing_left": nodes["missing_go_to_left"],
                "left": nodes["left"].astype(np.intp),
                "right": nodes["right"].astype(np.intp),
                "leaf": nodes["is_leaf"],
                "value": nodes["value"],
                "depth": np.asarray(nodes["depth"].max()),
            }
        )
    return trees


def _forest_trees(model: Any, classifier: bool) -> list[dict[str, npt.NDArray[Any]]]:
    trees = []
    for est in model.estimators_:
        t = est.tree_
        leaf = t.children_left == -1
        if classifier:
            counts = t.value[:, 0, :]
            value = counts[:, 1] / np.maximum(counts.sum(axis=1), 1e-300)
        else:
            value = t.value[:, 0, 0]
        trees.append(
            {
                "feature": np.where(leaf, 0, t.feature),
                "threshold": np.where(leaf, np.inf, t.threshold),
                "missing_left": np.asarray(t.missing_go_to_left, dtype=bool),
                "left": np.where(leaf, 0, t.children_left),
                "right": np.where(leaf, 0, t.children_right),
                "leaf": leaf,
                "value": value,
                "depth": np.asarray(t.max_depth),
            }
        )
    return trees


class CompiledLinear:
    """SimpleImputer(add_indicator) -> StandardScaler -> Ridge / LogisticRegression."""

    def __init__(
        self, imputer: SimpleImputer, scaler: StandardScaler, model: Any, link: str
    ) -> None:
        stats = np.asarray(imputer.statistics_, dtype=np.float64)
        self.keep = np.flatnonzero(~np.isnan(stats))  # all-NaN training columns are dropped
        self.fill = stats[self.keep]
        indicator = imputer.indicator_
        self.indicator = (
            np.asarray(indicator.features_, dtype=np.intp)
            if indicator is not None
            else np.zeros(0, dtype=np.intp)
        )
        mean = np.asarray(scaler.mean_, dtype=np.float64)
        scale = np.asarray(scaler.scale_, dtype=np.float64)
        coef = np.asarray(model.coef_, dtype=np.float64).reshape(-1)
        # Fold the scaler into the coefficients: w·((x - m) / s) + b = (w / s)·x + (b - w·m/s)
        self.coef = coef / scale
        self.intercept = float(np.asarray(model.intercept_).reshape(-1)[0]) - float(
            np.dot(coef, mean / scale)
        )
        self.link = link

    def __call__(self, X: FloatMatrix) -> FloatVector:
        kept = X[:, self.keep]
        missing = np.isnan(kept)
        imputed = np.where(missing, self.fill, kept)
        flags = np.isnan(X[:, self.indicator]).astype(np.float64)
        raw = np.concatenate([imputed, flags], axis=1) @ self.coef + self.intercept
        out: FloatVector = _sigmoid(raw) if self.link == "sigmoid" else raw
        return out


def compile_tail(pipeline: Pipeline) -> Scorer | None:
    """A fast scorer for everything after the feature step, or None when the estimator is
    not one this module knows (the pipeline is then used as is)."""
    steps = [step for _, step in pipeline.steps[1:]]
    if len(steps) == 1:
        return compile_estimator(steps[0])
    return _compile_linear(steps)


def compile_estimator(model: Any) -> Scorer | None:
    """The served score of one fitted estimator: a regressor's prediction, a binary
    classifier's P(class 1); wrappers of `app.ml.estimators` compile through to their parts."""
    from app.ml.estimators import AveragedRegressor, CalibratedHit, ConstantDollarRegressor

    if isinstance(model, ConstantDollarRegressor):
        inner = compile_estimator(model.estimator_)
        if inner is None:
            return None
        column = model.column
        return Composed(lambda X: inner(X) + X[:, column], inner)
    if isinstance(model, AveragedRegressor):
        merged = _merged_trees(model.estimators_)
        if merged is not None:
            return merged
        members = [_compile_raw(e) for e in model.estimators_]
        if any(m is None for m in members):
            return None
        parts = [m for m in members if m is not None]
        return Composed(lambda X: np.mean([m(X) for m in parts], axis=0), *parts)
    if isinstance(model, CalibratedHit):
        from app.ml.estimators import Calibration

        raw = _compile_raw(model.estimator_)
        if raw is None:
            return None
        calibration = model.calibration or Calibration("identity")
        return Composed(lambda X: np.clip(calibration(raw(X)), 0.0, 1.0), raw)
    if isinstance(model, Pipeline):
        return _compile_linear([step for _, step in model.steps])
    if isinstance(model, HistGradientBoostingRegressor | HistGradientBoostingClassifier):
        return _compile_hgb(model)
    if isinstance(model, RandomForestRegressor | RandomForestClassifier):
        classifier = isinstance(model, RandomForestClassifier)
        if classifier and len(model.classes_) != 2:
            return None
        return CompiledTrees(
            _forest_trees(model, classifier),
            combine="mean",
            baseline=0.0,
            link="identity",
            float32_inputs=True,
        )
    if type(model).__module__.startswith("lightgbm"):
        return _compile_lightgbm(model)
    return None


def _merged_trees(estimators: list[Any]) -> CompiledTrees | None:
    """A blend of boosted tree models as one ensemble: every member's trees with their leaf
    values divided by the number of members, so that the sum is the mean of the members' raw
    scores (log-odds for classifiers). One walk instead of one per member: a one-film
    prediction pays numpy's per-call cost once per tree level, not once per member and level.
    None unless every member is trees summed (gradient boosting, LightGBM)."""
    compiled = [compile_estimator(e) for e in estimators]
    members = [c for c in compiled if isinstance(c, CompiledTrees) and c.combine == "sum"]
    if not members or len(members) != len(estimators):
        return None
    if any(c.float32_inputs != members[0].float32_inputs for c in members):
        return None
    k = len(members)
    trees = [
        {**t, "value": np.asarray(t["value"], dtype=np.float64) / k}
        for c in members
        for t in c.trees
    ]
    return CompiledTrees(
        trees,
        combine="sum",
        baseline=sum(c.baseline for c in members) / k,
        link="identity",
        float32_inputs=members[0].float32_inputs,
    )


def _compile_raw(model: Any) -> Scorer | None:
    """Like `app.ml.estimators.raw_score`: log-odds for classifiers, predictions otherwise."""
    scorer = compile_estimator(model)
    if scorer is None or not hasattr(model, "predict_proba"):
        return scorer

    def raw(X: FloatMatrix) -> FloatVector:
        p = np.clip(scorer(X), 1e-12, 1 - 1e-12)
        out: FloatVector = np.log(p / (1 - p))
        return out

    return Composed(raw, scorer)


def _compile_hgb(model: Any) -> Scorer | None:
    if (
        getattr(model._loss, "n_classes", 2) not in (None, 2)
        or model._baseline_prediction.size != 1
    ):
        return None
    hgb = _hgb_trees(model)
    if hgb is None:
        return None
    classifier = isinstance(model, HistGradientBoostingClassifier)
    if not classifier and type(model._loss.link).__name__ != "IdentityLink":
        return None
    return CompiledTrees(
        hgb,
        combine="sum",
        baseline=float(np.asarray(model._baseline_prediction).reshape(-1)[0]),
        link="sigmoid" if classifier else "identity",
        float32_inputs=False,
    )


def _compile_linear(steps: list[Any]) -> Scorer | None:
    model = steps[-1] if steps else None
    if (
        len(steps) == 3
        and isinstance(steps[0], SimpleImputer)
        and isinstance(steps[1], StandardScaler)
        and isinstance(model, Ridge | LogisticRegression)
        and np.asarray(model.coef_).reshape(1, -1).shape[0] == 1
    ):
        link = "sigmoid" if isinstance(model, LogisticRegression) else "identity"
        return CompiledLinear(steps[0], steps[1], model, link)
    return None


def _lgbm_walk(node: dict[str, Any], depth: int, nodes: list[dict[str, Any]]) -> int:
    index = len(nodes)
    row: dict[str, Any] = {"depth": depth}
    nodes.append(row)
    if "leaf_value" in node or "split_feature" not in node:
        row.update(
            feature=0, threshold=np.inf, missing_left=True, left=0, right=0, leaf=True,
            value=float(node.get("leaf_value", 0.0)),
        )  # fmt: skip
        return index
    if node.get("decision_type", "<=") != "<=" or node.get("missing_type") == "Zero":
        raise ValueError("unsupported split")
    threshold = float(node["threshold"])
    missing = node.get("missing_type", "None")
    row.update(
        feature=int(node["split_feature"]),
        threshold=threshold,
        missing_left=bool(node.get("default_left")) if missing == "NaN" else bool(threshold >= 0.0),
        leaf=False,
        value=0.0,
    )
    row["left"] = _lgbm_walk(node["left_child"], depth + 1, nodes)
    row["right"] = _lgbm_walk(node["right_child"], depth + 1, nodes)
    return index


def _compile_lightgbm(model: Any) -> Scorer | None:
    """LightGBM's trees from its JSON dump. Numeric splits only (`<=`); a NaN goes where
    LightGBM sends it: the default side for `missing_type` NaN, and as the value 0 for None
    (LightGBM reads NaN as 0 for features that had no missing value in training)."""
    objective = str(model.objective_ if hasattr(model, "objective_") else model.objective)
    if objective not in ("regression", "binary"):
        return None
    dump = model.booster_.dump_model()
    trees: list[dict[str, npt.NDArray[Any]]] = []
    for info in dump["tree_info"]:
        nodes: list[dict[str, Any]] = []

        try:
            _lgbm_walk(info["tree_structure"], 0, nodes)
        except (ValueError, KeyError):
            return None
        trees.append(
            {
                "feature": np.asarray([n["feature"] for n in nodes]),
                "threshold": np.asarray([n["threshold"] for n in nodes]),
                "missing_left": np.asarray([n["missing_left"] for n in nodes]),
                "left": np.asarray([n["left"] for n in nodes], dtype=np.intp),
                "right": np.asarray([n["right"] for n in nodes], dtype=np.intp),
                "leaf": np.asarray([n["leaf"] for n in nodes]),
                "value": np.asarray([n["value"] for n in nodes]),
                "depth": np.asarray(max(n["depth"] for n in nodes)),
            }
        )
    if not trees:
        return None
    return CompiledTrees(
        trees,
        combine="sum",
        baseline=0.0,
        link="sigmoid" if objective == "binary" else "identity",
        float32_inputs=False,
    )


_controller: Any = None


def _one_openmp_thread() -> Any:
    """A context limiting OpenMP to the calling thread. scikit-learn's gradient boosting
    opens an OpenMP parallel region per tree; on a small, shared machine those regions
    wait for busy cores, and 1,000 films took ~100 ms instead of ~10 ms. Requests are
    already concurrent, so one thread per request is the right shape. OpenMP's thread
    count is per calling thread, so other threads (and BLAS) are unaffected."""
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="openmp")


def pipeline_scorer(pipeline: Pipeline, classifier: bool) -> Scorer:
    """The reference scorer: scikit-learn's own tail of the pipeline."""
    tail = pipeline[1:]

    def score(X: FloatMatrix) -> FloatVector:
        with _one_openmp_thread():
            if classifier:
                return np.asarray(tail.predict_proba(X)[:, 1], dtype=np.float64)
            return np.asarray(tail.predict(X), dtype=np.float64)

    return score


def verified(fast: Scorer, reference: Scorer, X: FloatMatrix, atol: float = 1e-6) -> bool:
    """Whether the compiled scorer reproduces scikit-learn on these rows."""
    try:
        return bool(np.allclose(fast(X), reference(X), atol=atol, rtol=1e-6))
    except (IndexError, ValueError, FloatingPointError):
        return False
