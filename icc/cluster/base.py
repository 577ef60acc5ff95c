"""The estimator interface that every clusterer shares, scikit-learn style.

A subclass implements `_fit(X, k) -> labels` (and may set `cluster_centers_`); the base class
validates inputs, chooses k by silhouette when `k="auto"`, and assigns new points to the
nearest centroid.
"""

import faiss
import numpy as np
from sklearn.metrics import silhouette_score

from icc.errors import ICCError


def check_vectors(X) -> np.ndarray:
    """Return X as a C-contiguous (n, d) float32 array of finite values, n >= 1."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ICCError(f"expected a non-empty (n, d) array of vectors, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ICCError("vectors contain NaN or infinite values")
    return X


def check_k(k, n: int) -> int:
    """Validate a number of clusters for n points: an integer with 2 <= k <= n."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ICCError(f"k must be an integer or 'auto', got {k!r}")
    if not 2 <= k <= n:
        raise ICCError(f"k must be between 2 and the number of texts ({n}), got {k}")
    return int(k)


class Clusterer:
    """Base clusterer.

    k: number of clusters, "auto" (silhouette over `k_range`, on at most `auto_sample` points),
        or None for algorithms that find it themselves.
    After `fit(X)`: `labels_` (n,), `cluster_centers_` (k, d) (mean of each cluster's members
    unless the algorithm has its own), `k_scores_` {k: silhouette} when k was "auto".
    """

    def __init__(self, k=8, k_range=(2, 20), auto_sample: int = 5000, seed: int = 0):
        self.k = k
        self.k_range = k_range
        self.auto_sample = auto_sample
        self.seed = seed

    def _fit(self, X: np.ndarray, k: int | None) -> np.ndarray:
        raise NotImplementedError

    def fit(self, X):
        X = check_vectors(X)
        self.cluster_centers_ = None
        if self.k == "auto":
            k = self._select_k(X)
        elif self.k is None:
            k = None
        else:
            k = check_k(self.k, len(X))
        labels = np.asarray(self._fit(X, k), dtype=np.int64)
        if self.cluster_centers_ is None:
            self.cluster_centers_ = _means(X, labels)
        self.labels_ = labels
        return self

    def fit_predict(self, X) -> np.ndarray:
        return self.fit(X).labels_

    def predict(self, X) -> np.ndarray:
        return self.assign(X)[0]

    def assign(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid of each row: labels (n,) int64 and Euclidean distances (n,) float32."""
        X = check_vectors(X)
        index = faiss.IndexFlatL2(X.shape[1])
        index.add(np.ascontiguousarray(self.cluster_centers_, dtype=np.float32))
        squared, nearest = index.search(X, 1)
        return nearest[:, 0].astype(np.int64), np.sqrt(np.maximum(squared[:, 0], 0))

    def _select_k(self, X: np.ndarray) -> int:
        rng = np.random.default_rng(self.seed)
        sample = X[rng.choice(len(X), min(len(X), self.auto_sample), replace=False)]
        k_min, k_max = self.k_range
        candidates = range(max(2, k_min), min(k_max, len(sample) - 1) + 1)
        if not candidates:
            raise ICCError(f"too few texts ({len(X)}) to choose k in {self.k_range}")
        self.k_scores_ = {}
        for k in candidates:
            labels = self._fit(sample, k)
            valid = len(np.unique(labels)) > 1
            self.k_scores_[k] = float(silhouette_score(sample, labels)) if valid else -1.0
        return max(self.k_scores_, key=self.k_scores_.get)


def _means(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k, d) mean of each cluster 0..k-1; label -1 (noise) is left out."""
    k = int(labels.max()) + 1 if (labels >= 0).any() else 0
    if k == 0:
        raise ICCError("the clusterer found no clusters (every point is noise)")
    keep = labels >= 0
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[keep], X[keep])
    counts = np.bincount(labels[keep], minlength=k)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
