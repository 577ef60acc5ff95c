"""One small `icc cluster` run (HDBSCAN with reduce_outliers, 72 Banking77 texts of 4 intents, no
report), then `icc merge` on it: outliers moved to their nearest cluster with their distances,
hierarchy.parquet, the merge's new assignments, clusters, hierarchy and metrics; and the hierarchy
section of the session's banking_run report."""

import json
import shutil

import numpy as np
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from conftest import TEXT, run_icc

from icc.corpus.merge import merge_run
from icc.corpus.rundir import load_run
from icc.data.parquet import read_output
from icc.errors import ICCError

INTENTS = ["card_arrival", "change_pin", "exchange_rate", "terminate_account"]


@pytest.fixture(scope="module")
def hdbscan_run(ray_address, tmp_path_factory):
    base = tmp_path_factory.mktemp("merge")
    table = pyarrow.csv.read_csv(TEXT / "banking77_test.csv")
    pyarrow.csv.write_csv(pyarrow.concat_tables(
        [table.filter(pc.equal(table["label"], intent)).slice(0, 18) for intent in INTENTS]), base / "texts.csv")
    out = base / "run"
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false",
                     f"data.path={base / 'texts.csv'}", "clusterer=hdbscan", "clusterer.k=null",
                     "clusterer.min_cluster_size=5", "clusterer.reduce_outliers=true",
                     "report.enabled=false", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_outliers_go_to_the_nearest_cluster_and_the_hierarchy_is_written(hdbscan_run):
    out, stdout = hdbscan_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["noise"] == 0 and metrics["outliers_reduced"] > 0
    assert f"{metrics['outliers_reduced']} outliers moved to their nearest cluster" in stdout
    run = load_run(out)
    assert (run.cluster >= 0).all()
    distances = read_output(out / "assignments.parquet", ["distance"])["distance"].to_numpy()
    np.testing.assert_allclose(distances, np.linalg.norm(run.vectors - run.centroids[run.cluster], axis=1), rtol=1e-4)
    hierarchy = pq.read_table(out / "hierarchy.parquet")
    k = len(run.sizes)
    assert hierarchy.num_rows == k - 1 and hierarchy["node"].to_pylist() == list(range(k, 2 * k - 1))
    assert hierarchy["clusters"][-1].as_py() == list(range(k)) and hierarchy["size"][-1].as_py() == len(run.rows)


def test_the_report_shows_the_hierarchy(banking_run):
    page = (banking_run / "report.html").read_text()
    tree = page[page.index("<h2>Hierarchy</h2>"):]
    run = load_run(banking_run)
    assert tree.count("<li>") == 2 * len(run.sizes) - 1  # every cluster and every merge
    assert f"{len(run.rows):,} texts" in tree  # the root


def test_merge_rewrites_the_run_with_one_cluster_fewer(hdbscan_run):
    out, _ = hdbscan_run
    before = load_run(out)
    k = len(before.sizes)
    assert k >= 3
    result = run_icc("merge", f"run={out}", "clusters=[0,2]")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"cluster 0 now; k={k - 1}" in result.stdout
    after = load_run(out)  # complete again: _SUCCESS written last
    expected = np.where(before.cluster == 2, 0, before.cluster - (before.cluster > 2))
    np.testing.assert_array_equal(after.cluster, expected)
    assert after.sizes[0] == before.sizes[0] + before.sizes[2] and len(after.sizes) == k - 1
    weights = before.sizes[[0, 2], None]
    merged = (before.centroids[[0, 2]] * weights).sum(0) / weights.sum()
    np.testing.assert_allclose(after.centroids[0], merged, atol=1e-6)
    distances = read_output(out / "assignments.parquet", ["distance"])["distance"].to_numpy()
    np.testing.assert_allclose(distances, np.linalg.norm(after.vectors - after.centroids[after.cluster], axis=1),
                               rtol=1e-4)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["k"] == k - 1 and metrics["merges"] == [{"clusters": [0, 2], "into": 0}]
    assert pq.read_table(out / "hierarchy.parquet").num_rows == k - 2
    assert not [p.name for p in out.iterdir() if p.name.startswith(".assignments")]  # no generation left behind
    with pytest.raises(ICCError, match=f"no cluster {k + 5}: the run has clusters 0..{k - 2}"):
        merge_run(out, [0, k + 5])
    with pytest.raises(ICCError, match=r"at least two different clusters to merge, got \[1, 1\]"):
        merge_run(out, [1, 1])
    (out / "_SUCCESS").rename(out / "_SUCCESS.kept")
    with pytest.raises(ICCError, match="not a complete icc cluster run: missing _SUCCESS"):
        merge_run(out, [0, 1])
    (out / "_SUCCESS.kept").rename(out / "_SUCCESS")
    np.testing.assert_array_equal(load_run(out).cluster, expected)  # refused before any change


def test_a_merge_keeps_the_llm_names_of_the_clusters_it_does_not_touch(banking_run, tmp_path):
    """labeler=llm: a merge starts no LLM; the merged cluster's name joins the two, the others keep
    their names, keywords and name sources."""
    out = tmp_path / "run"
    shutil.copytree(banking_run, out)
    before = pq.read_table(out / "clusters.parquet").to_pylist()
    merge_run(out, [1, 2])
    after = pq.read_table(out / "clusters.parquet").to_pylist()
    assert after[1]["name"] == f"{before[1]['name']} / {before[2]['name']}" and after[1]["name_source"] == "merged"
    for old, new in zip([before[0], *before[3:]], [after[0], *after[2:]]):
        assert [new[key] for key in ("name", "representation", "name_source")] == \
            [old[key] for key in ("name", "representation", "name_source")]
