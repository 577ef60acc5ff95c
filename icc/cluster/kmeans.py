"""k-means: in memory with faiss, or over Ray object-store blocks when the vectors do not fit one process.

In memory (`fit`): faiss Lloyd iterations over all rows from k-means++ (scikit-learn's) or random
seeds drawn from a sample of the rows, best of `n_init` runs by inertia.

Distributed (`fit_blocks`): the vectors stay in blocks of the object store (a Ray Data dataset's
blocks, see `icc.cluster.sharded`). Seeding runs k-means++ on a sample of the blocks in one task;
each Lloyd iteration maps every block to per-cluster sums and counts for all `n_init` runs at once
(one task per block) and the driver adds them up and divides: the driver holds (n_init, k, d).
"""

import os

import faiss
import numpy as np
import ray
import scipy.sparse
from sklearn.cluster import kmeans_plusplus

from icc.cluster.base import Clusterer, check_k
from icc.errors import ICCError

BACKENDS = ("auto", "faiss", "ray")


class KMeans(Clusterer):
    """k-means on (n, d) float32 vectors.

    init: "k-means++" (scikit-learn's seeding) or "random" (k random points).
    n_init: runs with different seeds; the one with the lowest inertia wins.
    max_iter: Lloyd iterations per run; tol: the distributed runs stop early once no run's inertia
        fell by more than this fraction in an iteration.
    backend: where a corpus pipeline fits: "faiss" (in one task's memory), "ray" (`fit_blocks`) or
        "auto": faiss when the fit sample's vectors take at most `memory_limit_mb`, else ray.
    init_sample: rows drawn for seeding (None: max(10000, 40 k)); k-means++ on all of a million
        rows would take longer than the Lloyd iterations, for an inertia within 0.1%.
    After fit: `inertia_` (sum of squared distances to the nearest centroid), `n_iter_`.
    """

    labels_are_nearest_centroid = True

    def __init__(self, k=8, n_init: int = 10, max_iter: int = 100, init: str = "k-means++", seed: int = 0,
                 backend: str = "auto", memory_limit_mb: float = 2048, tol: float = 1e-4,
                 init_sample: int | None = None, **kwargs):
        super().__init__(k=k, seed=seed, **kwargs)
        if backend not in BACKENDS:
            raise ICCError(f"unknown k-means backend '{backend}' (choose from {', '.join(BACKENDS)})")
        self.n_init = n_init
        self.max_iter = max_iter
        self.init = init
        self.backend = backend
        self.memory_limit_mb = memory_limit_mb
        self.tol = tol
        self.init_sample = init_sample

    def distributed(self, n_rows: int, dim: int) -> bool:
        """Whether a fit on n_rows vectors of dim floats runs over blocks (`fit_blocks`)."""
        return self.backend == "ray" or (self.backend == "auto" and n_rows * dim * 4 > self.memory_limit_mb * 2**20)

    def _seeds(self, X: np.ndarray, k: int, seed: int) -> np.ndarray:
        if self.init == "k-means++":
            return kmeans_plusplus(X, k, random_state=seed)[0]
        return X[np.random.default_rng(seed).choice(len(X), k, replace=False)]

    def seed_sample_size(self, n_rows: int, k: int) -> int:
        """Rows that k-means++ (or random) seeding draws its k seeds from, out of n_rows."""
        return min(n_rows, self.init_sample or max(10_000, 40 * k))

    def _fit(self, X: np.ndarray, k: int) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        sample = X[np.sort(rng.choice(len(X), self.seed_sample_size(len(X), k), replace=False))]
        best = None
        for run in range(self.n_init):
            seed = self.seed + run
            km = faiss.Kmeans(
                X.shape[1], k, niter=self.max_iter, seed=seed, verbose=False,
                max_points_per_centroid=len(X), min_points_per_centroid=1,
            )
            km.train(X, init_centroids=self._seeds(sample, k, seed))
            squared, labels = km.index.search(X, 1)
            inertia = float(squared.sum())
            if best is None or inertia < best[0]:
                best = (inertia, km.centroids.copy(), labels[:, 0])
        self.inertia_, self.cluster_centers_, labels = best
        self.n_iter_ = self.max_iter
        return labels

    def fit_blocks(self, blocks: list, n_rows: int):
        """Fit on the vectors in `blocks` (ObjectRefs of (m_i, d) float32 arrays, n_rows in all).

        Sets `cluster_centers_`, `inertia_` (of the final centroids), `n_iter_`, `fit_rows_`.
        """
        if self.k == "auto":
            raise ICCError("k=auto needs the fit sample in memory: set clusterer.backend=faiss or a smaller "
                           "clusterer.fit_fraction")
        k = check_k(self.k, n_rows)
        fraction = self.seed_sample_size(n_rows, k) / n_rows
        seeds = ray.get(_seed_runs.remote(blocks, fraction, k, self.n_init, self.seed, self))
        centroids = np.stack(seeds)  # (runs, k, d)
        previous = None
        self.n_iter_ = 0
        for _ in range(self.max_iter):
            sums, counts, inertia = _block_sums(blocks, centroids)
            self.n_iter_ += 1
            nonempty = counts > 0
            centroids = np.where(nonempty[..., None], sums / np.maximum(counts, 1)[..., None], centroids)
            centroids = centroids.astype(np.float32)
            if previous is not None and np.all(previous - inertia <= self.tol * previous):
                break
            previous = inertia
        _, _, inertia = _block_sums(blocks, centroids)
        best = int(np.argmin(inertia))
        self.cluster_centers_, self.inertia_ = centroids[best], float(inertia[best])
        self.fit_rows_ = n_rows
        self.labels_ = None
        return self


def _block_sums(blocks: list, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-run cluster sums (runs, k, d) float64, counts (runs, k) and inertia (runs,) over all
    blocks, added up as the block tasks finish."""
    centroids_ref = ray.put(centroids)
    pending = [_partial_sums.remote(block, centroids_ref) for block in blocks]
    runs, k, d = centroids.shape
    sums, counts, inertia = np.zeros((runs, k, d)), np.zeros((runs, k)), np.zeros(runs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        s, c, i = ray.get(done[0])
        sums += s
        counts += c
        inertia += i
    return sums, counts, inertia


@ray.remote(num_cpus=1)
def _partial_sums(X: np.ndarray, centroids: np.ndarray):
    """One block's share of `_block_sums`."""
    runs, k, d = centroids.shape
    sums, counts, inertia = np.zeros((runs, k, d)), np.zeros((runs, k)), np.zeros(runs)
    if len(X) == 0:
        return sums, counts, inertia
    X = np.ascontiguousarray(X, dtype=np.float32)
    for r in range(runs):
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(centroids[r]))
        squared, nearest = index.search(X, 1)
        members = scipy.sparse.csr_matrix((np.ones(len(X)), (nearest[:, 0], np.arange(len(X)))), shape=(k, len(X)))
        sums[r] = members @ X
        counts[r] = np.bincount(nearest[:, 0], minlength=k)
        inertia[r] = float(np.maximum(squared, 0).sum())
    return sums, counts, inertia


@ray.remote(num_cpus=1)
def _seed_runs(blocks: list, fraction: float, k: int, runs: int, seed: int, kmeans: KMeans) -> list[np.ndarray]:
    """k-means++ (or random) seeds for each run, from a `fraction` sample of every block."""
    faiss.omp_set_num_threads(os.cpu_count())
    rng = np.random.default_rng(seed)
    parts = []
    for block in blocks:
        X = ray.get(block)
        parts.append(X[rng.random(len(X)) < fraction])
        del X
    sample = np.concatenate(parts)
    if len(sample) < k:  # a tiny sample of a large corpus: take whole blocks instead
        sample = np.concatenate([ray.get(b) for b in blocks])
    return [kmeans._seeds(sample, k, seed + run) for run in range(runs)]

