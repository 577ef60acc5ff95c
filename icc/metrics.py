"""Clustering quality: external metrics against labels, internal metrics on the vectors.

External metrics match predicted clusters to classes with the Hungarian algorithm
(`scipy.optimize.linear_sum_assignment` on the contingency matrix). Predicted label -1
(rejected or noise) is its own cluster that never matches a class, so it counts as an error.
"""

import numpy as np
import sklearn
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm


def _encode(labels) -> np.ndarray:
    """Map arbitrary hashable labels to 0..C-1, shape (n,)."""
    return np.unique(np.asarray(labels), return_inverse=True)[1].ravel()


def match_clusters(y_true, y_pred) -> dict:
    """Hungarian matching of predicted clusters to true classes.

    Returns {predicted label: true label} for the matched pairs; unmatched clusters (more
    clusters than classes) and the reject label -1 are absent.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, p = np.unique(y_pred, return_inverse=True)
    contingency = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(contingency, (p.ravel(), t.ravel()), 1)
    contingency[clusters == -1] = 0
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    return {clusters[r]: classes[c] for r, c in zip(rows, cols) if clusters[r] != -1}


def cluster_accuracy(y_true, y_pred) -> float:
    """Fraction of points whose cluster is matched to their class (ACC), in [0, 1]."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        return float("nan")
    mapping = match_clusters(y_true, y_pred)
    hits = sum(int(np.sum((y_pred == c) & (y_true == cls))) for c, cls in mapping.items())
    return hits / len(y_true)


def external_metrics(y_true, y_pred) -> dict:
    """ACC, ARI, NMI, V-measure, homogeneity and weighted F1 (after matching), floats."""
    y_true_codes, y_pred_codes = _encode(y_true), np.asarray(y_pred)
    mapping = match_clusters(y_true_codes, y_pred_codes)
    matched = np.array([mapping.get(c, -1) for c in y_pred_codes])
    return {
        "acc": cluster_accuracy(y_true_codes, y_pred_codes),
        "ari": float(skm.adjusted_rand_score(y_true_codes, y_pred_codes)),
        "nmi": float(skm.normalized_mutual_info_score(y_true_codes, y_pred_codes)),
        "v_measure": float(skm.v_measure_score(y_true_codes, y_pred_codes)),
        "homogeneity": float(skm.homogeneity_score(y_true_codes, y_pred_codes)),
        "f1_weighted": float(
            skm.f1_score(y_true_codes, matched, average="weighted", labels=np.unique(y_true_codes))
        ),
    }


def internal_metrics(X: np.ndarray, y_pred, sample_size: int = 10_000, seed: int = 0) -> dict:
    """Silhouette (on a sample of at most `sample_size` points) and Calinski-Harabasz.

    X: (n, d) vectors; rows with label -1 are left out. NaN when fewer than 2 clusters remain.
    """
    y_pred = np.asarray(y_pred)
    keep = y_pred != -1
    X, y_pred = X[keep], y_pred[keep]
    n_clusters = len(np.unique(y_pred))
    if n_clusters < 2 or n_clusters >= len(y_pred):
        return {"silhouette": float("nan"), "calinski_harabasz": float("nan")}
    sample = min(sample_size, len(y_pred))
    # Distances in chunks of at most 128 MB: at scikit-learn's default (1 GB) the silhouette of
    # 10,000 points adds half a GB to the driver's peak memory.
    with sklearn.config_context(working_memory=128):
        silhouette = float(skm.silhouette_score(X, y_pred, sample_size=sample, random_state=seed))
    return {
        "silhouette": silhouette,
        "calinski_harabasz": float(skm.calinski_harabasz_score(X, y_pred)),
    }
