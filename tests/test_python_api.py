"""icc.TextClusterer in this process (and once through the Ray pipeline): fit, predict, transform, cluster_info, search, merge,
clone and bad input, on 48 Banking77 texts of 4 intents with MiniLM (one fit for the module)."""

import copy

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv
import pytest
from conftest import TEXT
from sklearn.base import clone

import icc
from icc.cluster import HDBSCAN
from icc.errors import ICCError
from icc.metrics import external_metrics

INTENTS = ["card_arrival", "change_pin", "exchange_rate", "terminate_account"]


@pytest.fixture(scope="module")
def corpus():
    table = pyarrow.csv.read_csv(TEXT / "banking77_test.csv")
    parts = [table.filter(pc.equal(table["label"], intent)).slice(0, 12) for intent in INTENTS]
    table = pyarrow.concat_tables(parts)
    return table["text"].to_pylist(), np.array(table["label"].to_pylist())


@pytest.fixture(scope="module")
def model(corpus):
    model = icc.TextClusterer(n_clusters=4)
    labels = model.fit_predict(corpus[0])
    assert labels is model.labels_
    return model


def test_the_keyword_labeler_re_ranks_with_the_fitted_encoder(model):
    assert model.labeler_.encoder() is model.embedder_  # one load of the model, not two


def intent_cluster(model, y, intent):
    return np.bincount(model.labels_[y == intent]).argmax()


def test_fit_finds_the_intents_and_describes_each_cluster(model, corpus):
    texts, y = corpus
    assert model.labels_.shape == (len(texts),) and model.vectors_.shape == (len(texts), 384)
    assert external_metrics(y, model.labels_)["ari"] > 0.9
    info = model.cluster_info()
    assert list(info.columns) == ["cluster", "size", "name", "representation", "central_texts"]
    assert info["size"].sum() == len(texts) and list(info["size"]) == sorted(info["size"], reverse=True)
    for row in info.itertuples():
        assert row.name == model.names_[row.cluster] and row.name == ", ".join(row.representation[:3])
        members = {texts[i] for i in np.flatnonzero(model.labels_ == row.cluster)}
        assert 0 < len(row.central_texts) <= 5 and set(row.central_texts) <= members
    pin = intent_cluster(model, y, "change_pin")
    assert "pin" in model.names_[pin]
    assert model.hierarchy_.num_rows == 3 and model.hierarchy_["clusters"][-1].as_py() == [0, 1, 2, 3]


def test_transform_assigns_new_texts_to_the_nearest_cluster(model, corpus):
    y = corpus[1]
    labels, distances = model.transform(["How do I change the PIN of my card?", "I want to close my account"])
    assert labels.tolist() == [intent_cluster(model, y, "change_pin"), intent_cluster(model, y, "terminate_account")]
    vectors = model.embedder_.embed(["How do I change the PIN of my card?"])
    np.testing.assert_allclose(distances[0], np.linalg.norm(vectors[0] - model.cluster_centers_[labels[0]]), rtol=1e-4)
    assert model.predict(["I want to close my account"]).tolist() == labels[1:].tolist()


def test_search_ranks_within_the_query_cluster(model, corpus):
    y = corpus[1]
    hits = model.search("my card has still not arrived", k=3)
    card = intent_cluster(model, y, "card_arrival")
    assert len(hits) == 3 and (hits["cluster"] == card).all() and hits["score"].is_monotonic_decreasing
    assert hits["text"].tolist() == [model.texts_[i] for i in hits["index"]]
    other = intent_cluster(model, y, "exchange_rate")
    assert (model.search("my card has still not arrived", cluster=other, k=2)["cluster"] == other).all()
    assert len(model.search("card", cluster="all", k=48)) == 48
    with pytest.raises(ICCError, match="cluster ids in 0..3"):
        model.search("card", cluster=9)


def test_merge_joins_two_clusters_and_names_them_again(model):
    merged = copy.deepcopy(model)  # the module's model stays as it is
    before = merged.labels_.copy()
    merged.merge([1, 3])
    assert len(merged.sizes_) == 3 and merged.sizes_[1] == model.sizes_[1] + model.sizes_[3]
    np.testing.assert_array_equal(merged.labels_, np.where(before == 3, 1, before))  # 3 into 1; 0, 2 keep their ids
    np.testing.assert_allclose(merged.cluster_centers_[1], merged.vectors_[merged.labels_ == 1].mean(0), atol=1e-5)
    assert merged.predict([merged.texts_[np.flatnonzero(before == 3)[0]]])[0] == 1
    assert merged.names_[0] == model.names_[0] and merged.names_[1] != model.names_[1]  # c-TF-IDF over 3 clusters
    assert len(merged.names_) == 3 and merged.hierarchy_.num_rows == 2
    with pytest.raises(ICCError, match="at least two different clusters"):
        merged.merge([1, 1])


