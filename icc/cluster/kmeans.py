"""k-means with faiss: k-means++ or random seeding, best of `n_init` runs by inertia."""

import faiss
import numpy as np
from sklearn.cluster import kmeans_plusplus

from icc.cluster.base import Clusterer


class KMeans(Clusterer):
    """k-means on (n, d) float32 vectors.

    init: "k-means++" (scikit-learn's seeding) or "random" (faiss's: k random points).
    n_init: runs with different seeds; the one with the lowest inertia wins.
    max_iter: Lloyd iterations per run. After fit: `inertia_` (sum of squared distances).
    """

    def __init__(self, k=8, n_init: int = 10, max_iter: int = 100, init: str = "k-means++", seed: int = 0, **kwargs):
        super().__init__(k=k, seed=seed, **kwargs)
        self.n_init = n_init
        self.max_iter = max_iter
        self.init = init

    def _fit(self, X: np.ndarray, k: int) -> np.ndarray:
        best = None
        for run in range(self.n_init):
            seed = self.seed + run
            init = kmeans_plusplus(X, k, random_state=seed)[0] if self.init == "k-means++" else None
            km = faiss.Kmeans(
                X.shape[1], k, niter=self.max_iter, seed=seed, verbose=False,
                max_points_per_centroid=len(X), min_points_per_centroid=1,
            )
            km.train(X, init_centroids=init)
            squared, labels = km.index.search(X, 1)
            inertia = float(squared.sum())
            if best is None or inertia < best[0]:
                best = (inertia, km.centroids.copy(), labels[:, 0])
        self.inertia_, self.cluster_centers_, labels = best
        return labels
