"""quality=best (icc.cluster.adapt) on real texts through `icc cluster`: it separates what k-means mixes, and labels only score."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import TEXT, run_icc

from icc.cluster import make_clusterer
from icc.errors import ICCError
from icc.metrics import cluster_accuracy


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """240 SyskillWebert pages, 60 of each of its 4 topics (a fixed draw), and a copy with the labels shuffled."""
    frame = pd.read_csv(TEXT / "syskillwebert.csv").groupby("label").sample(60, random_state=1)
    base = tmp_path_factory.mktemp("quality")
    frame.to_csv(base / "pages.csv", index=False)
    frame.assign(label=np.random.default_rng(0).permutation(frame["label"].to_numpy())).to_csv(
        base / "shuffled.csv", index=False)
    return base


def cluster_best(ray_address, data, out):
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file",
                     f"data.path={data}", "data.label_column=label", "clusterer.k=4", "quality=best",
                     "labeler=none", "report.enabled=false", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assignments = pd.read_parquet(out / "assignments.parquet").sort_values("id")
    return assignments["cluster"].to_numpy(), json.loads((out / "metrics.json").read_text())


def test_best_separates_topics_that_kmeans_mixes_and_labels_only_score(ray_address, corpus):
    clusters, metrics = cluster_best(ray_address, corpus / "pages.csv", corpus / "run")
    labels = pd.read_parquet(corpus / "run" / "texts.parquet").sort_values("id")["label"].to_numpy()
    vectors = pd.read_parquet(corpus / "run" / "embeddings.parquet").sort_values("id")["vector"]
    before = cluster_accuracy(labels, make_clusterer("kmeans", k=4, seed=0).fit_predict(np.stack(vectors)))
    assert before < 0.8  # plain k-means on the same vectors mixes the topics
    assert metrics["acc"] > 0.85 and metrics["acc"] > before + 0.08
    assert metrics["adapt"]["silhouettes"][0] > -1 and 0 <= metrics["adapt"]["relabelled"] <= 1
    assert json.loads((corpus / "run" / "run.json").read_text())["config"]["clusterer"]["name"] == "adapted"

    # The same texts with their labels shuffled: the same clusters, other scores.
    shuffled, shuffled_metrics = cluster_best(ray_address, corpus / "shuffled.csv", corpus / "shuffled")
    np.testing.assert_array_equal(shuffled, clusters)
    assert shuffled_metrics["adapt"] == metrics["adapt"]
    assert shuffled_metrics["acc"] < metrics["acc"] - 0.3


@pytest.mark.parametrize("setting", [{"mix": 1.0}, {"confident": 0.0}, {"rounds": -1}, {"neighbors": 0}, {"C": 0}])
def test_a_setting_out_of_range_is_one_error(setting):
    with pytest.raises(ICCError):
        make_clusterer("adapted", k=4, **setting)
