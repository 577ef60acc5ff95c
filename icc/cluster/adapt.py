"""Corpus-adapted k-means (`quality=best`): the vectors are adapted to the corpus, without labels, around k-means.

Two steps, measured with each alone on every labelled text set (`benchmarks/results/quality_mode.md`):

1. Neighbourhood smoothing: each unit vector is mixed with the mean of its `neighbors` nearest
   vectors (in the corpus itself) by `mix`, and renormalised, `rounds` times. This is a few
   steps of diffusion on the corpus's kNN graph: texts of one topic pull together, outliers follow
   their neighbours, and k-means on the smoothed vectors separates groups that overlap in the raw
   embedding space.
2. Self-training: k-means (`n_init` runs) on the smoothed vectors; a multinomial logistic regression
   is trained on the `confident` fraction of each cluster's members nearest their own centroid
   relative to the next (the largest margins), and relabels every row; up to `self_rounds` times.
   A round is kept only if it does not lower the silhouette of the smoothed vectors (on at most
   `auto_sample` rows): with many small clusters (Banking77: 77 of about 40 texts) the classifier
   learns from too few points per class and this label-free check refuses it.

Labels never enter: the fit sees only the vectors. Memory and time grow with n (an exact kNN search
over the fit rows): fit on a sample beyond `max_fit_rows` and assign the rest by a vote of their
nearest sample rows (`assign="knn"`, the config's default), in the original embedding space.
"""

import faiss
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score

from icc.checks import check_int, check_non_negative, check_positive, check_positive_int
from icc.cluster.base import KClusterer
from icc.cluster.kmeans import KMeans
from icc.errors import ICCError


class AdaptedKMeans(KClusterer):
    """k-means on kNN-smoothed vectors, refined by a linear classifier self-trained on its confident points.

    neighbors: nearest vectors (the row itself excluded) averaged per row; mix: the weight of their
        mean against the row, in [0, 1); rounds: smoothing steps (0: none).
    n_init: k-means runs on the smoothed vectors, the one of lowest inertia wins.
    confident: share of each cluster's rows, those of largest margin, that the classifier learns
        from, in (0, 1]; self_rounds: classifier rounds (0: k-means alone); C: its inverse L2 strength.
    Other parameters: see `KClusterer` and `Clusterer`. Centers are the clusters' means of the
    original (unsmoothed) vectors, so that `predict` works on raw embeddings.
    After fit: also `adapt_`: {"kmeans_inertia", "silhouettes" (of k-means, then of each self-training
    round tried), "self_rounds_kept", "relabelled" (share of rows the kept rounds moved)}.
    """

    def __init__(self, n_clusters=8, *, neighbors=10, mix=0.5, rounds=2, n_init=10, confident=0.5, self_rounds=2,
                 C=1.0, random_state=0, k_range=(2, 20), auto_sample=5000, fit_fraction=1.0, max_fit_rows=None,
                 assign="centroid", knn_k=10):
        super().__init__(n_clusters, k_range=k_range, auto_sample=auto_sample, random_state=random_state,
                         fit_fraction=fit_fraction, max_fit_rows=max_fit_rows, assign=assign, knn_k=knn_k)
        self.neighbors, self.mix, self.rounds, self.n_init = neighbors, mix, rounds, n_init
        self.confident, self.self_rounds, self.C = confident, self_rounds, C

    def check_params(self) -> None:
        super().check_params()
        check_positive_int(self.neighbors, "neighbors")
        check_positive_int(self.n_init, "n_init")
        check_int(self.rounds, "rounds")
        check_int(self.self_rounds, "self_rounds")
        check_positive(self.C, "C")
        check_non_negative(self.mix, "mix")
        check_positive(self.confident, "confident")
        if self.mix >= 1 or self.confident > 1:
            raise ICCError(f"mix must be in [0, 1) and confident in (0, 1], got {self.mix!r} and {self.confident!r}")

    def _fit(self, X: np.ndarray, k: int) -> tuple[np.ndarray, None]:
        smoothed = smooth(X, self.neighbors, self.mix, self.rounds)
        kmeans = KMeans(k, n_init=self.n_init, random_state=self.random_state).fit(smoothed)
        rng = np.random.default_rng(self.random_state)
        sample = rng.choice(len(X), min(len(X), self.auto_sample), replace=False)
        labels = kmeans.labels_
        silhouettes, kept = [_silhouette(smoothed[sample], labels[sample])], 0
        for _ in range(self.self_rounds):
            trained = self_train(smoothed, labels, self.confident, self.C, self.random_state)
            if np.array_equal(trained, labels):
                break
            silhouettes.append(_silhouette(smoothed[sample], trained[sample]))
            if silhouettes[-1] < silhouettes[-2]:
                break
            labels, kept = trained, kept + 1
        self.adapt_ = {"kmeans_inertia": float(kmeans.inertia_), "silhouettes": silhouettes, "self_rounds_kept": kept,
                       "relabelled": float(np.mean(labels != kmeans.labels_))}
        return labels, None


def _silhouette(X: np.ndarray, labels: np.ndarray) -> float:
    return float(silhouette_score(X, labels)) if 1 < len(np.unique(labels)) < len(X) else -1.0


def smooth(X: np.ndarray, neighbors: int, mix: float, rounds: int) -> np.ndarray:
    """The (n, d) float32 points X after `rounds` steps of x <- (1 - mix) x + mix * the mean of its
    `neighbors` nearest rows (Euclidean: by cosine for unit vectors; itself excluded; searched once,
    on X), each row rescaled to its original norm (unit vectors stay unit vectors). Fewer neighbours
    when n is small."""
    neighbors = min(neighbors, len(X) - 1)
    if rounds == 0 or neighbors < 1 or mix == 0:
        return X
    index = faiss.IndexFlatL2(X.shape[1])
    index.add(X)
    nearest = index.search(X, neighbors + 1)[1][:, 1:]  # (n, neighbors): a row's own index comes first
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    for _ in range(rounds):
        X = (1 - mix) * X + mix * X[nearest].mean(axis=1)
        X = np.ascontiguousarray(X * norms / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12),
                                 dtype=np.float32)
    return X


def self_train(X: np.ndarray, labels: np.ndarray, confident: float, C: float, seed: int) -> np.ndarray:
    """(n,) new labels of the (n, d) points X: a logistic regression learns `labels` from the
    `confident` share of each cluster's rows with the largest margin (distance to the second nearest
    cluster mean less that to their own), at least 2 per cluster, then labels every row. Clusters
    the classifier empties stay empty: labels are renumbered 0..k'-1."""
    k = int(labels.max()) + 1
    centers = np.stack([X[labels == c].mean(0) for c in range(k)])
    squared = ((X ** 2).sum(1)[:, None] - 2 * X @ centers.T + (centers ** 2).sum(1)[None])  # (n, k)
    own = squared[np.arange(len(X)), labels]
    squared[np.arange(len(X)), labels] = np.inf
    margin = squared.min(1) - own
    keep = np.zeros(len(X), dtype=bool)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        keep[members[np.argsort(-margin[members])[:max(2, int(len(members) * confident))]]] = True
    if len(np.unique(labels[keep])) < 2:
        return labels
    classifier = LogisticRegression(C=C, max_iter=300, random_state=seed).fit(X[keep], labels[keep])
    predicted = classifier.classes_[classifier.predict_proba(X).argmax(1)]
    return np.unique(predicted, return_inverse=True)[1].astype(np.int64)
