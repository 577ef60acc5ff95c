import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score, make_scorer
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from icc.cluster import CLUSTERERS, HDBSCAN, FuzzyCMeans, KMeans, make_clusterer, takes_k
from icc.cluster.kmeans import _run_cpus
from icc.errors import ICCError
from icc.metrics import cluster_accuracy

# Each clusterer as a scikit-learn user builds it, told k=4 where it takes one.
ESTIMATORS = {name: CLUSTERERS[name](n_clusters=4) if takes_k(name) else CLUSTERERS[name](min_cluster_size=20)
              for name in CLUSTERERS}


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=400, centers=4, n_features=16, cluster_std=1.0, random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_each_clusterer_recovers_separated_blobs(blobs, name):
    X, y = blobs
    clusterer = make_clusterer(name, k=4 if takes_k(name) else None, seed=0)
    labels = clusterer.fit_predict(X)
    assert labels.shape == (len(X),)
    assert cluster_accuracy(y, labels) > 0.95
    assert clusterer.cluster_centers_.shape == (4, X.shape[1])
    assert clusterer.n_features_in_ == X.shape[1] and clusterer.fit_rows_ == len(X)
    # New points go to the cluster of their nearest training neighbours.
    np.testing.assert_array_equal(clusterer.predict(X[:50] + 0.01), labels[:50])


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_each_clusterer_clones_with_its_parameters(blobs, name):
    estimator = clone(ESTIMATORS[name]).set_params(random_state=3, fit_fraction=0.5, assign="knn")
    copy = clone(estimator)
    assert copy is not estimator and copy.get_params() == estimator.get_params()
    assert copy.random_state == 3 and copy.assign == "knn"
    assert not hasattr(copy, "labels_")  # a constructor stores parameters, nothing else
    assert copy.fit(*blobs) is copy  # fit(X, y) returns self


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_each_clusterer_runs_in_a_pipeline(blobs, name):
    X, y = blobs
    pipeline = Pipeline([("scale", StandardScaler()), ("cluster", ESTIMATORS[name])])
    labels = pipeline.fit_predict(X)
    assert cluster_accuracy(y, labels) > 0.95
    np.testing.assert_array_equal(pipeline.predict(X[:50]), labels[:50])


@pytest.mark.parametrize("name", list(CLUSTERERS))
def test_grid_search_picks_the_true_number_of_clusters(blobs, name):
    X, y = blobs
    grid = {"n_clusters": [3, 4, 6]} if takes_k(name) else {"min_cluster_size": [20, 100]}
    search = GridSearchCV(ESTIMATORS[name], grid, scoring=make_scorer(adjusted_rand_score), cv=3).fit(X, y)
    assert search.best_params_ == ({"n_clusters": 4} if takes_k(name) else {"min_cluster_size": 20})
    assert search.best_score_ > 0.95


def test_kmeans_takes_scikit_learn_names(blobs):
    X, _ = blobs
    kmeans = KMeans(n_clusters=5, random_state=1, n_init=2, max_iter=50, tol=0, init="random").fit(X)
    assert kmeans.cluster_centers_.shape == (5, X.shape[1])
    assert set(kmeans.get_params()) >= {"n_clusters", "random_state", "n_init", "max_iter", "tol", "init",
                                        "k_range", "auto_sample", "fit_fraction", "max_fit_rows", "assign", "knn_k"}


def test_kmeans_matches_sklearn_inertia(blobs):
    from sklearn.cluster import KMeans as SKMeans

    X, _ = blobs
    ours = KMeans(n_clusters=4, n_init=3).fit(X)
    theirs = SKMeans(n_clusters=4, n_init=3, random_state=0).fit(X)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-3)


def test_n_iter_counts_the_iterations_run(blobs):
    easy = KMeans(n_clusters=4, n_init=1, max_iter=100).fit(blobs[0])
    hard_X = np.random.default_rng(0).normal(size=(2_000, 8)).astype(np.float32)
    hard = KMeans(n_clusters=20, n_init=1, max_iter=100, init="random").fit(hard_X)
    assert 1 <= easy.n_iter_ < hard.n_iter_ < 100
    assert KMeans(n_clusters=20, n_init=1, max_iter=3, init="random").fit(hard_X).n_iter_ == 3
    fuzzy = FuzzyCMeans(n_clusters=4, max_iter=300).fit(blobs[0])
    assert 1 <= fuzzy.n_iter_ < 300


def test_auto_k_picks_the_true_number_of_clusters(blobs):
    X, _ = blobs
    clusterer = KMeans(n_clusters="auto", k_range=(2, 8), n_init=2).fit(X)
    assert len(clusterer.cluster_centers_) == 4
    assert max(clusterer.k_scores_, key=clusterer.k_scores_.get) == 4
    assert clusterer.set_params(n_clusters=3).fit(X).k_scores_ is None  # nothing left of the auto fit


