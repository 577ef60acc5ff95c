"""`icc cluster` as a user runs it: a subprocess on a real Ray cluster, checked through its files."""

import json
import re
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, TEXT, run_icc


def test_help_lists_pipelines():
    result = run_icc("--help")
    assert result.returncode == 0
    assert "cluster" in result.stdout


def test_cfg_job_prints_resolved_overrides():
    result = run_icc("cluster", "clusterer=spectral", "clusterer.k=12", "embedder.pool.batch_size=128", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    assert "name: spectral" in result.stdout and "k: 12" in result.stdout and "batch_size: 128" in result.stdout
    assert "banking77_test.csv" in result.stdout  # the bundled sample, as an absolute path


def test_pipeline_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "pipelines.cluster", "clusterer=hdbscan", "--cfg", "job"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "name: hdbscan" in result.stdout


@pytest.fixture(scope="module")
def cstr_run(ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("cstr")
    result = run_icc("cluster", f"ray.address={ray_address}", f"data.path={TEXT / 'cstr.csv'}",
                     "data.label_column=label", "clusterer.k=4", f"output.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_piped_output_is_a_line_per_stage_and_the_summary(cstr_run):
    out, result = cstr_run
    lines = (result.stdout + result.stderr).splitlines()
    progress = [line for line in result.stderr.splitlines() if line.startswith("icc: ")]
    assert [line.split()[1] for line in progress] == ["start-up", "embed", "cluster", "assign", "write", "label",
                                                      "metrics"], result.stderr
    assert re.fullmatch(r"icc: embed 299 rows in [0-9.]+ s, [0-9.]+ rows/s", progress[1])
    # Nothing else on stderr: no Ray log lines, warnings or actor output without ray.verbose=true.
    assert len(result.stderr.splitlines()) == len(progress), result.stderr
    assert len(lines) <= 20, lines
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["seconds"]["start-up"] > 0  # imports, config and joining Ray: before the embed stage


def test_cluster_writes_every_output(cstr_run):
    out, result = cstr_run
    assert str(out) in result.stdout
    assignments = pq.read_table(out / "assignments.parquet")
    assert assignments.num_rows == 299
    assert assignments["id"].to_pylist() == list(range(299))
    assert set(assignments["cluster"].to_pylist()) == {0, 1, 2, 3}
    embeddings = pq.read_table(out / "embeddings.parquet")
    vectors = np.stack(embeddings["vector"].to_numpy(zero_copy_only=False))
    assert vectors.shape == (299, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    clusters = pq.read_table(out / "clusters.parquet").to_pylist()
    assert [c["size"] for c in clusters] == np.bincount(assignments["cluster"].to_numpy()).tolist()
    assert all(len(c["central_texts"]) == 5 and len(c["centroid"]) == 384 for c in clusters)
    # the default labeler: keywords re-ranked by MiniLM, the name their first three
    assert all(c["name_source"] == "keywords" and c["name"] == ", ".join(c["representation"][:3]) for c in clusters)
    run = json.loads((out / "run.json").read_text())
    assert run["embedder"]["model"] == "all-MiniLM-L6-v2" and run["versions"]["ray"]


def test_cluster_quality_on_cstr(cstr_run):
    metrics = json.loads((cstr_run[0] / "metrics.json").read_text())
    # sentence-transformers + scikit-learn KMeans reaches 0.80 here (../shared/BASELINES.md).
    assert metrics["acc"] >= 0.75
    assert {"ari", "nmi", "v_measure", "f1_weighted", "silhouette", "calinski_harabasz"} <= metrics.keys()
    assert metrics["seconds"]["embed"] > 0 and metrics["texts_per_s"] > 0


def test_rejected_rows_are_kept_with_reasons(ray_address, tmp_path):
    corpus = tmp_path / "c.csv"
    corpus.write_bytes(b'text\nhello there\n"   "\nbad \xff byte\n\ngood morning\nsee you later\n' + b"word " * 600_000 + b"\n")
    out = tmp_path / "out"
    result = run_icc("cluster", f"ray.address={ray_address}", "data=file", f"data.path={corpus}",
                     "clusterer.k=2", f"output.dir={out}", "ray.progress_bars=false", "ray.verbose=true")
    assert result.returncode == 0, result.stderr[-3000:]
    # ray.verbose=true: Ray's own logs too (Ray Data's execution plans, the embedding actor's output)
    assert "Execution plan of Dataset" in result.stderr and "MapBatches(TextEmbedder)" in result.stderr
    assert not any(line.startswith("icc: ") for line in result.stderr.splitlines())  # progress_bars=false
    rows = pq.read_table(out / "assignments.parquet").to_pylist()
    assert len(rows) == 7  # a quoted blank value is a row, and so is a blank line
    assert [r["reason"] for r in rows if r["cluster"] == -1] == ["empty text", "empty text"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rejected"] == 2 and metrics["undecodable_rows_replaced"] == 1
    assert metrics["truncated_to_max_length"] == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.path=/no/such/file.csv"], "data.path not found"),
        ([f"data.path={TEXT / 'cstr.csv'}", "data.text_column=body"], "text column 'body' not in"),
        ([f"data.path={TEXT / 'cstr.csv'}", "clusterer.k=1"], "k must be between 2"),
        ([f"data.path={TEXT / 'cstr.csv'}", "clusterer.k=300"], "k must be between 2"),
        ([f"data.path={TEXT / 'cstr.csv'}", "clusterer.k=many"], "k must be an integer"),
        (["data.path=EMPTY"], "the corpus is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(ray_address, tmp_path, overrides, message):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    overrides = [o.replace("EMPTY", str(empty)) for o in overrides]
    result = run_icc("cluster", f"ray.address={ray_address}", "ray.progress_bars=false",
                     f"output.dir={tmp_path / 'out'}", *overrides)
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("icc: error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr
