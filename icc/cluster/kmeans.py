"""k-means: in memory with faiss, or over Ray object-store blocks when the vectors do not fit one process.

Both fits start each of `n_init` runs from k-means++ (scikit-learn's) or random seeds drawn from a
sample of the rows, run Lloyd iterations on a larger sample first (`points_per_centroid` rows per
centroid, as faiss trains on 256 per centroid), then over all rows from the sample's centroids;
the run of lowest inertia wins. Lloyd on a sample or on all rows stops after `max_iter`
iterations or once an iteration lowers its inertia by at most `tol` of it.

In memory (`fit`): faiss.Kmeans, one run after another. Distributed (`fit_blocks`): the vectors
stay in blocks of the object store (a Ray Data dataset's blocks, see `icc.corpus.sharded`). One
task gathers the sample from the blocks; one task a run seeds and runs Lloyd on it, on the BLAS
and faiss threads of the CPUs it holds (the largest node's, shared among the runs); each
iteration over all rows maps every block to per-cluster sums and counts for all runs at once
(one task per block) and the driver adds them up and divides: the driver holds (n_init, k, d).
"""

import faiss
import numpy as np
import ray
import scipy.sparse
from sklearn.cluster import kmeans_plusplus

from icc.checks import check_int, check_non_negative, check_positive_int
from icc.cluster.base import KClusterer, check_k
from icc.errors import ICCError
from icc.ray_runtime import compute_threads

BACKENDS = ("auto", "faiss", "ray")
INITS = ("k-means++", "random")