def test_fuzzy_memberships_are_distributions(blobs):
    X, y = blobs
    clusterer = FuzzyCMeans(n_clusters=4).fit(X)
    u = clusterer.membership(X)
    assert u.shape == (len(X), 4)
    np.testing.assert_allclose(u.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(u.argmax(axis=1), clusterer.labels_)


def test_hdbscan_marks_far_outliers_as_noise(blobs):
    X, _ = blobs
    X = np.vstack([X, np.full((1, X.shape[1]), 1e3, dtype=np.float32)])
    labels = HDBSCAN(min_cluster_size=20).fit_predict(X)
    assert labels[-1] == -1
    assert len(set(labels[:-1]) - {-1}) == 4


def test_hdbscan_reduce_outliers_moves_noise_to_the_nearest_centroid(blobs):
    X, _ = blobs
    far = np.full((3, X.shape[1]), 1e3, dtype=np.float32)
    X = np.vstack([X, far])
    plain = HDBSCAN(min_cluster_size=20, assign="knn").fit(X)
    reduced = HDBSCAN(min_cluster_size=20, assign="knn", reduce_outliers=True).fit(X)
    noise = plain.labels_ == -1
    assert noise[-3:].all() and reduced.outliers_reduced_ == noise.sum()
    np.testing.assert_array_equal(reduced.cluster_centers_, plain.cluster_centers_)  # centroids of the clusters found
    nearest = ((X[noise, None] - plain.cluster_centers_[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(reduced.labels_[noise], nearest)
    np.testing.assert_array_equal(reduced.labels_[~noise], plain.labels_[~noise])
    labels, distances = reduced.predict_with_distances(far)
    assert (labels >= 0).all()
    np.testing.assert_allclose(distances, np.linalg.norm(far - reduced.cluster_centers_[labels], axis=1), rtol=1e-4)
    with pytest.raises(ICCError, match="reduce_outliers must be true or false"):
        HDBSCAN(reduce_outliers="yes").fit(X)


def test_hdbscan_labels_everything_noise_when_it_finds_no_cluster():
    X = np.random.default_rng(0).uniform(size=(50, 16)).astype(np.float32)
    hdbscan = HDBSCAN(min_cluster_size=30)
    np.testing.assert_array_equal(hdbscan.fit_predict(X), -1)  # as scikit-learn's HDBSCAN: no error
    assert hdbscan.cluster_centers_.shape == (0, 16)
    np.testing.assert_array_equal(hdbscan.predict(X[:5]), -1)


def test_hdbscan_takes_no_number_of_clusters():
    with pytest.raises(TypeError, match="n_clusters"):
        HDBSCAN(n_clusters=3)
    with pytest.raises(ICCError, match="finds the number of clusters itself"):
        make_clusterer("hdbscan", k=3)
    assert "n_clusters" not in make_clusterer("hdbscan", k=None).get_params()  # its config: k: null


@pytest.mark.parametrize("k", [1, 0, 401, "many", 2.5, True, None])
def test_bad_k_is_a_clear_error(blobs, k):
    with pytest.raises(ICCError, match="k must be"):
        KMeans(n_clusters=k).fit(blobs[0])


def test_parameters_are_checked_in_fit_and_by_make_clusterer(blobs):
    kmeans = KMeans(n_init=0)  # a constructor only stores its parameters
    with pytest.raises(ICCError, match="n_init must be a positive integer"):
        kmeans.fit(blobs[0])
    with pytest.raises(ICCError, match="n_init must be a positive integer"):
        make_clusterer("kmeans", k=2, n_init=0)
    with pytest.raises(ICCError, match="m must be a number > 1"):
        make_clusterer("fuzzy_cmeans", m=1)
    assert make_clusterer("spectral", k=3, seed=7).get_params()["random_state"] == 7


def test_bad_vectors_and_names_are_clear_errors(blobs):
    with pytest.raises(ICCError, match="NaN or infinite"):
        KMeans(n_clusters=2).fit(np.array([[0.0], [np.nan], [1.0]]))
    with pytest.raises(ICCError, match="non-empty"):
        KMeans(n_clusters=2).fit(np.zeros((0, 3)))
    with pytest.raises(ICCError, match="unknown clusterer"):
        make_clusterer("dbscan")
    with pytest.raises(ICCError, match="bad parameters"):
        make_clusterer("kmeans", k=2, bandwidth=3)
    with pytest.raises(ICCError, match="X has 3 features, but the clusterer was fitted on 16"):
        KMeans(n_clusters=2).fit(blobs[0]).predict(np.zeros((2, 3)))


def test_the_clusterers_import_nothing_of_the_corpus_or_data_packages():
    code = "import sys, icc.cluster; print(sorted(m for m in sys.modules if m.startswith(('icc.corpus', 'icc.data'))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_kmeans_seeds_on_a_sample_and_stays_within_one_percent_of_seeding_on_all_rows():
    from sklearn.cluster import KMeans as SKMeans

    X, _ = make_blobs(n_samples=20_000, centers=30, n_features=16, cluster_std=1.0, random_state=1)
    X = X.astype(np.float32)
    sampled = KMeans(n_clusters=30, n_init=2, max_iter=30, init_sample=1_000)
    assert sampled.seed_sample_size(len(X), 30) == 1_000  # seeds from 1,000 of 20,000 rows
    assert KMeans().seed_sample_size(1_000_000, 1_000) == 40_000  # default: max(10000, 40 k)
    assert KMeans().seed_sample_size(5_000, 30) == 5_000
    seeds = sampled._seeds(X[:1_000], 30, 0)  # k-means++ runs on a float64 copy; the seeds are float32 rows
    assert seeds.dtype == np.float32 and len({tuple(row) for row in seeds} & {tuple(row) for row in X[:1_000]}) == 30
    sampled.fit(X)
    full = SKMeans(n_clusters=30, n_init=2, max_iter=30, random_state=0).fit(X)
    assert sampled.inertia_ <= full.inertia_ * 1.01
    assert sampled.inertia_ > 0


def test_kmeans_warm_starts_on_a_sample_and_needs_fewer_passes_over_all_rows_at_equal_inertia(ray_session):
    import ray
    from sklearn.cluster import KMeans as SKMeans

    rng = np.random.default_rng(0)  # 20 components in 16-d, unit-normalised like sentence embeddings
    X = (rng.normal(size=(20, 16))[rng.integers(0, 20, 30_000)] + 0.7 * rng.normal(size=(30_000, 16))).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    params = dict(n_clusters=20, n_init=1, init_sample=1_000)
    cold = KMeans(**params, points_per_centroid=0)
    warm = KMeans(**params, points_per_centroid=100)  # Lloyd on 2,000 rows first
    assert not cold.warm_starts(len(X), 20) and warm.warm_starts(len(X), 20)
    assert KMeans(**params).sample_size(len(X), 20) == 5_120  # default: 256 rows a centroid
    assert KMeans(n_clusters=20).warm_starts(len(X), 20)  # a Lloyd sample the size of the seeding one (10,000)
    cold.fit(X), warm.fit(X)
    seeds = cold._seeds(X[cold._sample_rows(len(X), 20)[0]], 20, 0)  # the seeds both fits start from
    theirs = SKMeans(n_clusters=20, init=seeds, n_init=1).fit(X)
    assert warm.inertia_ == pytest.approx(theirs.inertia_, rel=1e-3)
    assert cold.inertia_ == pytest.approx(theirs.inertia_, rel=1e-3)
    assert 1 <= warm.n_iter_ <= cold.n_iter_ / 2  # 3 passes over all rows against 8
    blocks = [ray.put(part) for part in np.array_split(X, 4)]
    over_blocks = KMeans(**params, points_per_centroid=100, backend="ray").fit_blocks(blocks, len(X))
    assert over_blocks.inertia_ == pytest.approx(warm.inertia_, rel=1e-4)  # the same samples, seeds and start
    assert over_blocks.n_iter_ <= warm.n_iter_ + 1
    with pytest.raises(ICCError, match="points_per_centroid must be a non-negative integer"):
        KMeans(points_per_centroid=-1).fit(X)


def test_fit_blocks_fits_the_centroids_and_leaves_the_labels_to_predict(ray_session, blobs):
    import ray

    X, y = blobs
    blocks = [ray.put(part) for part in np.array_split(X, 4)]
    kmeans = KMeans(n_clusters=4, n_init=2, backend="ray").fit_blocks(blocks, len(X))
    assert kmeans.labels_ is None  # (n,) labels would be on the driver: predict the blocks instead
    assert kmeans.fit_rows_ == len(X) and kmeans.n_features_in_ == X.shape[1]
    assert 1 <= kmeans.n_iter_ < kmeans.max_iter
    assert cluster_accuracy(y, kmeans.predict(X)) > 0.95
    assert kmeans.inertia_ == pytest.approx(KMeans(n_clusters=4, n_init=2).fit(X).inertia_, rel=1e-4)
    assert _run_cpus(1) == 2 and _run_cpus(2) == _run_cpus(3) == 1  # seeding tasks share the node's 2 CPUs
    with pytest.raises(ICCError, match="need the fit sample in memory"):
        KMeans(n_clusters=4, assign="knn").fit_blocks(blocks, len(X))
