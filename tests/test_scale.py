"""Scale: the corpus in Parquet shards, distributed k-means over Ray blocks against faiss and scikit-learn,
fitting on a sample and assigning the rest, and `icc cluster` end to end on the sharded layout."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TEXT, run_icc
from sklearn.datasets import make_blobs

from icc.cluster import HDBSCAN, KMeans, Spectral
from icc.corpus.rundir import load_run
from icc.corpus.sharded import assign_shards, fit_shards
from icc.corpus.shards import Shards, sample_mask
from icc.data.parquet import read_output, take_texts, vector_array
from icc.errors import ICCError
from icc.metrics import cluster_accuracy


def write_shards(out, X: np.ndarray, per_shard: int, labels=None) -> Shards:
    """X as the embed stage writes it: texts and embeddings shards of `per_shard` rows, and embed.json."""
    (out / "texts.parquet").mkdir(parents=True)
    (out / "embeddings.parquet").mkdir()
    shards = Shards(dir=out, dim=X.shape[1], has_labels=labels is not None)
    for i, start in enumerate(range(0, len(X), per_shard)):
        ids = np.arange(start, min(start + per_shard, len(X)))
        texts = {"id": ids, "text": [f"text {j}" for j in ids], "reject": [""] * len(ids)}
        if labels is not None:
            texts["label"] = pa.array([str(labels[j]) for j in ids], pa.string())
        pq.write_table(pa.table(texts), shards.texts(i))
        pq.write_table(pa.table({"id": ids, "vector": vector_array(X[ids])}), shards.embeddings(i))
        shards.rows.append(len(ids))
        shards.embedded.append(len(ids))
    shards.save()
    return shards


@pytest.fixture(scope="module")
def mixture():
    """20,000 points of a 32-d Gaussian mixture of 25 components."""
    X, y = make_blobs(n_samples=20_000, centers=25, n_features=32, cluster_std=1.5, random_state=3)
    return X.astype(np.float32), y


def test_distributed_kmeans_inertia_is_within_one_percent_of_faiss_and_sklearn(ray_session, mixture, tmp_path):
    from sklearn.cluster import KMeans as SKMeans

    X, _ = mixture
    shards = write_shards(tmp_path, X, per_shard=2_500)  # 8 shards, 8 blocks
    ours = KMeans(n_clusters=25, n_init=3, max_iter=100, backend="ray", random_state=0)
    fitted = fit_shards(ours, shards)
    assert fitted.distributed and ours.fit_rows_ == len(X) and ours.n_iter_ > 1
    faiss_inertia = KMeans(n_clusters=25, n_init=3, max_iter=100, random_state=0).fit(X).inertia_
    sklearn_inertia = SKMeans(n_clusters=25, n_init=3, max_iter=100, random_state=0).fit(X).inertia_
    assert ours.inertia_ <= 1.01 * min(faiss_inertia, sklearn_inertia)
    # The inertia reported is that of the final centroids over all rows.
    assert ours.inertia_ == pytest.approx(((X - ours.cluster_centers_[ours.predict(X)]) ** 2).sum(), rel=1e-4)


def test_fit_fraction_fits_on_a_sample_and_assigns_every_shard(ray_session, mixture, tmp_path):
    X, y = mixture
    shards = write_shards(tmp_path, X, per_shard=3_000, labels=y)
    full = KMeans(n_clusters=25, n_init=1, random_state=0).fit(X)
    fitted = fit_shards(KMeans(n_clusters=25, n_init=1, random_state=0, fit_fraction=0.2), shards)
    sampled = fitted.clusterer  # fitted in a Ray task
    assert not fitted.distributed and 0.17 * len(X) < sampled.fit_rows_ < 0.23 * len(X)
    assert sampled.labels_ is None  # nothing per row comes back to the driver
    assigned = assign_shards(fitted, shards, top=3, metrics_rows=1_000)
    clusters = read_output(tmp_path / "assignments.parquet")
    assert clusters["id"].to_pylist() == list(range(len(X)))
    labels = clusters["cluster"].to_numpy()
    np.testing.assert_array_equal(labels, sampled.predict(X))
    np.testing.assert_array_equal(assigned.sizes, np.bincount(labels, minlength=25))
    inertia = (clusters["distance"].to_numpy().astype(np.float64) ** 2).sum()
    assert inertia <= 1.01 * full.inertia_
    # The members nearest each centroid, over all shards.
    for c in (0, 7):
        members = np.flatnonzero(labels == c)
        expected = members[np.argsort(clusters["distance"].to_numpy()[members], kind="stable")[:3]]
        np.testing.assert_array_equal(assigned.central[c], expected)
    assert sum(assigned.contingency.values()) == len(X)
    assert 700 < len(assigned.sample_clusters) < 1_300
    assert take_texts(tmp_path / "texts.parquet", [19_999, 0, 6_001]) == ["text 19999", "text 0", "text 6001"]


def test_sample_fit_keeps_fitted_labels_and_votes_for_the_rest():
    X, y = make_blobs(n_samples=3_000, centers=4, n_features=16, cluster_std=1.0, random_state=0)
    X = X.astype(np.float32)
    spectral = Spectral(n_clusters=4, max_fit_rows=600, assign="knn", random_state=0).fit(X)
    assert 500 < spectral.fit_rows_ < 700 and len(spectral.labels_) == len(X)
    assert cluster_accuracy(y, spectral.labels_) > 0.98
    sampled = sample_mask(len(X), 0.5, 0, 0)
    outlier = np.flatnonzero(sampled)[0]
    X[outlier] = 1e3
    hdbscan = HDBSCAN(min_cluster_size=20, fit_fraction=0.5, assign="knn").fit(X)
    assert hdbscan.fit_rows_ == sampled.sum()
    assert hdbscan.labels_[outlier] == -1  # the fitted label of a sample row stays
    np.testing.assert_array_equal(hdbscan.labels_[sampled], hdbscan.sample_[1])
    assert len(set(hdbscan.labels_) - {-1}) == 4
    assert cluster_accuracy(y[~sampled], hdbscan.labels_[~sampled]) > 0.9  # voted by the sample neighbours


@pytest.mark.parametrize("kwargs, message", [
    ({"fit_fraction": 0}, "fit_fraction must be in"),
    ({"max_fit_rows": 1}, "max_fit_rows must be"),
    ({"assign": "vote"}, "unknown assign"),
    ({"backend": "spark"}, "unknown k-means backend"),
])
def test_bad_scale_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ICCError, match=message):
        KMeans(n_clusters=2, **kwargs).fit(np.zeros((4, 2)))


def test_cluster_streams_into_shards_with_distributed_kmeans(ray_address, tmp_path):
    out = tmp_path / "run"
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file",
                     f"data.path={TEXT / 'cstr.csv'}", "data.label_column=label", "clusterer.k=4",
                     "clusterer.backend=ray", "clusterer.n_init=3", "output.shard_rows=64", "embedder.pool.rows_per_batch=32",
                     "labeler=none", "report.enabled=false", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    shards = Shards.load(out)
    assert len(shards.rows) > 1 and shards.n_rows == 299
    for name in ("texts", "embeddings", "assignments"):
        assert len(list((out / f"{name}.parquet").glob("part-*.parquet"))) == len(shards.rows)
    assignments = pq.read_table(out / "assignments.parquet")  # a directory reads as one table
    assert assignments["id"].to_pylist() == list(range(299))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fit"].startswith("distributed") and metrics["fit_rows"] == 299
    assert metrics["acc"] >= 0.75 and metrics["internal_metrics_rows"] == 299
    run = load_run(out)
    assert run.vectors.shape == (299, 384) and run.texts([298])[0] == take_texts(out / "texts.parquet", [298])[0]


def test_tokenising_in_a_cpu_stage_gives_the_vectors_of_tokenising_in_the_actor(ray_session):
    import ray.data

    from icc.corpus.embed_stage import embed_dataset
    from icc.models.embedder import tokenize_batch

    texts = ["short", "a somewhat longer text about card payments", "", "word " * 200, "the last one"]
    rows = [{"text": t, "reject": "" if t.strip() else "empty text", "replaced": False} for t in texts]
    staged = tokenize_batch({k: np.array([r[k] for r in rows], dtype=object) for k in ("text", "reject")},
                            "all-MiniLM-L6-v2", max_length=32)
    assert [len(ids) for ids in staged["input_ids"]] == [3, 9, 0, 32, 5]  # [CLS] ... [SEP], cut at max_length
    out = {}
    for mode in ("stage", "actor"):
        ds = embed_dataset(ray.data.from_items(rows), {"model": "all-MiniLM-L6-v2", "max_length": 32}, rows_per_batch=2,
                           tokenize=mode)
        out[mode] = ds.take_all()
    assert "input_ids" not in out["stage"][0]
    np.testing.assert_allclose(np.stack([r["vector"] for r in out["stage"]]),
                               np.stack([r["vector"] for r in out["actor"]]), atol=1e-5)
    assert [bool(r["truncated"]) for r in out["stage"]] == [False, False, False, True, False]
    with pytest.raises(ICCError, match="unknown embedder.pool.tokenize"):
        embed_dataset(ray.data.from_items(rows), {"model": "all-MiniLM-L6-v2"}, tokenize="gpu")


def test_embedded_rows_stream_in_batches_even_from_one_large_read_block(ray_session, tmp_path):
    """A Parquet file that Ray Data reads as one block still reaches the writer in blocks of
    rows_per_batch, in input order, so shards are written (and can be resumed) as the corpus goes."""
    from icc.corpus.embed_stage import embed_dataset
    from icc.data.corpus import read_corpus

    texts = [f"note {i}: {'spam' if i % 2 else 'ham'}" for i in range(600)]
    pq.write_table(pa.table({"text": texts}), tmp_path / "one.parquet")
    ds = read_corpus(str(tmp_path / "one.parquet"), "text")
    assert [bundle.num_rows() for bundle in ds.iter_internal_ref_bundles()] == [600]
    embedded = embed_dataset(read_corpus(str(tmp_path / "one.parquet"), "text"),
                             {"model": "all-MiniLM-L6-v2", "max_length": 16}, rows_per_batch=128)
    batches = list(embedded.iter_batches(batch_format="numpy", batch_size=None))
    assert [len(b["text"]) for b in batches] == [128, 128, 128, 128, 88]
    assert np.concatenate([b["text"] for b in batches]).tolist() == texts
