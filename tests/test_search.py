"""Search over an `icc cluster` run (filtered, unfiltered, the CLI, bad run dirs) and pairwise reranking
(bounded calls, position bias cancelled, order-independent), with a scripted judge and the real SmolLM2."""

import itertools
import json
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import run_icc

from icc.corpus.rerank import PairwiseJudge, PairwiseReranker, worst_case_comparisons
from icc.corpus.rundir import Manifest, load_run
from icc.corpus.search import ClusterIndex, Searcher
from icc.errors import ICCError
from icc.models.device import resolve_precision
from icc.models.hub import SMOLLM2

QUERIES = ["I lost my phone, what do I do?", "how do I close my account", "what rate do you use for currency exchange",
           "my card has still not arrived", "can I change my PIN at an ATM"]


@pytest.fixture(scope="module")
def searcher(banking_run):
    return Searcher.load(banking_run)


def test_filtered_results_come_only_from_the_query_cluster(searcher):
    run = searcher.run
    for query in QUERIES:
        vector = searcher.embed(query)
        nearest = searcher.query_clusters(vector, "cluster", 2)
        hits = searcher.search(query, top_k=30)
        assert len(hits) == min(30, run.sizes[nearest[0]])
        assert {h["cluster"] for h in hits} == {nearest[0]}
        assert all(h["name"] == run.names[nearest[0]] for h in hits)
        two = searcher.search(query, top_k=60, clusters=2)
        assert {h["cluster"] for h in two} <= set(nearest.tolist())
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True)


def test_unfiltered_search_is_exact_cosine_ranking(searcher):
    run = searcher.run
    vector = searcher.embed(QUERIES[0])
    hits = searcher.search(vector, top_k=50, filter="none")
    expected = np.argsort(-(run.vectors @ vector), kind="stable")[:50]
    assert [h["row"] for h in hits] == run.rows[expected].tolist()
    assert len({h["cluster"] for h in hits}) > 1  # 50 of 240 texts reach past one cluster
    texts = run.texts(expected[:3])
    assert [h["text"] for h in hits[:3]] == [" ".join(t.split()) for t in texts]


@pytest.mark.parametrize("kwargs, message", [
    ({"filter": "label"}, "unknown search filter"),
    ({"clusters": 0}, "search.clusters must be a positive integer"),
    ({"top_k": 0}, "top_k must be a positive integer"),
])
def test_bad_search_arguments(searcher, kwargs, message):
    with pytest.raises(ICCError, match=message):
        searcher.search(searcher.embed("card"), **kwargs)


def test_queries_are_embedded_as_the_run_recorded_its_embedder(banking_run, tmp_path):
    """A run embedded with pooling=last is searched with last-token query vectors, not mean-pooled ones:
    the Searcher loads the embedder from run.json's whole load group."""
    from icc.models.embedder import TextEmbedder

    run_dir = tmp_path / "run"
    shutil.copytree(banking_run, run_dir)
    record = json.loads((run_dir / "run.json").read_text())
    assert {"model", "max_length", "pooling", "precision"} <= set(record["embedder"])
    # the precision as the driver resolved it for the CPU actors, in run.json and the resume key's settings alike
    resolved = resolve_precision("auto", gpu=False)
    assert record["config"]["embedder"]["precision"] == "auto" and record["embedder"]["precision"] == resolved
    assert Manifest.load(run_dir).settings["embedder.precision"] == resolved
    record["embedder"]["pooling"] = "last"
    (run_dir / "run.json").write_text(json.dumps(record))
    query = QUERIES[0]
    vector = Searcher.load(run_dir).embed(query)
    last = TextEmbedder(record["embedder"]["model"], max_length=record["embedder"]["max_length"], pooling="last")
    np.testing.assert_allclose(vector, last.embed([query])[0], atol=1e-5)
    assert not np.allclose(vector, Searcher.load(banking_run).embed(query), atol=1e-3)


