"""A fitted HistGradientBoostingRegressor's trees as flat arrays, walked by one compiled loop: scikit-learn's
predictions, bit for bit, at a fraction of the cost of its predict for every request size.

scikit-learn's predict pays a column transformer and input checks per call (milliseconds), then calls its compiled
per-tree routine once per tree (~4 µs a call before any row is walked: a typed memoryview of a 13-field node struct
is checked each time) over nodes of 56 bytes. Here the nodes are columns of their own (feature, threshold,
children, missing direction, category row), and a numba-compiled loop walks each tree for every row, adding the
leaves to the baseline in scikit-learn's order, in float64 (`fastmath` off): the same sums. One call for all the
trees: 4 µs for one row (the numpy level-by-level walk it replaces took 70), 2.3 x scikit-learn's own routine at
1,000 rows (docs/benchmarks.md, "One compiled loop for the trees").
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor


class CompiledForest:
    """The internal nodes numbered 0.. across all the trees; a child or a root that is a leaf is -(its number)-1."""

    def __init__(self, model: HistGradientBoostingRegressor) -> None:
        if model.n_trees_per_iteration_ != 1:
            raise ValueError("only single-output regressors are compiled")
        self.model = model
        self._compile_preprocessor(model)
        trees = [predictor.nodes for (predictor,) in model._predictors]
        bitsets = [np.asarray(predictor.raw_left_cat_bitsets) for (predictor,) in model._predictors]
        sizes = [len(tree) for tree in trees]
        first = np.cumsum([0, *sizes[:-1]])  # each tree's first node in the flat arrays
        flat = np.concatenate(trees)
        leaf = flat["is_leaf"].astype(bool)
        # Each node's reference: internal nodes by their rank among internal nodes, leaves as -(rank among leaves)-1.
        reference = np.where(leaf, -np.cumsum(leaf), np.cumsum(~leaf) - 1).astype(np.int32)
        internal = np.flatnonzero(~leaf)
        tree_start = np.repeat(first, sizes)[internal]
        self.feature = flat["feature_idx"][internal].astype(np.int32)
        self.threshold = flat["num_threshold"][internal].astype(np.float64)
        self.left = reference[flat["left"][internal].astype(np.intp) + tree_start]
        self.right = reference[flat["right"][internal].astype(np.intp) + tree_start]
        self.missing_left = flat["missing_go_to_left"][internal].astype(np.bool_)
        self.leaf_value = flat["value"][leaf].astype(np.float64)
        self.roots = reference[first]
        categorical = flat["is_categorical"][internal].astype(bool)
        if categorical.any() and model._preprocessor is None:
            raise NotImplementedError("categorical splits without HGB's ordinal encoder are not compiled")
        # Which category codes go left at each categorical node: row `category_row` of a (rows, 256) table.
        bitset_start = np.repeat(np.cumsum([0, *[len(b) for b in bitsets[:-1]]]), sizes)[internal]
        self.category_row = np.where(categorical, flat["bitset_idx"][internal] + bitset_start, -1).astype(np.int32)
        self.left_categories = _bits(np.concatenate(bitsets)).ravel()
        self.baseline = float(model._baseline_prediction.ravel()[0])
        self.raw_predict(np.empty((0, model.n_features_in_)))  # compiled (or loaded) now: forked processes inherit it

    def _compile_preprocessor(self, model: HistGradientBoostingRegressor) -> None:
        """HGB ordinal-encodes its categorical columns and puts them first; do the same with lookups."""
        if model._preprocessor is None:
            self.order, self.lookups = None, {}
            return
        is_cat = model.is_categorical_
        encoder = model._preprocessor.named_transformers_["encoder"]
        self.order = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
        self.lookups = {}
        for position, (column, categories) in enumerate(zip(np.flatnonzero(is_cat), encoder.categories_, strict=True)):
            known = np.asarray([c for c in categories if c == c], dtype=np.float64)  # NaN is "missing"
            order = np.argsort(known, kind="stable")
            self.lookups[position] = (column, known[order], order.astype(np.float64))

    def preprocess(self, matrix: np.ndarray) -> np.ndarray:
        """HGB's ordinal encoding: a known category becomes its position among the fitted categories, anything else
        (unseen, NaN) NaN; the same as its encoder, one sorted search a column."""
        if self.order is None:
            return matrix
        out = matrix[:, self.order]  # fancy indexing: already a copy
        for position, (column, known, codes) in self.lookups.items():
            out[:, position] = _encoded(matrix[:, column], known, codes)
        return out

    def raw_predict(self, matrix: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(self.preprocess(matrix), dtype=np.float64)  # the one layout the loop is compiled for
        walk = _compiled_walk()
        return walk(x, self.feature, self.threshold, self.left, self.right, self.missing_left, self.category_row,
                    self.left_categories, self.leaf_value, self.roots, self.baseline)  # fmt: skip

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self.model._loss.link.inverse(self.raw_predict(matrix))


@functools.cache
def _compiled_walk() -> Callable[..., np.ndarray]:
    """`_walk` compiled by numba, at the first forest built in a process (numba imported only then: a command that
    scores nothing does not pay its second of import). Cached on disk beside this file or, where that is read-only, in
    the user's cache (numba's own fallback; NUMBA_CACHE_DIR chooses): ~2 s the first time, ~0.7 s from the cache."""
    import numba

    return numba.njit(nogil=True, cache=True)(_walk)


def _walk(x, feature, threshold, left, right, missing_left, category_row, left_categories, leaf_value, roots,
          baseline):  # fmt: skip
    """Tree after tree, each row from the root to its leaf, as scikit-learn decides: a missing value (NaN) goes its
    node's missing way, a category code left if its bit is set, a number left if <= the threshold."""
    out = np.full(x.shape[0], baseline)
    for tree in range(roots.shape[0]):
        root = roots[tree]
        for row in range(x.shape[0]):
            node = root
            while node >= 0:
                value = x[row, feature[node]]
                if value != value:
                    go_left = missing_left[node]
                elif category_row[node] >= 0:
                    go_left = left_categories[category_row[node] * 256 + int(value)]
                else:
                    go_left = value <= threshold[node]
                node = left[node] if go_left else right[node]
            out[row] += leaf_value[-node - 1]
    return out


def _encoded(values: np.ndarray, known: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Each value's code among the sorted `known` values, NaN where it is not one of them (NaN included)."""
    if len(known) == 0:
        return np.full(len(values), np.nan)
    at = np.minimum(np.searchsorted(known, values), len(known) - 1)
    return np.where(known[at] == values, codes[at], np.nan)


def _bits(bitsets: np.ndarray) -> np.ndarray:
    """scikit-learn's (n, 8) uint32 bitsets as an (n, 256) boolean table."""
    if len(bitsets) == 0:
        return np.zeros((1, 256), dtype=bool)
    little = np.ascontiguousarray(bitsets.astype("<u4")).view(np.uint8)
    return np.unpackbits(little, axis=1, bitorder="little").astype(bool)
