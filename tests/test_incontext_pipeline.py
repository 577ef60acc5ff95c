"""In-context clustering: `icc incontext` end to end on a real Ray cluster (synthetic and text
episodes, tiny), the episode builders, and `ICCClusterer` on the real SmolLM2 (CPU)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED, run_icc
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from icc.errors import ICCError
from icc.finetune.data import answer_text
from icc.incontext.clusterer import ICCClusterer
from icc.incontext.episodes import build_episodes, read_numeric
from icc.models.hub import SMOLLM2, resolve_model

WINE = SHARED / "numeric" / "uci" / "wine"
TINY = ["ray.progress_bars=false", "llm.generate.max_new_tokens=12"]
TEXTS = {
    "sport": ["The team won the final match", "A late goal decided the game", "The striker scored twice",
              "Fans cheered the champions", "The coach praised his players", "The keeper saved a penalty"],
    "money": ["Shares fell on the stock market", "The bank raised interest rates", "Profits rose this quarter",
              "Investors sold their bonds", "The company cut its costs", "Inflation slowed last month"],
}


@pytest.fixture(scope="module")
def synthetic_run(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    result = run_icc("incontext", f"ray.address={ray_address}", *TINY, "data=synthetic", "data.ks=[2]", "data.ds=[1]",
                     "data.dfs=[100]", "data.episodes=2", "data.n_range=[10,12]", "attention.layers=[3,20]",
                     f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_synthetic_run_writes_episodes_with_attention(synthetic_run):
    out, result = synthetic_run
    assert str(out) in result.stdout and "attention_oracle" in result.stdout
    rows = pq.read_table(out / "episodes.parquet").to_pylist()
    assert len(rows) == 2
    methods = ["generate", "attention", "attention_oracle", "kmeans", "gmm", "spectral", "chance", "one_cluster"]
    for row in rows:
        n = row["n"]
        assert (row["k"], row["d"], row["df"]) == (2, 1, 100.0) and 10 <= n <= 12
        assert len(row["points"]) == len(row["labels"]) == n
        assert row["parse_status"] in {"ok", "padded", "trimmed", "no_list"} and isinstance(row["answer"], str)
        assert all(len(row[f"pred_{m}"]) == n and 0 <= row[f"acc_{m}"] <= 1 for m in methods)
        assert row["pred_one_cluster"] == [0] * n and row["ari_one_cluster"] == 0  # the floor ignores the items
        assert set(row["pred_chance"]) <= {0, 1}
        orders = np.array(row["attention_orders"])  # attention.orders=4: the given order, then 3 random ones
        assert orders.shape == (4, n) and orders[0].tolist() == list(range(n))
        assert all(sorted(order) == list(range(n)) for order in orders)
        for layer in (3, 20):
            attention = np.array(row[f"attention_L{layer}"])
            assert attention.shape == (4, n, n) and np.allclose(np.triu(attention, 1), 0)  # causal: no later items


def test_synthetic_run_metrics(synthetic_run):
    out, _ = synthetic_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["episodes"] == 2 and metrics["validation_episodes"] == 1
    for method in ("generate", "attention", "attention_oracle", "kmeans", "gmm", "spectral"):
        scores = metrics["methods"][method]
        assert scores["episodes"] == 2 and {"acc", "ari", "nmi"} <= scores.keys()
        assert set(scores["by_df"]) == {"100"} and set(scores["by_k"]) == {"2"}
    attention = metrics["attention"]
    assert attention["layers"] == [3, 20] and attention["layer"] in (3, 20)
    assert set(attention["validation_ari_by_layer"]) == set(attention["oracle_test_ari_by_layer"]) == {"3", "20"}
    assert attention["oracle_layer"] in (3, 20)
    assert metrics["seconds"]["llm"] > 0 and metrics["episodes_per_s"] > 0
    assert json.loads((out / "run.json").read_text())["config"]["llm"]["model"] == "SmolLM2-135M-Instruct"


def test_text_run_two_conditions_on_the_same_items(ray_address, tmp_path):
    corpus = tmp_path / "texts.csv"
    corpus.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for label, ts in TEXTS.items() for t in ts))
    out = tmp_path / "out"
    result = run_icc("incontext", f"ray.address={ray_address}", *TINY, "data=text", f"data.path={corpus}",
                     "data.episodes=1", "data.n_range=[6,6]", "data.k_range=[2,2]",
                     'data.conditions=["by topic","by sentiment"]', "data.condition_labels=[label,null]",
                     "attention.layers=[3]", "attention.layer=3", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    topic, sentiment = pq.read_table(out / "episodes.parquet").to_pylist()
    assert (topic["condition"], sentiment["condition"]) == ("by topic", "by sentiment")
    assert topic["texts"] == sentiment["texts"] and len(topic["texts"]) == 6
    assert len(topic["labels"]) == 6 and sentiment["labels"] is None  # nothing scores the second condition
    assert len(sentiment["pred_generate"]) == len(sentiment["pred_kmeans_embeddings"]) == 6
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["methods"]["kmeans_embeddings"]["episodes"] == 1
    assert set(metrics["methods"]["attention"]["by_condition"]) == {"by topic"}
    assert metrics["attention"]["layer_chosen_by"] == "config"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data=numeric", "data.path=/no/such.data", "data.labels=/no/such.labels0"], "cannot read numeric data"),
        (["attention.layers=[99]"], "outside the model's 30 layers"),
        (["attention.layers=[3]", "attention.layer=7"], "attention.layer must be auto or one of"),
        (["data=banking77"], "data must be one of synthetic, numeric, text"),
        (["data=text", f"data.path={SHARED / 'text' / 'cstr.csv'}", "data.label_column=topic"], "column 'topic' not in"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, overrides, message):
    result = run_icc("incontext", *TINY, f"output.dir={tmp_path}", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("icc: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr


def test_numeric_episodes_from_wine_leave_out_noise_and_are_reproducible():
    data = {"kind": "numeric", "path": f"{WINE}.data", "labels": f"{WINE}.labels0", "n_range": [10, 20],
            "k_range": [2, 3], "standardize": True}
    episodes = build_episodes(data, seed=0, count=5, split="test")
    assert episodes == build_episodes(data, seed=0, count=5, split="test")
    assert episodes != build_episodes(data, seed=1, count=5, split="test")
    for e in episodes:
        assert e["d"] == 13 and 10 <= e["n"] <= 20 and e["k"] in (2, 3) and e["split"] == "test"
        assert sorted(set(e["labels"])) == list(range(e["k"])) and e["texts"] is None


def test_text_episodes_share_items_across_conditions(tmp_path):
    corpus = tmp_path / "texts.csv"
    corpus.write_text("text,label,mood\n" + "".join(f'"{t}",{label},{i % 2}\n' for label, ts in TEXTS.items()
                                                      for i, t in enumerate(ts)) + '"   ",money,0\n')
    data = {"kind": "text", "path": str(corpus), "text_column": "text", "label_column": "label",
            "n_range": [8, 8], "k_range": [2, 2], "max_chars": 10,
            "conditions": [None, "by mood"], "condition_labels": ["label", "mood"]}
    plain, mood = build_episodes(data, seed=0, count=1, split="test")
    assert plain["texts"] == mood["texts"] and all(0 < len(t) <= 10 for t in plain["texts"])
    assert (plain["condition"], mood["condition"]) == (None, "by mood")
    assert plain["labels"] != mood["labels"] and set(mood["labels"]) <= {0, 1}
    with pytest.raises(ICCError, match="one entry"):
        build_episodes({**data, "condition_labels": ["label"]}, seed=0, count=1, split="test")


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(0)
    return np.array([[0.0, 0.0], [8.0, 8.0]])[np.repeat([0, 1], 5)] + rng.normal(0, 0.5, (10, 2))


def test_clusterer_generate_and_attention_on_points(points):
    generated = ICCClusterer(n_clusters=2, method="generate")
    labels = generated.fit_predict(points)
    assert labels.shape == (10,) and labels.dtype == np.int64 and set(labels) <= {0, 1}
    assert generated.parse_status_ == "ok" and generated.answer_ == answer_text(labels)  # constrained by default
    attention = ICCClusterer(n_clusters=2, method="attention", layer=-27)
    labels = attention.fit_predict(points)
    assert labels.shape == (10,) and set(labels) <= {0, 1}
    assert attention.layer_ == 3 and attention.attention_.shape == (4, 10, 10)  # 4 prompt orders by default
    assert attention.item_orders_.shape == (4, 10) and attention.affinity_.shape == (10, 10)


def test_clusterer_attention_on_texts_with_a_condition():
    texts = TEXTS["sport"][:3] + TEXTS["money"][:3]
    clusterer = ICCClusterer(n_clusters=2, method="attention", condition="by topic")
    labels = clusterer.fit_predict(texts)
    assert labels.shape == (6,) and set(labels) <= {0, 1}
    assert clusterer.attention_.shape == (4, 6, 6)


def test_clusterer_clones_and_reloads_its_model_when_a_load_setting_changes(points):
    clusterer = ICCClusterer(n_clusters=2, method="attention", layer=3, dtype="float32")
    copy = clone(clusterer)
    assert copy.get_params() == clusterer.get_params() and not hasattr(copy, "model_")
    model = clusterer.fit(points).model_
    assert clusterer.set_params(layer=5).fit(points).model_ is model  # the same load settings: kept
    assert clusterer.set_params(model=str(resolve_model(SMOLLM2))).fit(points).model_ is not model
    assert clusterer.set_params(dtype="bfloat16").fit(points).model_.dtype == torch.bfloat16
    assert copy.fit(points).model_.dtype == torch.float32  # the clone: its own model


def test_clusterer_in_a_grid_search_over_layers_on_wine():
    X, y = read_numeric(f"{WINE}.data", f"{WINE}.labels0")
    rows = np.concatenate([np.flatnonzero(y == 1)[:6], np.flatnonzero(y == 2)[:6]])
    search = GridSearchCV(
        make_pipeline(StandardScaler(), ICCClusterer(n_clusters=2, method="attention")),
        {"iccclusterer__layer": [3, 20]},
        scoring=lambda estimator, _, y: adjusted_rand_score(y, estimator[-1].labels_),  # the rows it clustered
        cv=[(np.arange(12), np.arange(12))],
    )
    search.fit(X[rows], y[rows])
    assert search.best_params_["iccclusterer__layer"] in (3, 20)
    assert search.best_estimator_[-1].labels_.shape == (12,)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


@pytest.mark.parametrize(
    "X, k, params, message",
    [
        (np.zeros((10, 2)), 1, {}, "must be between 2"),
        (np.zeros((10, 2)), 11, {}, "must be between 2"),
        (np.full((10, 2), np.nan), 2, {}, "NaN or infinite"),
        (np.zeros(10), 2, {}, r"\(n, d\) array"),
        (["a text", " "], 2, {}, "texts must be non-empty"),
        (np.zeros((60, 2)), 2, {}, "max_items=50"),
        (np.zeros((60, 2)), 2, {"max_items": 40}, "max_items=40"),
        (np.zeros((10, 2)), 2, {"condition": "by colour"}, "condition applies to texts only"),
        (np.zeros((10, 2)), 2, {"method": "vote"}, "method must be one of"),
    ],
)
def test_clusterer_rejects_bad_input(X, k, params, message):
    with pytest.raises(ICCError, match=message):
        ICCClusterer(n_clusters=k, **params).fit(X)
