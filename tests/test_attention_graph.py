"""icc cluster clusterer=attention: episodes over the corpus, the gather of their attention into one
sparse graph, its spectral clustering, and the whole preset on real Ray with the bundled LLM."""

import json
import signal
import subprocess
import time

import faiss
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score
from transformers import AutoTokenizer

from icc.corpus.attention_graph import (
    affinity_graph,
    corpus_episodes,
    episode_edges,
    fuse,
    knn_graph,
    knn_index,
    nearest_neighbours,
    spectral_clusters,
    truncate_texts,
)
from icc.models.hub import resolve_model
from tests.conftest import BIN, ROOT, run_icc

PETS = ["My cat sleeps on the warm sofa all day.", "The puppy chewed my shoes again.",
        "Our dog loves chasing the ball in the park.", "The kitten purrs when I stroke her fur.",
        "I feed my cat fish every morning.", "The dog barks at the postman.",
        "My hamster runs on its wheel at night.", "The parrot learned to say hello.",
        "Walking the dog in the rain is no fun.", "The cat knocked a glass off the table.",
        "Our rabbit eats carrots from my hand.", "The puppy wags its tail at everyone."]
MARKETS = ["Stocks fell sharply as bond yields rose.", "The central bank raised interest rates again.",
           "Shares of the chip maker jumped ten percent.", "Oil prices climbed after the supply cut.",
           "The index closed at a record high on Friday.", "Investors sold tech stocks ahead of earnings.",
           "The dollar weakened against the euro.", "Quarterly profits beat analyst forecasts.",
           "Bond markets rallied on inflation data.", "The bank reported a loss on bad loans.",
           "Traders expect another rate cut in March.", "Gold prices rose as markets slid."]


