"""Fuzzy c-means (scikit-fuzzy): every point has a membership in [0, 1] for each cluster."""

import numpy as np
import skfuzzy

from icc.cluster.base import Clusterer, check_vectors


class FuzzyCMeans(Clusterer):
    """Fuzzy c-means with fuzzifier `m` (2 in the LLM-embeddings paper).

    Hard labels are the cluster of highest membership, which is the nearest centroid;
    `membership(X)` gives (n, k).
    """

    labels_are_nearest_centroid = True

    def __init__(self, k=8, m: float = 2.0, max_iter: int = 300, tol: float = 1e-5, seed: int = 0, **kwargs):
        super().__init__(k=k, seed=seed, **kwargs)
        self.m = m
        self.max_iter = max_iter
        self.tol = tol

    def _fit(self, X: np.ndarray, k: int) -> np.ndarray:
        centers, u, *_ = skfuzzy.cluster.cmeans(X.T, k, self.m, self.tol, self.max_iter, seed=self.seed)
        self.cluster_centers_ = centers.astype(np.float32)
        return u.argmax(axis=0)

    def membership(self, X) -> np.ndarray:
        """(n, k) memberships of each row in each cluster; rows sum to 1."""
        u, *_ = skfuzzy.cluster.cmeans_predict(
            check_vectors(X).T, self.cluster_centers_, self.m, self.tol, self.max_iter, seed=self.seed
        )
        return u.T
