"""Resume after failure: `icc cluster` killed (SIGKILL of the driver) midway through embedding,
then run again with the same command, embeds only the rows after the shards that were whole and
ends with the outputs of a run that was never interrupted (see `icc.embed_stage`)."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from conftest import BIN, ROOT, TEXT, run_icc
from sklearn.metrics import adjusted_rand_score

from icc.corpus.embed_stage import embed_corpus, embed_key, resolve_embedder
from icc.corpus.shards import Shards, resume_shards
from icc.data.corpus import read_corpus
from icc.data.parquet import vector_matrix

ROWS = 1200  # enough that the run is still embedding well after its second whole shard
SHARD_ROWS = 32


def command(ray_address, corpus, out) -> list[str]:
    return ["cluster", f"ray.address={ray_address}", "ray.progress_bars=false", "data=file", f"data.path={corpus}",
            "data.label_column=label", "clusterer.k=4", "labeler=none", "report.enabled=false",
            "embedder.max_length=32", "embedder.pool.rows_per_batch=16", f"output.shard_rows={SHARD_ROWS}",
            f"output.dir={out}"]


def kill_when(args: list[str], ready, timeout: float = 180) -> None:
    """Start `icc <args>` in a process group of its own and SIGKILL the group once `ready()` is
    true. The driver joined the test session's Ray cluster, which ends its job's actors and
    tasks when the driver dies."""
    job = subprocess.Popen([BIN / "icc", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and job.poll() is None and not ready():
            time.sleep(0.02)
        assert job.poll() is None, "the run ended before it could be killed"
        assert ready(), f"the run did not reach the point to kill it at in {timeout} s"
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        job.kill()
        job.wait()


def kill_after_whole_shards(args: list[str], out, shards: int) -> None:
    """`kill_when` embed.json lists `shards` whole shards."""
    def ready():
        manifest = Shards.load(out, partial=True)
        return manifest is not None and len(manifest.rows) >= shards

    kill_when(args, ready)


def outputs(out) -> tuple[list, np.ndarray, np.ndarray]:
    """ids, clusters (per input row) and vectors of a finished run."""
    assignments = pq.read_table(out / "assignments.parquet")
    vectors = vector_matrix(pq.read_table(out / "embeddings.parquet")["vector"])
    return assignments["id"].to_pylist(), assignments["cluster"].to_numpy(), vectors


def test_killed_run_resumes_without_re_embedding(ray_address, tmp_path):
    corpus = tmp_path / "news.csv"
    pyarrow.csv.write_csv(pyarrow.csv.read_csv(TEXT / "agnews_test.csv").slice(0, ROWS), corpus)
    killed, clean = tmp_path / "killed", tmp_path / "clean"

    kill_after_whole_shards(command(ray_address, corpus, killed), killed, shards=2)
    cut = Shards.load(killed, partial=True)
    assert not cut.complete and 2 * SHARD_ROWS <= cut.n_rows < ROWS

    resumed = run_icc(*command(ray_address, corpus, killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((killed / "metrics.json").read_text())
    assert metrics["rows"] == ROWS and metrics["rows_embedded_this_run"] <= ROWS - cut.n_rows

    result = run_icc(*command(ray_address, corpus, clean))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((clean / "metrics.json").read_text())["rows_embedded_this_run"] == ROWS
    ids, clusters, vectors = outputs(killed)
    clean_ids, clean_clusters, clean_vectors = outputs(clean)
    assert ids == clean_ids == list(range(ROWS))
    np.testing.assert_allclose(vectors, clean_vectors, atol=1e-5)
    assert adjusted_rand_score(clean_clusters, clusters) > 0.99

    # The pipeline's embed stage again, with the run's config: the complete stage is skipped (no
    # Ray is needed to see it), also with other runtime settings; another embedder config starts afresh.
    record = json.loads((killed / "run.json").read_text())
    config, embedder = record["config"], record["embedder"]  # the load group, its precision resolved as keyed
    columns = {key: value for key, value in config["data"].items() if key != "path"}
    assert embedder == resolve_embedder({key: value for key, value in config["embedder"].items() if key != "pool"},
                                        config["embedder"]["pool"])
    shards, embedded_now = embed_corpus(str(corpus), columns, embedder, config["embedder"]["pool"], killed, SHARD_ROWS)
    assert embedded_now == 0 and shards.complete and shards.n_rows == ROWS
    faster = {**config["embedder"]["pool"], "actors": 2, "batch_size": 8, "rows_per_batch": 64}
    assert embed_corpus(str(corpus), columns, embedder, faster, killed, SHARD_ROWS)[1] == 0
    other = resume_shards(killed, embed_key(str(corpus), columns, {**embedder, "max_length": 64}))
    assert other.n_rows == 0 and not (killed / "embeddings.parquet").exists()


def write(table: pa.Table, path) -> None:
    """`table` as a corpus file of the format its name ends in."""
    if path.suffix == ".csv":
        pyarrow.csv.write_csv(table, path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in table.to_pylist()))
    else:
        pq.write_table(table, path)


def texts(ds) -> list[str]:
    return [t for batch in ds.iter_batches(batch_format="numpy", batch_size=None) for t in batch["text"].tolist()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resumed_read_streams_the_rows_after_those_skipped(ray_session, tmp_path, suffix):
    """The read of a resumed embed stage: the rows after the first `skip_rows`, in order, for every
    cut (inside a file, at a file's end, past the last row); the files after the one the cut lies
    in are read as the dataset streams, not when it is made (before: `split_at_indices` on the
    whole read, which ran the read of the whole corpus into the object store first)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    sizes = [7, 5, 9]
    for i, n in enumerate(sizes):
        write(pa.table({"text": [f"file {i} row {j}" for j in range(n)]}), corpus / f"{i}{suffix}")
    every = texts(read_corpus(str(corpus), "text"))
    assert len(every) == sum(sizes)
    for skip in (6, 7, 13, 21):
        assert texts(read_corpus(str(corpus), "text", skip_rows=skip)) == every[skip:], skip

    resumed = read_corpus(str(corpus), "text", skip_rows=3)
    rewritten = [f"rewritten row {j}" for j in range(sizes[2])]
    write(pa.table({"text": rewritten}), corpus / f"2{suffix}")
    assert texts(resumed) == every[3:12] + rewritten


STAGE_ROWS = 240
STAGE_SHARD_ROWS = 8  # 30 shards: 30 assignment tasks, and k-means over 30 blocks


def stage_command(ray_address, corpus, out) -> list[str]:
    """A run whose fit and assignment stages last seconds: k-means over Ray blocks (Lloyd
    iterations of one task per shard) and one assignment task per shard."""
    return [*command(ray_address, corpus, out)[:-2], f"output.shard_rows={STAGE_SHARD_ROWS}", f"output.dir={out}",
            "clusterer.backend=ray", "clusterer.n_init=3", "clusterer.max_iter=50", "clusterer.tol=0"]


@pytest.fixture(scope="module")
def stage_corpus(ray_address, tmp_path_factory):
    """A corpus of STAGE_ROWS news texts and the assignments and centroids of an uninterrupted run on it."""
    base = tmp_path_factory.mktemp("stages")
    corpus = base / "news.csv"
    pyarrow.csv.write_csv(pyarrow.csv.read_csv(TEXT / "agnews_test.csv").slice(0, STAGE_ROWS), corpus)
    result = run_icc(*stage_command(ray_address, corpus, base / "clean"))
    assert result.returncode == 0, result.stderr[-3000:]
    return corpus, finished(base / "clean")


def finished(out) -> tuple[pa.Table, np.ndarray]:
    """The assignments (id, cluster, distance) and centroids of a finished run."""
    assert (out / "_SUCCESS").exists()
    assignments = pq.read_table(out / "assignments.parquet", columns=["id", "cluster", "distance"])
    return assignments, vector_matrix(pq.read_table(out / "clusters.parquet")["centroid"])


def assert_same_run(out, clean) -> None:
    assignments, centroids = finished(out)
    assert assignments["id"].to_pylist() == clean[0]["id"].to_pylist() == list(range(STAGE_ROWS))
    np.testing.assert_array_equal(assignments["cluster"].to_numpy(), clean[0]["cluster"].to_numpy())
    np.testing.assert_allclose(assignments["distance"].to_numpy(), clean[0]["distance"].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(centroids, clean[1], atol=1e-5)


def test_killed_during_fit_reruns_to_the_uninterrupted_result(ray_address, stage_corpus, tmp_path):
    """SIGKILL of the run's process group while k-means runs (the embed stage complete, no
    assignment written yet); the same command again skips the embed stage, fits and assigns, and
    ends with the clusters of a run never interrupted."""
    corpus, clean = stage_corpus
    out = tmp_path / "run"

    def in_fit() -> bool:
        return Shards.load(out) is not None and not (out / "assignments.parquet").exists()

    kill_when(stage_command(ray_address, corpus, out), in_fit)
    assert in_fit() and not (out / "_SUCCESS").exists()

    result = run_icc(*stage_command(ray_address, corpus, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["rows_embedded_this_run"] == 0
    assert_same_run(out, clean)


def test_killed_during_assignment_reruns_to_the_uninterrupted_result(ray_address, stage_corpus, tmp_path):
    """SIGKILL of the run's process group once the first assignment shards are written and
    before the last; the same command again replaces them and ends with the assignments of a
    run never interrupted."""
    corpus, clean = stage_corpus
    out = tmp_path / "run"

    def parts() -> list:
        return list((out / "assignments.parquet").glob("part-*.parquet"))

    kill_when(stage_command(ray_address, corpus, out), lambda: len(parts()) > 0)
    shards = len(Shards.load(out).rows)
    assert 0 < len(parts()) < shards and not (out / "metrics.json").exists(), (len(parts()), shards)

    result = run_icc(*stage_command(ray_address, corpus, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(parts()) == shards
    assert_same_run(out, clean)
