"""The estimator interface that every clusterer shares: scikit-learn estimators.

`Clusterer` fits on all the points or on a random sample of them (`fit_fraction`, `max_fit_rows`:
for algorithms that do not scale) and assigns the other points, and new ones, to the nearest
centroid or by a vote of their nearest sample points (`assign`). `KClusterer` adds the number of
clusters, given or chosen by silhouette (`n_clusters="auto"`). A subclass implements
`_fit(X, k) -> (labels, centers)`.

Constructors only store their parameters, as scikit-learn requires, so that `get_params`,
`set_params`, `clone`, pipelines and grid searches work; `check_params` validates them at the
start of every fit.
"""

import numbers
from collections.abc import Sequence

import faiss
import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.metrics import silhouette_score
from sklearn.utils.validation import check_is_fitted

from icc.checks import check_positive_int
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


def check_k(k, n: int | None = None) -> int:
    """Validate a number of clusters: an integer >= 2, and <= n for n points (None: not known yet)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ICCError(f"k must be an integer or 'auto', got {k!r}")
    if k < 2 or (n is not None and k > n):
        raise ICCError(f"k must be between 2 and the number of texts{'' if n is None else f' ({n})'}, got {k}")
    return int(k)


class Clusterer(ClusterMixin, BaseEstimator):
    """Base clusterer: fits on the points or a random sample of them, and assigns the rest.

    random_state: int seed of the fit sample and of the algorithm.
    fit_fraction: share of the points to fit on, drawn at random; max_fit_rows: at most about this
        many (None: no bound). The other points are assigned as new ones are.
    assign: how points outside the fit sample, and new ones, get a cluster: "centroid" (nearest
        cluster mean) or "knn" (majority of the clusters of their `knn_k` nearest sample points,
        noise included; keeps the sample's (m, d) vectors).

    After `fit(X)` on (n, d) points: `labels_` (n,) int64, -1 for noise; `cluster_centers_` (k, d)
    float32, the mean of each cluster's members unless the algorithm has its own ((0, d) when every
    point is noise); `fit_rows_` (m, the points in the fit sample); `n_features_in_` (d);
    `sample_`: the sample's (m, d) vectors and (m,) labels with assign="knn", else None.
    """

    # Whether the fitted labels are the nearest centroids (then `predict` reproduces them).
    labels_are_nearest_centroid = False

    def __init__(self, *, random_state=0, fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        self.random_state = random_state
        self.fit_fraction = fit_fraction
        self.max_fit_rows = max_fit_rows
        self.assign = assign
        self.knn_k = knn_k

    def check_params(self) -> None:
        """Raise ICCError, in one line, for the first parameter out of its range."""
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, numbers.Integral):
            raise ICCError(f"random_state must be an integer, got {self.random_state!r}")
        if not isinstance(self.fit_fraction, numbers.Real) or not 0 < self.fit_fraction <= 1:
            raise ICCError(f"fit_fraction must be in (0, 1], got {self.fit_fraction!r}")
        rows = self.max_fit_rows
        if rows is not None and (isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 2):
            raise ICCError(f"max_fit_rows must be an integer >= 2 or null, got {rows!r}")
        if self.assign not in ASSIGN:
            raise ICCError(f"unknown assign '{self.assign}' (choose from {', '.join(ASSIGN)})")
        check_positive_int(self.knn_k, "knn_k")

    def _n_clusters(self, X: np.ndarray) -> int | None:
        """The number of clusters to fit on the (m, d) points X; None: the algorithm finds it."""
        return None

    def _fit(self, X: np.ndarray, k: int | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Cluster the (m, d) float32 points X into k clusters (None: as many as the algorithm finds):
        (m,) labels, -1 for noise, and the (k, d) centers, or None for the means of the clusters."""
        raise NotImplementedError

    def sample_fraction(self, n: int) -> float:
        """The share of n points to fit on: `fit_fraction`, lowered to draw about `max_fit_rows`."""
        return min(self.fit_fraction, self.max_fit_rows / n) if self.max_fit_rows else self.fit_fraction

    def fit(self, X, y=None):
        """Fit on the (n, d) points X, or on a `sample_fraction` of them drawn with `random_state`
        (the rows that `icc.corpus.shards.sample_mask` draws for shard 0); y is ignored.
        `labels_` is (n,): the other points are assigned as by `predict`."""
        self.check_params()
        X = check_vectors(X)
        sample = np.random.default_rng([self.random_state, 0]).random(len(X)) < self.sample_fraction(len(X))
        if sample.all():
            return self.fit_sample(X)
        self.fit_sample(X[sample])
        labels = np.empty(len(X), dtype=np.int64)
        labels[sample] = self.labels_
        labels[~sample] = self.predict(X[~sample])
        self.labels_ = labels
        return self

    def fit_sample(self, X):
        """Fit on exactly the (m, d) points X (a sample already drawn): `labels_` is (m,)."""
        self.check_params()
        X = check_vectors(X)
        labels, centers = self._fit(X, self._n_clusters(X))
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.cluster_centers_ = cluster_means(X, self.labels_) if centers is None else centers
        self.fit_rows_, self.n_features_in_ = X.shape
        self.sample_ = (X, self.labels_) if self.assign == "knn" else None
        return self

    def predict(self, X) -> np.ndarray:
        """(n,) int64 cluster of each row of the (n, d) points X (-1: noise); see `predict_with_distances`."""
        return self.predict_with_distances(X)[0]

    def predict_with_distances(self, X) -> tuple[np.ndarray, np.ndarray]:
        """The cluster of each row of the (n, d) points X (`assign`: nearest centroid or kNN vote;
        -1 for a noise vote, and for every row when every fitted point was noise) and its Euclidean
        distance to that cluster's centroid (to the nearest centroid for noise; inf without
        centroids): (n,) int64 and (n,) float32."""
        check_is_fitted(self, "cluster_centers_")
        X = check_vectors(X)
        centers = self.cluster_centers_
        if X.shape[1] != centers.shape[1]:
            raise ICCError(f"X has {X.shape[1]} features, but the clusterer was fitted on {centers.shape[1]}")
        if len(centers) == 0:
            return np.full(len(X), -1, dtype=np.int64), np.full(len(X), np.inf, dtype=np.float32)
        squared, nearest = _nearest(centers, X, 1)
        labels, distances = nearest[:, 0].astype(np.int64), np.sqrt(np.maximum(squared[:, 0], 0))
        if self.assign == "knn":
            vectors, sample_labels = self.sample_
            votes = sample_labels[_nearest(vectors, X, min(self.knn_k, len(vectors)))[1]]  # (n, knn_k)
            counts = np.stack([(votes == votes[:, [j]]).sum(1) for j in range(votes.shape[1])], axis=1)
            labels = votes[np.arange(len(X)), counts.argmax(1)]  # ties: the nearest neighbour's cluster
            voted = labels >= 0
            distances[voted] = np.linalg.norm(X[voted] - centers[labels[voted]], axis=1)
        return labels, distances


