import itertools

import numpy as np
from sklearn import metrics as skm

from icc.metrics import cluster_accuracy, external_metrics


def brute_force_accuracy(y_true, y_pred) -> float:
    """Best one-to-one mapping of clusters (not -1) to classes, over all permutations."""
    clusters = sorted(set(y_pred) - {-1})
    classes = sorted(set(y_true))
    # None = the cluster stays unmatched; needed only when clusters outnumber classes.
    targets = classes + [None] * max(0, len(clusters) - len(classes))
    best = 0
    for assignment in itertools.permutations(targets, len(clusters)):
        mapping = dict(zip(clusters, assignment))
        best = max(best, sum(mapping.get(p) == t for t, p in zip(y_true, y_pred) if p != -1))
    return best / len(y_true)


def random_cases(n_cases=300, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n = int(rng.integers(1, 20))
        y_true = rng.integers(0, rng.integers(1, 6), size=n)
        y_pred = rng.integers(-1, rng.integers(1, 6), size=n)  # -1 = rejected
        yield y_true, y_pred


def test_cluster_accuracy_matches_brute_force():
    for y_true, y_pred in random_cases():
        expected = brute_force_accuracy(y_true.tolist(), y_pred.tolist())
        assert np.isclose(cluster_accuracy(y_true, y_pred), expected)


def test_cluster_accuracy_edge_cases():
    assert cluster_accuracy([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert cluster_accuracy([0, 0, 1, 1], [-1, -1, -1, -1]) == 0.0
    assert cluster_accuracy([0, 0, 0, 0], [0, 1, 2, 3]) == 0.25  # more clusters than classes
    assert cluster_accuracy(["a", "a", "b"], [5, 5, 7]) == 1.0
    assert np.isnan(cluster_accuracy([], []))


def test_external_metrics_agree_with_sklearn():
    for y_true, y_pred in random_cases(100, seed=1):
        m = external_metrics(y_true, y_pred)
        assert np.isclose(m["acc"], cluster_accuracy(y_true, y_pred))
        assert np.isclose(m["ari"], skm.adjusted_rand_score(y_true, y_pred))
        assert np.isclose(m["nmi"], skm.normalized_mutual_info_score(y_true, y_pred))
        assert np.isclose(m["v_measure"], skm.v_measure_score(y_true, y_pred))
        assert np.isclose(m["homogeneity"], skm.homogeneity_score(y_true, y_pred))


def test_external_metrics_string_classes():
    m = external_metrics(["x", "x", "y", "y"], [1, 1, 0, 0])
    assert m["acc"] == m["ari"] == m["nmi"] == m["f1_weighted"] == 1.0
