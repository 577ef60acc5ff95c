"""Fuzzy c-means (scikit-fuzzy): every point has a membership in [0, 1] for each cluster."""

import numbers

import numpy as np
import skfuzzy
from sklearn.utils.validation import check_is_fitted

from icc.checks import check_non_negative, check_positive_int
from icc.cluster.base import KClusterer, check_vectors
from icc.errors import ICCError


class FuzzyCMeans(KClusterer):
    """Fuzzy c-means with fuzzifier `m` > 1 (2 in the LLM-embeddings paper): at most `max_iter`
    iterations, stopping once the (k, n) memberships change by less than `tol` (Frobenius norm).

    Hard labels are the cluster of highest membership, which is the nearest centroid;
    `membership(X)` gives (n, k). Other parameters: see `KClusterer` and `Clusterer`.
    After fit: also `n_iter_`, the iterations run.
    """

    labels_are_nearest_centroid = True

    def __init__(self, n_clusters=8, *, m=2.0, max_iter=300, tol=1e-5, random_state=0, k_range=(2, 20),
                 auto_sample=5000, fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(n_clusters, k_range=k_range, auto_sample=auto_sample, random_state=random_state,
                         fit_fraction=fit_fraction, max_fit_rows=max_fit_rows, assign=assign, knn_k=knn_k)
        self.m = m
        self.max_iter = max_iter
        self.tol = tol

    def check_params(self) -> None:
        super().check_params()
        if isinstance(self.m, bool) or not isinstance(self.m, numbers.Real) or self.m <= 1:
            raise ICCError(f"m must be a number > 1, got {self.m!r}")
        check_positive_int(self.max_iter, "max_iter")
        check_non_negative(self.tol, "tol")

    def _fit(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        centers, u, _, _, _, self.n_iter_, _ = skfuzzy.cluster.cmeans(
            X.T, k, self.m, self.tol, self.max_iter, seed=self.random_state
        )
        return u.argmax(axis=0), centers.astype(np.float32)

    def membership(self, X) -> np.ndarray:
        """(n, k) memberships of each row of the (n, d) points X in each cluster; rows sum to 1."""
        check_is_fitted(self, "cluster_centers_")
        u, *_ = skfuzzy.cluster.cmeans_predict(
            check_vectors(X).T, self.cluster_centers_, self.m, self.tol, self.max_iter, seed=self.random_state
        )
        return u.T