class KMeans(KClusterer):
    """k-means on (n, d) float32 vectors.

    init: "k-means++" (scikit-learn's seeding) or "random" (k random points).
    n_init: runs with different seeds; the one with the lowest inertia wins.
    max_iter: Lloyd iterations per run at most (over Ray blocks, passes: the last measures the
        inertia of its centroids and keeps them, so a run moves them at most max_iter - 1 times);
        tol: a run stops once an iteration lowers its inertia by at most this fraction of it.
    backend: where a corpus pipeline fits: "faiss" (in one task's memory), "ray" (`fit_blocks`) or
        "auto": faiss when the fit sample's vectors take at most `memory_limit_mb`, else ray.
    init_sample: rows drawn for seeding (None: max(10000, 40 k)); k-means++ on all of a million
        rows would take longer than the Lloyd iterations, for an inertia within 0.1%.
    points_per_centroid: Lloyd runs first on a sample of this many rows per centroid (at least as
        many rows as the seeding sample), then over all rows from its centroids; 0, or a sample of
        all rows: all rows from the seeds. Default 256 (faiss's max_points_per_centroid).
    Other parameters: see `KClusterer` and `Clusterer`.
    After fit: also `inertia_` (sum of squared distances to the nearest centroid) and `n_iter_`
    (the Lloyd iterations over all rows the winning run took, after those on the sample: max_iter
    when it did not converge).
    """

    labels_are_nearest_centroid = True

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=10, max_iter=100, tol=1e-4, random_state=0,
                 backend="auto", memory_limit_mb=2048, init_sample=None, k_range=(2, 20), auto_sample=5000,
                 points_per_centroid=256, fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(n_clusters, k_range=k_range, auto_sample=auto_sample, random_state=random_state,
                         fit_fraction=fit_fraction, max_fit_rows=max_fit_rows, assign=assign, knn_k=knn_k)
        self.init, self.n_init, self.max_iter, self.tol = init, n_init, max_iter, tol
        self.backend, self.memory_limit_mb, self.init_sample = backend, memory_limit_mb, init_sample
        self.points_per_centroid = points_per_centroid

    def check_params(self) -> None:
        super().check_params()
        if self.backend not in BACKENDS:
            raise ICCError(f"unknown k-means backend '{self.backend}' (choose from {', '.join(BACKENDS)})")
        if self.init not in INITS:
            raise ICCError(f"unknown k-means init '{self.init}' (choose from {', '.join(INITS)})")
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.max_iter, "max_iter")
        check_non_negative(self.tol, "tol")
        check_non_negative(self.memory_limit_mb, "memory_limit_mb")
        check_positive_int(self.init_sample, "init_sample", allow_none=True)
        check_int(self.points_per_centroid, "points_per_centroid")

    def distributed(self, n_rows: int, dim: int) -> bool:
        """Whether a fit on n_rows vectors of dim floats runs over blocks (`fit_blocks`)."""
        return self.backend == "ray" or (self.backend == "auto" and n_rows * dim * 4 > self.memory_limit_mb * 2**20)

    def _seeds(self, X: np.ndarray, k: int, seed: int) -> np.ndarray:
        """(k, d) float32 seeds from the (m, d) sample X. k-means++ gets X in float64: given float32,
        scikit-learn upcasts chunks of X to float64 at every step, 2.5x slower (20k x 384, k = 500;
        `kmeans_plusplus_on_float32_seconds` in `benchmarks/profile_kmeans.py`)."""
        if self.init == "k-means++":
            return kmeans_plusplus(X.astype(np.float64), k, random_state=seed)[0].astype(np.float32)
        return X[np.random.default_rng(seed).choice(len(X), k, replace=False)]

    def seed_sample_size(self, n_rows: int, k: int) -> int:
        """Rows that k-means++ (or random) seeding draws its k seeds from, out of n_rows."""
        return min(n_rows, self.init_sample or max(10_000, 40 * k))

    def sample_size(self, n_rows: int, k: int) -> int:
        """Rows of the Lloyd sample for a fit on n_rows: points_per_centroid a centroid, at least the
        seeding sample's count; a fit with one smaller than all rows starts over all rows from Lloyd
        on it (`warm_starts`)."""
        return min(n_rows, max(self.seed_sample_size(n_rows, k), self.points_per_centroid * k))

    def warm_starts(self, n_rows: int, k: int) -> bool:
        """Whether a fit on n_rows runs Lloyd on a sample before the passes over all rows."""
        return self.points_per_centroid > 0 and self.sample_size(n_rows, k) < n_rows

    def _start(self, seed_sample: np.ndarray, sample: np.ndarray | None, k: int, seed: int) -> np.ndarray:
        """(k, d) float32 centroids that one run's Lloyd iterations over all rows start from: seeds
        drawn from the (s, d) `seed_sample` (`seed`), then Lloyd on the (m, d) `sample` unless None."""
        seeds = self._seeds(seed_sample, k, seed)
        return seeds if sample is None else _faiss_lloyd(sample, seeds, self.max_iter, self.tol).centroids

    def _sample_rows(self, n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The sorted row numbers of the seeding sample and of the Lloyd sample (None: no warm
        start), drawn the same way for both backends."""
        rng = np.random.default_rng(self.random_state)
        seed_rows = np.sort(rng.choice(n_rows, self.seed_sample_size(n_rows, k), replace=False))
        if not self.warm_starts(n_rows, k):
            return seed_rows, None
        return seed_rows, np.sort(rng.choice(n_rows, self.sample_size(n_rows, k), replace=False))

    def _fit(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        seed_rows, rows = self._sample_rows(len(X), k)
        seed_sample, sample = X[seed_rows], None if rows is None else X[rows]
        best = None
        for run in range(self.n_init):
            km = _faiss_lloyd(X, self._start(seed_sample, sample, k, self.random_state + run), self.max_iter, self.tol)
            squared, labels = km.index.search(X, 1)
            if best is None or squared.sum() < best[0]:
                best = (float(squared.sum()), len(km.iteration_stats), km.centroids.copy(), labels[:, 0])
        self.inertia_, self.n_iter_, centroids, labels = best
        return labels, centroids

    def fit_blocks(self, blocks: list, n_rows: int):
        """Fit on the vectors in `blocks` (ObjectRefs of (m_i, d) float32 arrays, n_rows in all).

        Sets `cluster_centers_` (k, d), `inertia_` (of the final centroids), `n_iter_`, `fit_rows_`
        (n_rows) and `n_features_in_` (d). `labels_` is None: the labels of every row would take
        (n_rows,) on the driver, which this fit exists to avoid; `predict` each block (as
        `icc.corpus.sharded.assign_shards` does each shard) for them.
        """
        self.check_params()
        if self.n_clusters == "auto" or self.assign == "knn":
            raise ICCError("k=auto and assign=knn need the fit sample in memory: set clusterer.backend=faiss or a "
                           "smaller clusterer.fit_fraction")
        k = check_k(self.n_clusters, n_rows)
        seed_sample, sample = _sample_blocks.remote(blocks, *self._sample_rows(n_rows, k))
        start_run = _start_run.options(num_cpus=_run_cpus(self.n_init))
        starts = [start_run.remote(self, seed_sample, sample, k, self.random_state + run) for run in range(self.n_init)]
        self.cluster_centers_, self.inertia_ = self._lloyd(np.stack(ray.get(starts)), blocks)
        self.labels_, self.k_scores_, self.sample_ = None, None, None
        self.fit_rows_, self.n_features_in_ = n_rows, self.cluster_centers_.shape[1]
        return self

    def _lloyd(self, centroids: np.ndarray, blocks: list) -> tuple[np.ndarray, float]:
        """Lloyd iterations over `blocks` of the runs started from the (runs, k, d) `centroids`; the
        runs still active share each pass. A run ends with the centroids of its last pass, whose
        inertia that pass measured (its means would need one more pass for theirs). Sets `n_iter_`
        (passes) and returns the winning run's (k, d) centroids and inertia."""
        centroids = np.array(centroids, dtype=np.float32)
        runs = len(centroids)
        n_iter = np.zeros(runs, dtype=np.int64)
        inertia = np.full(runs, np.nan)  # of `centroids`; none yet: no run stops after its first pass
        active = np.ones(runs, dtype=bool)
        for iteration in range(self.max_iter):
            sums, counts, measured = _block_sums(blocks, centroids[active])
            n_iter[active] += 1
            converged = inertia[active] - measured <= self.tol * inertia[active]
            converged |= iteration == self.max_iter - 1  # no pass left to measure the means
            inertia[active] = measured
            moving = np.flatnonzero(active)[~converged]
            means = sums[~converged] / np.maximum(counts[~converged], 1)[..., None]
            centroids[moving] = np.where(counts[~converged, :, None] > 0, means, centroids[moving])  # empty: stays
            active[np.flatnonzero(active)[converged]] = False
            if not active.any():
                break
        best = int(np.argmin(inertia))
        self.n_iter_ = int(n_iter[best])
        return centroids[best], float(inertia[best])


def _block_sums(blocks: list, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_partial_sums` over all blocks, added up as the block tasks finish."""
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
def _partial_sums(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each run's (k, d) centroids in the (runs, k, d) `centroids`: the sums (runs, k, d) float64
    and counts (runs, k) of the (n, d) points X nearest each centroid, and the inertia (runs,).
    Each block's sums are taken in float32 (relative error ~1e-6; float64 ones made scipy copy X
    to float64, which took twice as long as the nearest-centroid search at k = 100)."""
    runs, k, d = centroids.shape
    sums, counts, inertia = np.zeros((runs, k, d)), np.zeros((runs, k)), np.zeros(runs)
    if len(X) == 0:
        return sums, counts, inertia
    X = np.ascontiguousarray(X, dtype=np.float32)
    for r in range(runs):
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(centroids[r]))
        squared, nearest = index.search(X, 1)
        members = scipy.sparse.csr_matrix((np.ones(len(X), np.float32), (nearest[:, 0], np.arange(len(X)))),
                                          shape=(k, len(X)))
        sums[r] = members @ X
        counts[r] = np.bincount(nearest[:, 0], minlength=k)
        inertia[r] = float(np.maximum(squared, 0).sum())
    return sums, counts, inertia


def _faiss_lloyd(X: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float) -> faiss.Kmeans:
    """faiss.Kmeans trained on all of the (n, d) float32 X from the (k, d) `centroids`: at most
    max_iter iterations, stopping once one lowers the inertia by at most `tol` of it."""
    km = faiss.Kmeans(X.shape[1], len(centroids), niter=max_iter, early_stop_threshold=tol,
                      max_points_per_centroid=len(X), min_points_per_centroid=1)
    km.train(X, init_centroids=centroids)
    return km


@ray.remote(num_cpus=1, num_returns=2)
def _sample_blocks(blocks: list, *rows: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
    """For each sorted array of row numbers in `rows` (None: none), the (m, d) rows it names of
    the `blocks` taken in order as one array, as in memory `X[rows]` would be."""
    parts = [[] for _ in rows]
    offset = 0
    for block in blocks:
        X = ray.get(block)
        for part, wanted in zip(parts, rows):
            if wanted is not None:
                part.append(X[wanted[np.searchsorted(wanted, offset):np.searchsorted(wanted, offset + len(X))] - offset])
        offset += len(X)
        del X
    return tuple(None if wanted is None else np.concatenate(part) for part, wanted in zip(parts, rows))


def _run_cpus(n_init: int) -> int:
    """CPUs each of n_init seeding tasks asks for: the largest live node's shared among them, at
    least 1 (k-means++ on 40k x 384 rows for k = 1,000: 13-15 s on the one BLAS thread of a
    num_cpus=1 task, 7.7-7.9 s on 2; benchmarks/results/scale_kmeans.md, Round 4)."""
    node_cpus = max(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"])
    return max(1, int(node_cpus) // n_init)


@ray.remote
def _start_run(kmeans: KMeans, seed_sample: np.ndarray, sample: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    """`KMeans._start` of one run in a task: its (k, d) starting centroids, computed on as many BLAS
    and faiss threads as the task holds CPUs (`compute_threads`)."""
    with compute_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))):
        return kmeans._start(seed_sample, sample, k, seed)
