"""quality=best (icc.cluster.adapt) on real texts through `icc cluster`: it separates what k-means mixes, and labels only score."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TEXT, run_icc
from sklearn.metrics import adjusted_rand_score

from icc.cluster import make_clusterer
from icc.errors import ICCError
from icc.metrics import cluster_accuracy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """240 SyskillWebert pages, 60 of each of its 4 topics (a fixed draw)."""
    frame = pd.read_csv(TEXT / "syskillwebert.csv").groupby("label").sample(60, random_state=1)
    base = tmp_path_factory.mktemp("quality")
    frame.to_csv(base / "pages.csv", index=False)
    return base


def test_best_separates_topics_that_kmeans_mixes_and_labels_only_score(ray_address, corpus):
    out = corpus / "run"
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file",
                     f"data.path={corpus / 'pages.csv'}", "data.label_column=label", "clusterer.k=4", "quality=best",
                     "labeler=none", "report.enabled=false", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    clusters = pd.read_parquet(out / "assignments.parquet").sort_values("id")["cluster"].to_numpy()
    labels = pd.read_parquet(out / "texts.parquet").sort_values("id")["label"].to_numpy()
    vectors = np.stack(pd.read_parquet(out / "embeddings.parquet").sort_values("id")["vector"])
    before = cluster_accuracy(labels, make_clusterer("kmeans", k=4, seed=0).fit_predict(vectors))
    assert before < 0.8  # plain k-means on the same vectors mixes the topics
    assert metrics["acc"] > 0.85 and metrics["acc"] > before + 0.08
    assert metrics["adapt"]["silhouettes"][0] > -1 and 0 <= metrics["adapt"]["relabelled"] <= 1
    assert json.loads((out / "run.json").read_text())["config"]["clusterer"]["name"] == "adapted"

    # Labels only score: the run's clusters are those of the vectors alone (fit sees no labels),
    # and shuffled labels change the score, not the clusters.
    alone = make_clusterer("adapted", k=4, seed=0).fit_predict(vectors)
    assert adjusted_rand_score(alone, clusters) == 1.0
    shuffled = np.random.default_rng(0).permutation(labels)
    assert cluster_accuracy(shuffled, alone) < metrics["acc"] - 0.3


@pytest.mark.parametrize("setting", [{"mix": 1.0}, {"confident": 0.0}, {"rounds": -1}, {"neighbors": 0}, {"C": 0}])
def test_a_setting_out_of_range_is_one_error(setting):
    with pytest.raises(ICCError):
        make_clusterer("adapted", k=4, **setting)