def test_clone_keeps_the_parameters_and_no_fitted_state(model):
    copy = clone(model)
    assert copy.get_params() == {"clusterer": "kmeans", "embedder": "all-MiniLM-L6-v2", "labeler": "keywords",
                                 "n_clusters": 4, "random_state": 0, "backend": "auto", "run_dir": None,
                                 "ray_address": None}
    assert not hasattr(copy, "labels_")
    assert copy.set_params(n_clusters="auto").n_clusters == "auto"
    est = icc.TextClusterer(clusterer=HDBSCAN(min_cluster_size=3, reduce_outliers=True))
    assert clone(est).get_params()["clusterer"].get_params()["reduce_outliers"] is True


@pytest.mark.parametrize("params, texts, message", [
    ({}, "one text", "texts must be a list of strings"),
    ({}, ["only one"], "at least 2 texts"),
    ({}, ["a text", 3], r"texts\[1\] is not a string"),
    ({}, ["a text", "  "], r"texts\[1\] is empty"),
    ({"n_clusters": 1}, ["a", "b", "c"], "k must be between 2"),
    ({"n_clusters": 5}, ["a", "b", "c"], r"k must be between 2 and the number of texts \(3\)"),
    ({"clusterer": "dbscan"}, ["a", "b"], "unknown clusterer 'dbscan'"),
    ({"clusterer": "hdbscan", "n_clusters": 3}, ["a", "b"], "finds the number of clusters itself"),
    ({"clusterer": HDBSCAN(), "n_clusters": 3}, ["a", "b"], "leave n_clusters None"),
    ({"labeler": "bert"}, ["a", "b"], "labeler must be one of keywords, none"),
    ({"embedder": 5}, ["a", "b"], "embedder must be a model name"),
    ({"embedder": "/no/such/model"}, ["a", "b"], "model path /no/such/model does not exist"),
    ({"backend": "gpu"}, ["a", "b"], "backend must be one of auto, local, ray"),
    ({"backend": "ray", "clusterer": HDBSCAN()}, ["a", "b"], "takes the clusterer and the labeler by name"),
])
def test_bad_input_is_refused_before_the_model_loads(params, texts, message):
    model = icc.TextClusterer(**params)
    with pytest.raises(ICCError, match=message):
        model.fit(texts)
    assert not hasattr(model, "embedder_")


def test_the_ray_backend_fits_with_the_icc_cluster_pipeline(ray_address, corpus, model, tmp_path):
    texts, y = corpus
    on_ray = icc.TextClusterer(n_clusters=4, backend="ray", run_dir=tmp_path / "run", ray_address=ray_address)
    assert on_ray.fit(texts) is on_ray and (tmp_path / "run" / "_SUCCESS").exists()  # an icc cluster run
    assert on_ray.texts_ == texts and on_ray.vectors_.shape == model.vectors_.shape
    assert external_metrics(y, on_ray.labels_)["ari"] > 0.9 and len(on_ray.names_) == 4
    np.testing.assert_array_equal(on_ray.predict(texts[:6]), on_ray.labels_[:6])


def test_save_writes_a_run_that_load_and_icc_search_read(model, tmp_path):
    from icc.corpus.search import Searcher

    saved = model.save(tmp_path / "run")
    loaded = icc.TextClusterer.load(saved)
    assert loaded.get_params() == model.get_params() and loaded.texts_ == model.texts_
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    assert loaded.names_ == model.names_
    new = ["How do I change the PIN of my card?", "what is the rate for euros to dollars?"]
    np.testing.assert_array_equal(loaded.predict(new), model.predict(new))
    hits = Searcher.load(saved).search("my card has still not arrived", top_k=3)  # as icc search reads it
    assert [h["row"] for h in hits] == model.search("my card has still not arrived", k=3)["index"].tolist()
    (tmp_path / "mine.txt").write_text("not icc's")
    with pytest.raises(ICCError, match="holds files icc did not write"):
        model.save(tmp_path)


def test_report_writes_the_map_with_names_and_hierarchy(model, tmp_path):
    page = model.report(tmp_path / "map.html").read_text()
    assert all(name in page for name in model.names_) and "<h2>Hierarchy</h2>" in page


class FixedNames:
    """A labeler object (as an LLMLabeler is): names each cluster 'topic <c>'."""

    texts_per_cluster = 2

    def label(self, cluster_texts, centroids):
        from icc.corpus.labeler import ClusterNames

        k = len(cluster_texts)
        return ClusterNames([f"topic {c}" for c in range(k)], [[f"word{c}"] for c in range(k)], ["llm"] * k)


def test_names_of_a_labeler_object_survive_save_load_save(corpus, tmp_path):
    import pyarrow.parquet as pq

    model = icc.TextClusterer(n_clusters=4, labeler=FixedNames()).fit(corpus[0])
    once = icc.TextClusterer.load(model.save(tmp_path / "once"))  # its labeler is saved as "none"
    twice = icc.TextClusterer.load(once.save(tmp_path / "twice"))
    clusters = pq.read_table(tmp_path / "twice" / "clusters.parquet").to_pydict()
    assert twice.names_ == once.names_ == [f"topic {c}" for c in range(4)] == clusters["name"]
    assert clusters["name_source"] == ["llm"] * 4 and clusters["representation"][0] == ["word0"]
    assert twice.cluster_info()["central_texts"].tolist() == model.cluster_info()["central_texts"].tolist()