def two_blobs(n: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(0, 1, (n // 2, 8)) + 4, rng.normal(0, 1, (n // 2, 8)) - 4])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def test_every_row_is_in_one_episode_per_pass_with_its_neighbours():
    X = two_blobs(40)
    neighbours, _ = nearest_neighbours(X, 10)
    episodes = corpus_episodes(neighbours, passes=3, size=8, share=0.5, seed=0)
    assert np.array_equal(np.bincount(np.concatenate(episodes), minlength=40), np.full(40, 3))
    assert all(4 <= len(e) <= 12 and len(set(e.tolist())) == len(e) for e in episodes)
    same_blob = [np.mean((e < 20) == (e[0] < 20)) for e in episodes]
    assert np.mean(same_blob) > 0.5  # neighbours gather the first row's blob, but not only it
    again = corpus_episodes(neighbours, passes=3, size=8, share=0.5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(episodes, again))


def test_nearest_neighbours_leave_out_the_row_itself_and_pad_small_corpora():
    X = two_blobs(4)
    found, similarity = nearest_neighbours(X, 5)
    assert found.shape == (4, 5) and (found[:, 3:] == -1).all() and (similarity[:, 3:] == 0).all()
    assert all(i not in row for i, row in enumerate(found))


def test_gather_of_hand_built_episodes_gives_the_known_graph():
    # Two episodes of 3 items, one prompt order each. The paper's affinity (row-normalise, times the
    # row's non-zero entries, lower triangle mirrored): episode 0 (rows 0, 1, 2): item 1 attends to
    # item 0 only -> pair (0, 1) weight 1, the others 0. Episode 1 (rows 2, 1, 3): item 1 attends
    # half to item 0, item 2 to item 0 only -> local pairs (0, 1) and (0, 2) weight 1, (1, 2) 0.
    first = np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    second = np.array([[1.0, 0, 0], [0.5, 0.5, 0], [1.0, 0, 0]])
    episodes = [(np.array([0, 1, 2]), first[None]), (np.array([2, 1, 3]), second[None])]
    parts = [episode_edges(items, attention, np.arange(3)[None], None) for items, attention in episodes]
    i, j, w = (np.concatenate(column) for column in zip(*parts))
    assert sorted(zip(i.tolist(), j.tolist(), np.round(w, 6).tolist())) == [
        (0, 1, 1.0), (0, 2, 0.0), (1, 2, 0.0), (1, 2, 1.0), (1, 3, 0.0), (2, 3, 1.0)]
    graph = affinity_graph(i, j, w, 4).toarray()
    expected = np.zeros((4, 4))
    expected[0, 1] = 1.0
    expected[1, 2] = 0.5  # met twice: 0 then 1
    expected[2, 3] = 1.0  # rows 1 and 3 met once, at weight 0
    assert np.allclose(graph, expected + expected.T)


def test_spectral_clusters_of_a_sparse_two_block_graph_and_k_auto_by_eigengap():
    X = two_blobs(60)
    graph = knn_graph(*nearest_neighbours(X, 8))
    truth = np.repeat([0, 1], 30)
    labels, eigenvalues = spectral_clusters(graph, "auto", (2, 6), seed=0)
    assert adjusted_rand_score(truth, labels) == 1.0
    assert eigenvalues[1] < 0.05 < eigenvalues[2]  # two blocks: two eigenvalues near zero
    assert np.array_equal(labels, spectral_clusters(graph, 2, (2, 6), seed=0)[0])


def test_fusion_weights_the_two_graphs_by_their_mean_row_sums():
    X = two_blobs(20)
    embedding = knn_graph(*nearest_neighbours(X, 4))
    attention = embedding * 10.0
    assert np.allclose(fuse(attention, embedding, 0.5).toarray(), fuse(embedding, embedding, 0.3).toarray())
    assert fuse(attention, embedding, 0.0) is attention and fuse(attention, embedding, 1.0) is embedding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = tmp_path_factory.mktemp("attention")
    texts = [text for pair in zip(PETS, MARKETS) for text in pair] + ["   "]  # interleaved, and one reject
    labels = [label for _ in PETS for label in ("pets", "markets")] + ["pets"]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(base / "corpus.csv", index=False)
    return base / "corpus.csv"


TINY = ["clusterer=attention", "clusterer.k=2", "clusterer.episode_size=8", "clusterer.passes=2",
        "clusterer.orders=1", "clusterer.embedding_weight=0", "labeler=none", "report.enabled=false",
        "llm.pool.actors=1", "data.label_column=label", "ray.progress_bars=false"]


def cluster(ray_address, corpus, out, *extra):
    result = run_icc("cluster", f"ray.address={ray_address}", f"data.path={corpus}", f"output.dir={out}", *TINY,
                     *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return pd.read_parquet(out / "assignments.parquet")


def test_the_preset_assigns_every_row_writes_edges_and_repeats_for_a_seed(ray_address, corpus, tmp_path):
    first = cluster(ray_address, corpus, tmp_path / "a")
    assert len(first) == 25 and (first["cluster"].iloc[:24] >= 0).all() and first["cluster"].iloc[24] == -1
    edges = pq.read_table(tmp_path / "a" / "attention_edges.parquet").to_pandas()
    episodes = pq.read_table(tmp_path / "a" / "attention_episodes.parquet").to_pandas()
    assert len(episodes) == 6 and sorted(np.concatenate(episodes["items"]).tolist()) == sorted(list(range(24)) * 2)
    assert len(edges) == sum(n * (n - 1) // 2 for n in episodes["items"].map(len))
    assert (edges["i"] < edges["j"]).all() and np.isfinite(edges["weight"]).all() and (edges["weight"] >= 0).all()
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    graph = metrics["attention_graph"]
    assert graph["episodes"] == 6 and graph["edges"] == len(edges) and graph["k"] == 2
    # layer=auto with labels: the best of every third layer on 4 labelled validation episodes
    scored = {int(layer): ari for layer, ari in graph["validation_ari_by_layer"].items()}
    assert graph["layer_chosen_by"] == "mean ARI on 4 labelled validation episodes (label-steered)"
    assert sorted(scored) == list(range(2, 30, 3)) and graph["layer"] == max(scored, key=scored.get)
    assert metrics["k"] == 2 and pq.read_table(tmp_path / "a" / "clusters.parquet").num_rows == 2
    again = cluster(ray_address, corpus, tmp_path / "b")
    assert again["cluster"].tolist() == first["cluster"].tolist()
    assert pq.read_table(tmp_path / "b" / "attention_edges.parquet").equals(
        pq.read_table(tmp_path / "a" / "attention_edges.parquet"))


def test_fused_with_the_embedding_graph_it_separates_two_obvious_topics_unlabelled(ray_address, corpus, tmp_path):
    assigned = cluster(ray_address, corpus, tmp_path / "fused", "clusterer.embedding_weight=0.5",
                       "data.label_column=null")
    truth = np.tile([0, 1], 12)
    assert adjusted_rand_score(truth, assigned["cluster"].iloc[:24]) == 1.0
    graph = json.loads((tmp_path / "fused" / "metrics.json").read_text())["attention_graph"]
    assert graph["layer"] == 23  # the llama family's default: no labels to choose it on
    assert graph["layer_chosen_by"] == "default for the llama family (no labels to choose it on)"


def test_a_run_killed_while_prompting_resumes_without_prompting_the_done_episodes_again(ray_address, corpus,
                                                                                           tmp_path):
    out = tmp_path / "run"
    fixed = ["clusterer.episodes_per_batch=1", "clusterer.layer=23"]  # a configured layer: no validation episodes
    args = ["cluster", f"ray.address={ray_address}", f"data.path={corpus}", f"output.dir={out}", *TINY, *fixed]
    parts = out / "attention_episodes.parquet"
    job = subprocess.Popen([BIN / "icc", *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not list(parts.glob("part-*.parquet")):  # the first batch prompted
            assert job.poll() is None and time.monotonic() < deadline, "the run ended or hung before a batch was done"
            time.sleep(0.05)
        job.send_signal(signal.SIGKILL)
    finally:
        job.kill()
        job.wait()
    done = {path.name: path.stat().st_mtime_ns for path in parts.glob("part-*.parquet")}
    assert 1 <= len(done) < 6
    assigned = cluster(ray_address, corpus, out, *fixed)
    assert len(assigned) == 25 and (assigned["cluster"].iloc[:24] >= 0).all()
    assert {name: (parts / name).stat().st_mtime_ns for name in done} == done  # not prompted again
    assert len(list(parts.glob("part-*.parquet"))) == 6 and not list(parts.glob("input-*"))
    episodes = pq.read_table(parts).to_pandas()
    assert sorted(episodes["episode"]) == list(range(6))


@pytest.mark.parametrize("override, message", [
    ("clusterer.episode_size=1", "episode_size must be at least 2"),
    ("clusterer.embedding_weight=2", "embedding_weight must be in [0, 1]"),
    ("clusterer.fit_fraction=0.5", "clusters every row"),
    ("clusterer.layer=x", "layer must be auto or an integer"),
    ("clusterer.layers=foo", "attention layers must be 'all', 'every_<s>' or a list of integers"),
    ("clusterer.max_text_tokens=0", "clusterer.max_text_tokens"),
    ("clusterer.k=9", "episode_size (8) must be at least the k a prompt asks for (9)"),
])
def test_bad_settings_are_one_line_and_exit_2(tmp_path, corpus, override, message):
    result = run_icc("cluster", f"data.path={corpus}", f"output.dir={tmp_path}", *TINY, override)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_texts_are_cut_after_their_first_tokens():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("SmolLM2-135M-Instruct"))
    long, short = "The central bank raised interest rates again on Tuesday.", "Stocks fell."
    cut, kept = truncate_texts(tokenizer, [long, short], 4)
    assert long.startswith(cut) and len(tokenizer(cut, add_special_tokens=False)["input_ids"]) == 4
    assert kept == short and truncate_texts(tokenizer, [long], None) == [long]


def test_above_the_exact_threshold_an_ivf_index_finds_nearly_the_exact_neighbours():
    rng = np.random.default_rng(0)  # 3,000 texts' vectors around 30 topics
    vectors = (rng.normal(size=(30, 16))[rng.integers(30, size=3000)] + 0.3 * rng.normal(size=(3000, 16)))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    exact, _ = nearest_neighbours(vectors, 10)
    approximate, similarity = nearest_neighbours(vectors, 10, exact_rows=1000)
    assert isinstance(knn_index(vectors, exact_rows=1000), faiss.IndexIVFFlat)
    assert approximate.shape == (3000, 10) and not (approximate == np.arange(3000)[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert recall > 0.9 and (np.diff(similarity, axis=1) <= 1e-6).all()
