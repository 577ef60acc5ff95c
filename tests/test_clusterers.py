import numpy as np
import pytest
from sklearn.datasets import make_blobs

from icc.cluster import CLUSTERERS, HDBSCAN, FuzzyCMeans, KMeans, make_clusterer
from icc.errors import ICCError
from icc.metrics import cluster_accuracy


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=400, centers=4, n_features=16, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_each_clusterer_recovers_separated_blobs(blobs, name):
    X, y = blobs
    clusterer = make_clusterer(name, k=4, seed=0)
    labels = clusterer.fit_predict(X)
    assert labels.shape == (len(X),)
    assert cluster_accuracy(y, labels) > 0.95
    assert clusterer.cluster_centers_.shape == (4, X.shape[1])
    # New points go to the cluster of their nearest training neighbours.
    np.testing.assert_array_equal(clusterer.predict(X[:50] + 0.01), labels[:50])


def test_kmeans_matches_sklearn_inertia(blobs):
    from sklearn.cluster import KMeans as SKMeans

    X, _ = blobs
    ours = KMeans(k=4, n_init=3).fit(X)
    theirs = SKMeans(n_clusters=4, n_init=3, random_state=0).fit(X)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-3)


def test_auto_k_picks_the_true_number_of_clusters(blobs):
    X, _ = blobs
    clusterer = KMeans(k="auto", k_range=(2, 8), n_init=2).fit(X)
    assert len(clusterer.cluster_centers_) == 4
    assert max(clusterer.k_scores_, key=clusterer.k_scores_.get) == 4


def test_fuzzy_memberships_are_distributions(blobs):
    X, y = blobs
    clusterer = FuzzyCMeans(k=4).fit(X)
    u = clusterer.membership(X)
    assert u.shape == (len(X), 4)
    np.testing.assert_allclose(u.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(u.argmax(axis=1), clusterer.labels_)


def test_hdbscan_marks_far_outliers_as_noise(blobs):
    X, _ = blobs
    X = np.vstack([X, np.full((1, X.shape[1]), 1e3, dtype=np.float32)])
    labels = HDBSCAN(min_cluster_size=20, k=99).fit_predict(X)
    assert labels[-1] == -1
    assert len(set(labels[:-1]) - {-1}) == 4


@pytest.mark.parametrize("k", [1, 0, 401, "many", 2.5, True])
def test_bad_k_is_a_clear_error(blobs, k):
    with pytest.raises(ICCError, match="k must be"):
        KMeans(k=k).fit(blobs[0])


def test_bad_vectors_and_names_are_clear_errors():
    with pytest.raises(ICCError, match="NaN or infinite"):
        KMeans(k=2).fit(np.array([[0.0], [np.nan], [1.0]]))
    with pytest.raises(ICCError, match="non-empty"):
        KMeans(k=2).fit(np.zeros((0, 3)))
    with pytest.raises(ICCError, match="unknown clusterer"):
        make_clusterer("dbscan")
    with pytest.raises(ICCError, match="bad parameters"):
        make_clusterer("kmeans", k=2, bandwidth=3)


def test_kmeans_seeds_on_a_sample_and_stays_within_one_percent_of_seeding_on_all_rows():
    from sklearn.cluster import KMeans as SKMeans

    X, _ = make_blobs(n_samples=20_000, centers=30, n_features=16, cluster_std=1.0, random_state=1)
    X = X.astype(np.float32)
    sampled = KMeans(k=30, n_init=2, max_iter=30, init_sample=1_000)
    assert sampled.seed_sample_size(len(X), 30) == 1_000  # seeds from 1,000 of 20,000 rows
    assert KMeans().seed_sample_size(1_000_000, 1_000) == 40_000  # default: max(10000, 40 k)
    assert KMeans().seed_sample_size(5_000, 30) == 5_000
    sampled.fit(X)
    full = SKMeans(n_clusters=30, n_init=2, max_iter=30, random_state=0).fit(X)
    assert sampled.inertia_ <= full.inertia_ * 1.01
    assert sampled.inertia_ > 0