class KClusterer(Clusterer):
    """A clusterer told its number of clusters.

    n_clusters: an integer, 2 <= n_clusters <= the points fitted on, or "auto": the k in `k_range`
        with the best silhouette on at most `auto_sample` of the points.
    Other parameters: see `Clusterer`. After fit: also `k_scores_`, {k: silhouette} when
    n_clusters is "auto", else None.
    """

    def __init__(self, n_clusters=8, *, k_range=(2, 20), auto_sample=5000, random_state=0, fit_fraction=1.0,
                 max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(random_state=random_state, fit_fraction=fit_fraction, max_fit_rows=max_fit_rows,
                         assign=assign, knn_k=knn_k)
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.auto_sample = auto_sample

    def check_params(self) -> None:
        super().check_params()
        if self.n_clusters != "auto":
            check_k(self.n_clusters)
        k_range = self.k_range
        if (not isinstance(k_range, Sequence) or len(k_range) != 2
                or not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in k_range)
                or not 2 <= k_range[0] <= k_range[1]):
            raise ICCError(f"k_range must be [smallest, largest] integers, 2 <= smallest <= largest, got {k_range!r}")
        check_positive_int(self.auto_sample, "auto_sample")

    def _n_clusters(self, X: np.ndarray) -> int:
        if self.n_clusters != "auto":
            self.k_scores_ = None
            return check_k(self.n_clusters, len(X))
        rng = np.random.default_rng(self.random_state)
        sample = X[rng.choice(len(X), min(len(X), self.auto_sample), replace=False)]
        k_min, k_max = self.k_range
        candidates = range(max(2, k_min), min(k_max, len(sample) - 1) + 1)
        if not candidates:
            raise ICCError(f"too few texts ({len(X)}) to choose k in {self.k_range}")
        self.k_scores_ = {}
        for k in candidates:
            labels = self._fit(sample, k)[0]
            valid = len(np.unique(labels)) > 1
            self.k_scores_[k] = float(silhouette_score(sample, labels)) if valid else -1.0
        return max(self.k_scores_, key=self.k_scores_.get)


def _nearest(points: np.ndarray, X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices (len(X), n) of the `n` nearest of `points` to each row of X."""
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(points, dtype=np.float32))
    return index.search(X, n)


def nearest_centroid(centers: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(n,) int64 index of the (k, d) center nearest each row of the (n, d) points X (Euclidean)."""
    return _nearest(centers, np.ascontiguousarray(X, dtype=np.float32), 1)[1][:, 0].astype(np.int64)


def member_distances(vectors: np.ndarray, labels: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(n,) float32 Euclidean distance of each of the (n, d) vectors to its cluster's centroid
    among the (k, d) centers; nan where labels is -1 (noise)."""
    distances = np.full(len(vectors), np.nan, dtype=np.float32)
    inside = labels >= 0
    distances[inside] = np.linalg.norm(vectors[inside] - centers[labels[inside]], axis=1)
    return distances


def cluster_means(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(k, d) float32 mean of each cluster 0..k-1; label -1 (noise) is left out: (0, d) when every point is noise."""
    keep = labels >= 0
    k = int(labels[keep].max()) + 1 if keep.any() else 0
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[keep], X[keep])
    counts = np.bincount(labels[keep], minlength=k)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)
