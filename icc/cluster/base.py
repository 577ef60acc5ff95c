"""The estimator interface that every clusterer shares, scikit-learn style.

A subclass implements `_fit(X, k) -> labels` (and may set `cluster_centers_`); the base class
validates inputs, chooses k by silhouette when `k="auto"`, fits on a sample when asked to
(`fit_fraction`, `max_fit_rows`: algorithms that do not scale), and assigns the other points and
new ones to the nearest centroid or by a vote of their nearest sample points (`assign`).
"""

import faiss
import numpy as np
from sklearn.metrics import silhouette_score

from icc.corpus.shards import sample_mask
from icc.errors import ICCError

ASSIGN = ("centroid", "knn")


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
    fit_fraction: share of the points to fit on, drawn at random with `seed`; max_fit_rows: at
        most about this many (None: no bound). The other points are assigned as new ones are.
    assign: how points outside the fit sample get a cluster: "centroid" (nearest cluster mean) or
        "knn" (majority of the clusters of their `knn_k` nearest sample points, noise included;
        keeps the sample's (m, d) vectors).
    After `fit(X)`: `labels_` (n,), `cluster_centers_` (k, d) (mean of each cluster's members
    unless the algorithm has its own), `fit_rows_` (points in the fit sample), `k_scores_`
    {k: silhouette} when k was "auto".
    """

    def __init__(self, k=8, k_range=(2, 20), auto_sample: int = 5000, seed: int = 0, fit_fraction: float = 1.0,
                 max_fit_rows: int | None = None, assign: str = "centroid", knn_k: int = 10):
        if not 0 < fit_fraction <= 1:
            raise ICCError(f"fit_fraction must be in (0, 1], got {fit_fraction!r}")
        if max_fit_rows is not None and (isinstance(max_fit_rows, bool) or not isinstance(max_fit_rows, int) or max_fit_rows < 2):
            raise ICCError(f"max_fit_rows must be an integer >= 2 or null, got {max_fit_rows!r}")
        if assign not in ASSIGN:
            raise ICCError(f"unknown assign '{assign}' (choose from {', '.join(ASSIGN)})")
        self.k = k
        self.k_range = k_range
        self.auto_sample = auto_sample
        self.seed = seed
        self.fit_fraction = fit_fraction
        self.max_fit_rows = max_fit_rows
        self.assign_by = assign
        self.knn_k = knn_k

    # Whether the fitted labels are the nearest centroids (then `assign` reproduces them).
    labels_are_nearest_centroid = False

    def _fit(self, X: np.ndarray, k: int | None) -> np.ndarray:
        raise NotImplementedError

    def sample_fraction(self, n: int) -> float:
        """The share of n points to fit on: `fit_fraction`, lowered to draw about `max_fit_rows`."""
        return min(self.fit_fraction, self.max_fit_rows / n) if self.max_fit_rows else self.fit_fraction

    def fit(self, X):
        X = check_vectors(X)
        sample = sample_mask(len(X), self.sample_fraction(len(X)), self.seed, 0)
        self.fit_sample(X[sample])
        if not sample.all():
            labels = np.empty(len(X), dtype=np.int64)
            labels[sample] = self.labels_
            labels[~sample] = self.predict(X[~sample])
            self.labels_ = labels
        return self

    def fit_sample(self, X):
        """Fit on exactly the (m, d) points X (a sample already drawn); `labels_` is (m,)."""
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
        self.fit_rows_ = len(X)
        self.sample_ = (X, labels) if self.assign_by == "knn" else None
        return self

    def fit_predict(self, X) -> np.ndarray:
        return self.fit(X).labels_

    def predict(self, X) -> np.ndarray:
        return self.assign(X)[0]

    def assign(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The cluster of each row (`assign`: nearest centroid or kNN vote; -1 for a noise vote) and
        its Euclidean distance to that cluster's centroid (to the nearest centroid for noise):
        (n,) int64 and (n,) float32."""
        X = check_vectors(X)
        squared, nearest = _nearest(self.cluster_centers_, X, 1)
        labels, distances = nearest[:, 0].astype(np.int64), np.sqrt(np.maximum(squared[:, 0], 0))
        if self.assign_by == "knn":
            vectors, sample_labels = self.sample_
            votes = sample_labels[_nearest(vectors, X, min(self.knn_k, len(vectors)))[1]]  # (n, knn_k)
            counts = np.stack([(votes == votes[:, [j]]).sum(1) for j in range(votes.shape[1])], axis=1)
            labels = votes[np.arange(len(X)), counts.argmax(1)]  # ties: the nearest neighbour's cluster
            voted = labels >= 0
            distances[voted] = np.linalg.norm(X[voted] - self.cluster_centers_[labels[voted]], axis=1)
        return labels, distances

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


def _nearest(points: np.ndarray, X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices (len(X), n) of the `n` nearest of `points` to each row of X."""
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(points, dtype=np.float32))
    return index.search(X, n)


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