def test_query_on_100k_vectors_takes_well_under_a_second():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(100_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cluster = rng.integers(0, 100, len(vectors))
    index = ClusterIndex(vectors, cluster, rng.normal(size=(100, 384)))
    for clusters in (None, index.nearest_clusters(vectors[7], 1), index.nearest_clusters(vectors[7], 2)):
        start = time.perf_counter()
        scores, positions = index.search(vectors[7], 10, clusters)
        assert time.perf_counter() - start < 0.25
        assert len(positions) == 10 and (clusters is None or np.isin(cluster[positions], clusters).all())


def test_icc_search_prints_json_lines(banking_run):
    result = run_icc("search", f"run={banking_run}", "query='I lost my phone, what do I do?'", "top_k=5")  # quoted: a comma
    assert result.returncode == 0, result.stderr[-3000:]
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert {"id", "row", "score", "cluster", "name", "text"} <= hits[0].keys()
    assert len({h["cluster"] for h in hits}) == 1 and "phone" in hits[0]["text"].lower()
    assert "icc search: 5 results from cluster" in result.stderr


@pytest.mark.parametrize("damage, message", [
    ("absent", "does not exist"),
    ("embeddings.parquet", "not a complete icc cluster run: missing embeddings.parquet"),
])
def test_missing_or_incomplete_run_dir_is_one_line_and_exit_2(banking_run, tmp_path, damage, message):
    run = tmp_path / "run"
    if damage != "absent":
        shutil.copytree(banking_run, run)
        shutil.rmtree(run / damage)  # a directory of Parquet shards
    result = run_icc("search", f"run={run}", "query=card")
    assert result.returncode == 2
    assert result.stderr.startswith("icc: error:") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


@pytest.mark.parametrize("damage, message", [
    ("run.json", "missing run.json"),
    ("assignments.parquet", "cannot read"),
    ("texts.parquet", "missing texts.parquet"),
])
def test_damaged_run_dir_is_an_icc_error(banking_run, tmp_path, damage, message):
    run = tmp_path / "run"
    shutil.copytree(banking_run, run)
    if damage == "assignments.parquet":
        (run / damage / "part-00000.parquet").write_bytes(b"PAR1 not really")
    elif damage == "texts.parquet":
        shutil.rmtree(run / damage)
    else:
        (run / damage).unlink()
    with pytest.raises(ICCError, match=message):
        load_run(run)


def test_search_without_run_or_query_says_what_is_missing():
    result = run_icc("search", "query=card")
    assert result.returncode == 2 and "icc: error: give run=" in result.stderr


class ScriptedJudge(PairwiseJudge):
    """No model: answers "A" with probability sigmoid(relevance[A] - relevance[B] + bias), a judge
    with a strong preference for the first position."""

    def __init__(self, relevance: dict[str, float], bias: float = 3.0):
        self.relevance, self.bias, self.prompts = relevance, bias, 0

    def first_choice(self, query, pairs):
        diff = np.array([self.relevance[a] - self.relevance[b] for a, b in pairs])
        return 1 / (1 + np.exp(-(diff + self.bias)))


def test_pair_asked_in_both_orders_cancels_position_bias():
    judge = ScriptedJudge({"a": 0.0, "b": 0.0, "c": 1.0}, bias=5.0)
    np.testing.assert_allclose(judge.prefer("q", [("a", "b"), ("b", "a")]), [0.5, 0.5])
    forward, backward = judge.prefer("q", [("c", "a"), ("a", "c")])
    assert forward > 0.5 and forward + backward == pytest.approx(1.0)
    assert judge.prompts == 8


def test_a_judge_with_only_position_bias_keeps_the_retrieval_order():
    texts = [f"t{i}" for i in range(10)]
    order = PairwiseReranker(ScriptedJudge(dict.fromkeys(texts, 0.0), bias=4.0)).rerank("q", texts)
    assert order.tolist() == list(range(10))


def test_rerank_is_stable_under_swapped_order_and_bounded():
    relevance = {f"t{i}": float(v) for i, v in enumerate(np.random.default_rng(1).permutation(12))}
    best_first = sorted(relevance, key=relevance.get, reverse=True)
    for seed in range(5):
        texts = list(np.random.default_rng(seed).permutation(list(relevance)))
        for reverse in (False, True):
            shown = texts[::-1] if reverse else texts
            judge = ScriptedJudge(relevance)
            order = PairwiseReranker(judge, max_calls=200).rerank("q", shown)
            assert [shown[i] for i in order] == best_first
            assert judge.prompts <= 2 * worst_case_comparisons(12) <= 200


@pytest.mark.parametrize("n, max_calls", list(itertools.product([0, 1, 2, 5, 10, 17], [0, 2, 10, 54, 100])))
def test_rerank_never_exceeds_max_calls(n, max_calls):
    texts = [f"t{i}" for i in range(n)]
    judge = ScriptedJudge({t: float(i) for i, t in enumerate(texts)}, bias=0.0)  # the last retrieved is the best
    reranker = PairwiseReranker(judge, max_calls)
    order = reranker.rerank("q", texts)
    assert judge.prompts <= max_calls and sorted(order.tolist()) == list(range(n))
    m = reranker.sortable(n)
    assert order.tolist() == list(range(m))[::-1] + list(range(m, n))  # the sorted prefix, then the rest as found
    assert n < 2 or (m >= 2) == (max_calls >= 2)


def test_worst_case_comparisons():
    # merges of runs (1,1) cost 1, (2,1) 2, (2,2) 3, (4,2) 5, (4,4) 7, (8,2) 9
    assert [worst_case_comparisons(n) for n in (1, 2, 3, 4, 10)] == [0, 1, 3, 5, 5 + 6 + 7 + 9]


@pytest.fixture(scope="module")
def smollm2_judge():
    return PairwiseJudge.load(SMOLLM2, batch_size=8)


def test_smollm2_judge_is_symmetric_and_sees_the_obvious_match(smollm2_judge):
    query = "How do I change the PIN of my card?"
    match, miss = "I want to set a new PIN code for my card.", "The football match ended in a draw after extra time."
    forward, backward = smollm2_judge.prefer(query, [(match, miss), (miss, match)])
    assert forward + backward == pytest.approx(1.0, abs=1e-5)
    assert forward > 0.5
    assert smollm2_judge.prompts == 4


def test_icc_search_reranks_with_the_llm(banking_run):
    result = run_icc("search", f"run={banking_run}", "query=my card has still not arrived", "top_k=4",
                     "search.rerank=llm", "rerank.max_calls=10")
    assert result.returncode == 0, result.stderr[-3000:]
    hits = [json.loads(line) for line in result.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert sorted(h["retrieval_rank"] for h in hits) == [1, 2, 3, 4]
    assert "rerank" in result.stderr


def test_cluster_names_from_the_llm_stage(banking_run):
    names = pq.read_table(banking_run / "clusters.parquet")["name"].to_pylist()
    assert len(names) == 6 and all(isinstance(n, str) and 0 < len(n) <= 60 for n in names)
