"""Corpus-scale in-context clustering (`icc cluster clusterer=attention`): an LLM's attention between
the texts of many small episodes, gathered into one sparse graph over the corpus and clustered spectrally.

Stages, each O(N) or O(edges) for N embedded rows (never O(N^2)):

0. `choose_corpus_layer`: the decoder layer read. `layer: auto` with labels (data.label_column):
   the candidate layer whose attention best clusters a few labelled validation episodes (mean ARI
   of per-episode attention spectral clustering, `icc.incontext.layers.choose_layer`): a
   label-steered choice; the labels touch nothing else. Without labels: `default_layer`.
1. `corpus_episodes`: every row in `passes` episodes of about `episode_size` rows: a row, its nearest
   unplaced neighbours (faiss) for `neighbours` of the episode, the rest rows from elsewhere, shuffled.
2. `prompt_episodes`: the prefill (no generation) of each episode's text-clustering prompt on a Ray
   Data pool of LLM actors (`icc.incontext.runner.EpisodeRunner`): the item attention of one layer
   in `orders` prompt orders, written to attention_episodes.parquet.
3. `episode_edges` / `affinity_graph`: each episode's item affinity, position taken out
   (`order_affinity` over the run's `position_baseline`), as edges (i, j, weight), i < j, written
   to attention_edges.parquet and summed into one sparse (N, N) affinity divided by how often each
   pair met; `fuse` mixes in the embedding kNN graph (`embedding_weight`).
4. `spectral_clusters`: k-means on the leading eigenvectors of the normalised affinity (scipy
   eigsh); k=auto by the largest eigengap in `k_range`.

`fit_attention` runs them over an embedded corpus and returns a `Fitted` (centroids: the mean vector
of each cluster) that `assign_shards` writes like any other clusterer's.
"""

import json
import numbers
import os
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans as SKMeans

from icc.checks import check_non_negative, check_positive_int
from icc.cluster import CONFIG_KEYS
from icc.cluster.base import KClusterer, check_k, cluster_means
from icc.config import build
from icc.corpus.rundir import part_name, renew
from icc.corpus.sharded import Fitted
from icc.corpus.shards import Shards, read_vectors
from icc.errors import ICCError
from icc.files import read_json, write_json
from icc.incontext.attention import order_affinity, position_baseline
from icc.incontext.episodes import SCHEMA
from icc.incontext.layers import check_layers, choose_layer
from icc.incontext.runner import EpisodeRunner, attention_column, pool_size, run_episodes
from icc.models.hub import resolve_model
from icc.ray_runtime import actor_pool, get

EPISODES = "attention_episodes.parquet"  # one row per episode: episode, items, orders (R, n), attention (R, n, n)
EDGES = "attention_edges.parquet"  # one row per (episode, pair): episode, i, j, weight (embedded row numbers, i < j)
EPISODES_RECORD = "_episodes.json"  # in EPISODES: what the episodes were made from, and their batches
# The layer read without labels, as a share of the decoder's depth, by model family (config.model_type):
# SmolLM2-135M (llama) reads layer 23 of 30 (icc incontext's measurement); other families are not measured.
DEFAULT_DEPTH = {"llama": 23 / 30}
DEFAULT_DEPTH_OTHERS = 0.75
EXACT_KNN_ROWS = 200_000  # up to this many rows the kNN search is exact (faiss flat: O(N^2 d)); above, IVF
IVF_PROBES = 32  # IVF lists searched per query, of about 4 sqrt(N) (faiss IndexIVFFlat)
VALIDATION_LABELS = 4  # most labels in one validation episode, so that its ARI has enough items per cluster
EDGE_SCHEMA = pa.schema([("episode", pa.int64()), ("i", pa.int64()), ("j", pa.int64()), ("weight", pa.float32())])


class AttentionClusterer(KClusterer):
    """The settings of `icc cluster clusterer=attention` (see icc/conf/clusterer/attention.yaml);
    `fit_attention` fits it on a corpus. It clusters every embedded row (no fit sample); after the
    fit, `cluster_centers_` are the clusters' mean vectors and new points go to the nearest one.

    passes: episodes each row is in; episode_size: rows per episode (the last of a pass may hold up
    to episode_size * 1.5); neighbours: share of an episode that is the first row's nearest neighbours;
    layer: decoder layer read (negative: from the last), or "auto" (`choose_corpus_layer`);
    layers: the candidates of auto ("all", "every_<s>" or a list, as `icc incontext` names them);
    validation_episodes: labelled episodes that auto scores them on; max_text_tokens: each text's
    first tokens that a prompt shows (None: all); orders: prompts per episode (the first in the
    episode's shuffled order, then random ones); condition: "by sentiment" etc., or None;
    embedding_weight: share of the fused graph that is the embedding kNN graph of `n_neighbors`
    neighbours (0: attention alone, 1: embeddings alone); episodes_per_batch: episodes per prefill.
    """

    def __init__(self, n_clusters=8, *, passes=3, episode_size=30, neighbours=0.5, layer="auto", layers="every_3",
                 validation_episodes=4, max_text_tokens=48, orders=1, condition=None, embedding_weight=0.9,
                 n_neighbors=10, episodes_per_batch=4, random_state=0,
                 k_range=(2, 20), auto_sample=5000, fit_fraction=1.0, max_fit_rows=None, assign="centroid", knn_k=10):
        super().__init__(n_clusters, k_range=k_range, auto_sample=auto_sample, random_state=random_state,
                         fit_fraction=fit_fraction, max_fit_rows=max_fit_rows, assign=assign, knn_k=knn_k)
        self.passes = passes
        self.episode_size = episode_size
        self.neighbours = neighbours
        self.layer = layer
        self.layers = layers
        self.validation_episodes = validation_episodes
        self.max_text_tokens = max_text_tokens
        self.orders = orders
        self.condition = condition
        self.embedding_weight = embedding_weight
        self.n_neighbors = n_neighbors
        self.episodes_per_batch = episodes_per_batch

    def check_params(self) -> None:
        super().check_params()
        check_positive_int(self.passes, "clusterer.passes")
        check_positive_int(self.orders, "clusterer.orders")
        check_positive_int(self.n_neighbors, "clusterer.n_neighbors")
        check_positive_int(self.episodes_per_batch, "clusterer.episodes_per_batch")
        check_positive_int(self.max_text_tokens, "clusterer.max_text_tokens", allow_none=True)
        if check_positive_int(self.episode_size, "clusterer.episode_size") < 2:
            raise ICCError(f"clusterer.episode_size must be at least 2, got {self.episode_size}")
        for name in ("neighbours", "embedding_weight"):
            value = getattr(self, name)
            if check_non_negative(value, f"clusterer.{name}") > 1:
                raise ICCError(f"clusterer.{name} must be in [0, 1], got {value!r}")
        check_positive_int(self.validation_episodes, "clusterer.validation_episodes")
        if self.layer != "auto" and (isinstance(self.layer, bool) or not isinstance(self.layer, numbers.Integral)):
            raise ICCError(f"clusterer.layer must be auto or an integer (negative: from the last layer), "
                           f"got {self.layer!r}")
        check_layers(self.layers, 4096)  # the form of clusterer.layers (any depth): the model's is checked at fit
        if self.condition is not None and not isinstance(self.condition, str):
            raise ICCError(f"clusterer.condition must be a string or null, got {self.condition!r}")
        if self.fit_fraction != 1 or self.max_fit_rows is not None:
            raise ICCError("clusterer=attention clusters every row: fit_fraction must be 1 and max_fit_rows null")
        if self.assign != "centroid":
            raise ICCError("clusterer=attention assigns new points to the nearest centroid: assign must be centroid")
        if self.prompt_k() > self.episode_size:
            raise ICCError(f"clusterer.episode_size ({self.episode_size}) must be at least the k a prompt asks for "
                           f"({self.prompt_k()})")

    def prompt_k(self) -> int:
        """The k each episode's prompt asks for: k, or with k=auto the smallest of k_range."""
        return self.k_range[0] if self.n_clusters == "auto" else self.n_clusters


def make_attention_clusterer(name: str, **params) -> AttentionClusterer:
    """The clusterer from its config keys (`k` for n_clusters, `seed` for random_state), checked."""
    clusterer = build({"attention": AttentionClusterer}, "clusterer", name,
                      **{CONFIG_KEYS.get(key, key): value for key, value in params.items()})
    clusterer.check_params()
    return clusterer


def knn_index(vectors: np.ndarray, exact_rows: int = EXACT_KNN_ROWS, seed: int = 0):
    """A faiss inner-product index holding the float32 unit vectors (n, d): exact (IndexFlatIP) up
    to `exact_rows` rows; above, IndexIVFFlat over about 4 sqrt(n) lists, trained by k-means on at
    most 256 vectors a list (drawn from `seed`), searching IVF_PROBES of them (approximate,
    O(n sqrt(n) d) for all rows instead of O(n^2 d))."""
    n, d = vectors.shape
    if n <= exact_rows:
        index = faiss.IndexFlatIP(d)
    else:
        lists = max(1, int(4 * np.sqrt(n)))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        train = np.random.default_rng(seed).choice(n, min(n, 256 * lists), replace=False)
        index.train(vectors[np.sort(train)])
        index.nprobe = min(IVF_PROBES, lists)
    index.add(vectors)
    return index


def nearest_neighbours(vectors: np.ndarray, count: int, exact_rows: int = EXACT_KNN_ROWS
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The `count` nearest other rows of each unit vector (n, d) by inner product (`knn_index`):
    indices (n, count) int64 (-1 past the n - 1 others, or where IVF found fewer) and
    similarities (n, count) float32, nearest first."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    similarity, found = knn_index(vectors, exact_rows).search(vectors, min(count + 1, len(vectors)))
    rows = np.arange(len(vectors))[:, None]
    others = (found != rows) & (found >= 0)  # drop each row itself (not always first among duplicates)
    order = np.argsort(~others, axis=1, kind="stable")[:, :count]
    found, similarity = np.take_along_axis(found, order, 1), np.take_along_axis(similarity, order, 1)
    keep = np.take_along_axis(others, order, 1)
    pad = count - found.shape[1]
    found = np.pad(np.where(keep, found, -1), ((0, 0), (0, pad)), constant_values=-1)
    return found.astype(np.int64), np.pad(np.where(keep, similarity, 0), ((0, 0), (0, pad))).astype(np.float32)


def corpus_episodes(neighbours: np.ndarray, passes: int, size: int, share: float, seed: int) -> list[np.ndarray]:
    """Episodes over n rows: `passes` passes, each placing every row in exactly one episode.

    neighbours: (n, m) each row's nearest rows, nearest first (-1: none), from `nearest_neighbours`.
    A pass walks the rows in a random order: the next unplaced row starts an episode, its nearest
    unplaced neighbours fill round(share * (size - 1)) places, the next unplaced rows of the walk
    fill the rest (rows from elsewhere, for contrast and a connected graph). A pass's last episode
    joins the one before when it would hold fewer than size / 2 rows. Each episode's rows are
    shuffled, so that neither neighbours nor the first row sit at fixed prompt positions.
    Returns the episodes as int64 arrays of row numbers, pass by pass.
    """
    n = len(neighbours)
    rng = np.random.default_rng(seed)
    near = int(round(share * (size - 1)))
    episodes = []
    for _ in range(passes):
        walk, placed, cursor, pass_episodes = rng.permutation(n), np.zeros(n, bool), 0, []
        while cursor < n:
            if placed[walk[cursor]]:
                cursor += 1
                continue
            first = walk[cursor]
            members = [first]
            placed[first] = True
            for j in neighbours[first]:
                if len(members) > near:
                    break
                if j >= 0 and not placed[j]:
                    members.append(j)
                    placed[j] = True
            while len(members) < size and cursor < n:
                j = walk[cursor]
                if not placed[j]:
                    members.append(j)
                    placed[j] = True
                cursor += 1
            pass_episodes.append(np.asarray(members, dtype=np.int64))
        if len(pass_episodes) > 1 and len(pass_episodes[-1]) < size / 2:
            pass_episodes[-2:] = [np.concatenate(pass_episodes[-2:])]
        episodes += [rng.permutation(e) for e in pass_episodes]
    return episodes


def episode_edges(items: np.ndarray, attention: np.ndarray, orders: np.ndarray, baseline: np.ndarray | None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode's weighted edges: row numbers (i, j), i < j, and weights (m,) float64.

    items: (n,) the row at each item; attention: (R, n, n) its item attention by prompt position in
    R orders (n, n for R = 1); orders: (R, n) the item at each position; baseline: `position_baseline`.
    The weights are `order_affinity`: mean attention of i and j to each other, divided by what
    their positions draw, on the scale of one per item.
    """
    attention = np.asarray(attention, dtype=np.float64).reshape(-1, len(items), len(items))
    affinity = order_affinity(attention, np.asarray(orders).reshape(len(attention), -1), baseline)
    upper_i, upper_j = np.triu_indices(len(items), k=1)
    rows_i, rows_j = items[upper_i], items[upper_j]
    return np.minimum(rows_i, rows_j), np.maximum(rows_i, rows_j), affinity[upper_i, upper_j]


def affinity_graph(i: np.ndarray, j: np.ndarray, weight: np.ndarray, n: int) -> sp.csr_matrix:
    """The symmetric (n, n) affinity of edges (i, j, weight) (i != j; a pair may repeat): each
    pair's mean weight over the edges that join it (the sum divided by how often the pair met)."""
    both_i, both_j = np.concatenate([i, j]), np.concatenate([j, i])
    sums = sp.coo_matrix((np.concatenate([weight, weight]).astype(np.float64), (both_i, both_j)), shape=(n, n)).tocsr()
    counts = sp.coo_matrix((np.ones(len(both_i)), (both_i, both_j)), shape=(n, n)).tocsr()
    sums.sum_duplicates()
    counts.sum_duplicates()
    mean = sums.copy()
    mean.data = sums.data / counts.data  # same sparsity pattern, both sorted by (row, column)
    return mean


def knn_graph(neighbours: np.ndarray, similarity: np.ndarray) -> sp.csr_matrix:
    """The symmetric (n, n) embedding kNN graph: weight max(similarity, 0), the larger of the two
    directions where both rows list each other."""
    n = len(neighbours)
    rows = np.repeat(np.arange(n), neighbours.shape[1])
    cols, weights = neighbours.ravel(), np.clip(similarity.ravel(), 0, None)
    keep = cols >= 0
    graph = sp.coo_matrix((weights[keep], (rows[keep], cols[keep])), shape=(n, n)).tocsr()
    return graph.maximum(graph.T).tocsr()


def fuse(attention: sp.csr_matrix, embedding: sp.csr_matrix, weight: float) -> sp.csr_matrix:
    """(1 - weight) * attention + weight * embedding, each first divided by its mean row sum, so that
    `weight` is the embedding graph's share of every row's weight on average."""
    def scaled(graph: sp.csr_matrix) -> sp.csr_matrix:
        mean = graph.sum() / graph.shape[0]
        return graph / mean if mean > 0 else graph

    if weight == 0:
        return attention
    if weight == 1:
        return embedding
    return ((1 - weight) * scaled(attention) + weight * scaled(embedding)).tocsr()


def spectral_clusters(affinity: sp.csr_matrix, k, k_range, seed: int) -> tuple[np.ndarray, list[float]]:
    """Labels (n,) int64 in [0, k) and the smallest eigenvalues of the normalised Laplacian of a
    symmetric non-negative sparse affinity (n, n) (its diagonal is ignored).

    The leading eigenvectors of D^-1/2 A D^-1/2 (scipy eigsh: matrix-vector products, O(edges) each),
    rows scaled to unit length, clustered by k-means (Ng, Jordan and Weiss). k="auto": the k in
    `k_range` with the largest gap between the k-th and (k+1)-th eigenvalue. Rows without edges get
    a self-loop, so that they stay finite (and end wherever k-means puts the zero vector).
    """
    n = affinity.shape[0]
    affinity = affinity.tocsr(copy=True)
    affinity.setdiag(0)
    affinity.eliminate_zeros()
    largest = k_range[1] if k == "auto" else k
    if largest >= n:
        raise ICCError(f"k must be below the number of texts ({n}), got {largest}")
    degree = np.asarray(affinity.sum(axis=1)).ravel()
    affinity = affinity + sp.diags((degree == 0).astype(np.float64))
    scale = sp.diags(1 / np.sqrt(np.where(degree > 0, degree, 1.0)))
    normalised = scale @ affinity @ scale
    count = min(largest + 1, n - 1)
    v0 = np.random.default_rng(seed).random(n)
    values, vectors = eigsh(normalised, k=count, which="LA", v0=v0, tol=1e-8, maxiter=max(1000, 20 * n))
    order = np.argsort(-values)
    eigenvalues = (1 - values[order]).tolist()
    if k == "auto":
        low = max(2, k_range[0])
        k = max(range(low, min(largest, count - 1) + 1), key=lambda c: eigenvalues[c] - eigenvalues[c - 1])
    embedding = vectors[:, order[:k]]
    embedding /= np.linalg.norm(embedding, axis=1, keepdims=True).clip(min=1e-12)
    labels = SKMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(embedding)
    return labels.astype(np.int64), eigenvalues


def fit_attention(clusterer: AttentionClusterer, shards: Shards, load: dict, pool: dict) -> Fitted:
    """Fit `clusterer` on every embedded row of `shards` (stages 1-4 of the module docstring),
    writing EPISODES and EDGES into shards.dir.

    load: what loads the LLM (the `llm` config's top keys: `model`, dtype, trust_remote_code, ...);
    pool: its actors (`llm.pool`: actors, num_gpus, cpus_per_actor, num_threads).
    Resume: EPISODES/_episodes.json, written once the episodes are, records what they were made
    from (these settings and the embedded corpus); a re-run with the same ones prompts only the
    batches that have no part-*.parquet yet (one is written, atomically, as each batch comes back).
    `clusterer.graph_` records the graph for metrics.json: layer (and how it was chosen), episodes,
    edges, pairs, the k chosen, eigenvalues and LLM seconds (of this run's batches). A resumed run
    prompts its validation episodes again (the same ones: the same layer).
    """
    if clusterer.n_clusters != "auto":
        check_k(clusterer.n_clusters, shards.n_embedded)
    layer, choice = choose_corpus_layer(clusterer, shards, load, pool)
    made_from = json.loads(json.dumps({"clusterer": clusterer.get_params(), "load": load, "layer": layer,
                                       "corpus": shards.key, "rows": shards.embedded}, default=str))
    record = shards.dir / EPISODES / EPISODES_RECORD
    done = record.is_file() and read_json(record)["made_from"] == made_from
    renew(shards.dir, *([] if done else [EPISODES]), EDGES)
    (shards.dir / EDGES).mkdir()
    if not done:
        (shards.dir / EPISODES).mkdir()
        batches = get(_write_episodes.remote(clusterer, shards))
        write_json(record, {"made_from": made_from, "batches": batches})
    batches = read_json(record)["batches"]
    seconds = prompt_episodes(shards.dir / EPISODES, batches, clusterer, layer, load, pool)
    fitted, graph = get(_cluster_graph.remote(clusterer, shards))
    fitted.clusterer.graph_ = {"layer": layer, **choice, "llm_seconds": round(seconds, 2), **graph}
    return fitted


def default_layer(model_type: str, count: int) -> int:
    """The layer read without labels for a decoder of `count` layers of family `model_type`
    (DEFAULT_DEPTH of its depth, DEFAULT_DEPTH_OTHERS for a family not measured)."""
    return min(count - 1, round(DEFAULT_DEPTH.get(model_type, DEFAULT_DEPTH_OTHERS) * count))


def choose_corpus_layer(clusterer: AttentionClusterer, shards: Shards, load: dict, pool: dict) -> tuple[int, dict]:
    """The decoder layer whose attention the corpus episodes are read at, and how it was chosen
    ({"layer_chosen_by": ..., and for validation "validation_ari_by_layer": {layer: mean ARI}}).

    An integer `clusterer.layer` is used as is. "auto" with labels (data.label_column) and at least
    two of them: each of `clusterer.validation_episodes` labelled episodes (`_validation_episodes`)
    is prompted once per order on a pool of LLM actors (`run_episodes`: a prefill that reads every
    candidate of `clusterer.layers`), and the layer whose attention spectral clustering has the
    best mean ARI against their labels is read (`choose_layer`, the positional baseline over the
    validation episodes). This is label-steered: the labels choose the layer and nothing else; the
    corpus is then clustered without them. "auto" without labels: `default_layer`.
    """
    from icc.incontext.runner import model_config

    config = model_config(load["model"], load.get("trust_remote_code", False))
    count = config.get_text_config().num_hidden_layers
    if clusterer.layer != "auto":
        return check_layers([clusterer.layer], count)[0], {"layer_chosen_by": "config"}
    candidates = check_layers(clusterer.layers, count)
    table = get(_validation_episodes.remote(clusterer, shards, load)) if shards.has_labels else None
    if table is None or table.num_rows == 0:
        return default_layer(config.model_type, count), {
            "layer_chosen_by": f"default for the {config.model_type} family (no labels to choose it on)"}
    generate = {"max_new_tokens": 1, "new_tokens_per_item": None, "constrained": False,
                "episodes_per_batch": clusterer.episodes_per_batch}
    rows = run_episodes(table, load, generate, pool, candidates, clusterer.orders, clusterer.random_state)
    _, summary = choose_layer([], rows, candidates, "auto", clusterer.random_state, baseline=True)
    scored = summary["validation_ari_by_layer"]
    return summary["layer"], {
        "layer_chosen_by": f"mean ARI on {len(rows)} labelled validation episodes (label-steered)",
        "validation_ari_by_layer": {str(layer): round(ari, 4) for layer, ari in scored.items()},
    }


@ray.remote(num_cpus=1)
def _validation_episodes(clusterer: AttentionClusterer, shards: Shards, load: dict) -> pa.Table:
    """Labelled episodes (`icc.incontext.episodes.SCHEMA`, split "validation": read, not answered):
    each of up to `episode_size` embedded rows drawn at random among those of at most
    VALIDATION_LABELS of the corpus's labels (drawn at random too), texts cut to max_text_tokens,
    `labels` their labels numbered in the episode, `k` how many there are. Empty with fewer than
    two labels."""
    from transformers import AutoTokenizer

    texts = np.concatenate([_embedded(shards, s, "text") for s in range(len(shards.rows))])
    labels = np.concatenate([_embedded(shards, s, "label") for s in range(len(shards.rows))])
    texts, labels = texts[labels != None], labels[labels != None].astype(str)  # noqa: E711 (element-wise)
    names = np.unique(labels)
    rng = np.random.default_rng(clusterer.random_state)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(load["model"]),
                                              trust_remote_code=load.get("trust_remote_code", False))
    rows = []
    for episode in range(clusterer.validation_episodes if len(names) > 1 else 0):
        chosen = rng.choice(names, min(VALIDATION_LABELS, len(names)), replace=False)
        (pool,) = np.nonzero(np.isin(labels, chosen))
        items = rng.choice(pool, min(clusterer.episode_size, len(pool)), replace=False)
        _, numbered = np.unique(labels[items], return_inverse=True)
        rows.append({"episode": episode, "split": "validation", "seed": episode, "k": int(numbered.max()) + 1,
                     "n": len(items), "texts": truncate_texts(tokenizer, texts[items].tolist(),
                                                              clusterer.max_text_tokens),
                     "labels": numbered.tolist(), "condition": clusterer.condition})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


@ray.remote(num_cpus=1)
def _write_episodes(clusterer: AttentionClusterer, shards: Shards) -> int:
    """Stage 1 in a task: writes the episodes with their texts, `episodes_per_batch` a file, to
    shards.dir/EPISODES/input-*.parquet; returns the number of files."""
    vectors = _vectors(shards)
    texts = np.concatenate([_embedded(shards, s, "text") for s in range(len(shards.rows))])
    near = int(round(clusterer.neighbours * (clusterer.episode_size - 1)))
    neighbours, _ = nearest_neighbours(vectors, max(clusterer.n_neighbors, 2 * near))
    episodes = corpus_episodes(neighbours, clusterer.passes, clusterer.episode_size, clusterer.neighbours,
                               clusterer.random_state)
    size = clusterer.episodes_per_batch
    for batch, start in enumerate(range(0, len(episodes), size)):
        rows = [{"episode": start + e, "split": "corpus", "seed": start + e, "k": clusterer.prompt_k(),
                 "n": len(items), "condition": clusterer.condition, "items": items.tolist(),
                 "texts": texts[items].tolist()} for e, items in enumerate(episodes[start:start + size])]
        pq.write_table(pa.Table.from_pylist(rows), shards.dir / EPISODES / f"input-{batch:05d}.parquet")
    return -(-len(episodes) // size)


def _vectors(shards: Shards) -> np.ndarray:
    return np.concatenate([read_vectors(shards, s) for s in range(len(shards.rows))])


def _embedded(shards: Shards, shard: int, column: str) -> np.ndarray:
    """A column (text, label) of the shard's embedded rows, as an object array."""
    rows = pq.read_table(shards.texts(shard), columns=[column, "reject"])
    embedded = rows["reject"].to_numpy(zero_copy_only=False) == ""
    return rows[column].to_numpy(zero_copy_only=False)[embedded]


def truncate_texts(tokenizer, texts: list[str], max_tokens: int | None) -> list[str]:
    """Each text cut after its first `max_tokens` tokens of `tokenizer` (a fast one; None: as is)."""
    if max_tokens is None:
        return texts
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [text[:spans[max_tokens - 1][1]] if len(spans) > max_tokens else text for text, spans in zip(texts, offsets)]


class EpisodeAttention:
    """Ray Data actor: an `EpisodeRunner` that reads one layer's attention and answers nothing (a
    prefill per prompt order, stopped after that layer), each text cut to `max_text_tokens`. For
    each `input` file of a batch (episodes as `_write_episodes` writes them) it writes the
    episodes' episode, items, orders (R, n) and attention (R, n, n) to the file's part-*.parquet
    (atomically, so a killed run leaves whole parts only); returns the inputs with their LLM
    `seconds`."""

    def __init__(self, layer: int, max_text_tokens: int | None, **runner):
        self.runner = EpisodeRunner(layers=[layer], **runner)
        self.column = attention_column(layer)
        self.max_text_tokens = max_text_tokens

    def __call__(self, batch: dict) -> dict:
        seconds = []
        for path in map(Path, batch["input"]):
            start = time.perf_counter()
            episodes = pq.read_table(path)
            texts = [truncate_texts(self.runner.tokenizer, t, self.max_text_tokens)
                     for t in episodes["texts"].to_pylist()]
            episodes = episodes.set_column(episodes.schema.get_field_index("texts"), "texts", pa.array(texts))
            read = self.runner(episodes)
            seconds.append(time.perf_counter() - start)
            part = pa.table({"episode": read["episode"], "items": read["items"], "orders": read["attention_orders"],
                             "attention": read[self.column]})
            target = path.with_name(path.name.replace("input-", "part-"))
            pq.write_table(part, target.with_name(f".{target.name}.tmp"))
            os.replace(target.with_name(f".{target.name}.tmp"), target)
        return {"input": batch["input"], "seconds": np.asarray(seconds)}


def prompt_episodes(directory: Path, batches: int, clusterer: AttentionClusterer, layer: int, load: dict,
                    pool: dict) -> float:
    """Stage 2: the episodes of directory/input-<b>.parquet, b < batches, that have no
    part-<b>.parquet yet, through a pool of `EpisodeAttention` actors, a file per batch (each
    writes its part as it is done); then removes the inputs. Returns the actors' LLM seconds
    summed (model loading excluded)."""
    import ray.data

    todo = [str(directory / f"input-{b:05d}.parquet") for b in range(batches)
            if not (directory / f"part-{b:05d}.parquet").is_file()]
    seconds = 0.0
    if todo:
        actors, num_threads = pool_size(pool, len(todo))
        runner = {**load, "num_threads": num_threads, "layer": layer, "orders": clusterer.orders,
                  "seed": clusterer.random_state, "max_text_tokens": clusterer.max_text_tokens}
        ds = ray.data.from_items([{"input": path} for path in todo], override_num_blocks=len(todo)).map_batches(
            EpisodeAttention, fn_constructor_kwargs=runner, batch_size=1,
            **actor_pool(actors, pool["num_gpus"], pool["cpus_per_actor"]),
        )
        seconds = sum(float(batch["seconds"].sum()) for batch in ds.iter_batches(batch_size=None))
    for b in range(batches):
        (directory / f"input-{b:05d}.parquet").unlink(missing_ok=True)
    return seconds


@ray.remote(num_cpus=1)
def _cluster_graph(clusterer: AttentionClusterer, shards: Shards):
    """Stages 3-4 in a task: reads EPISODES, writes EDGES, clusters; returns (Fitted, graph record)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(os.cpu_count())
    table = pa.concat_tables(pq.read_table(p) for p in sorted((shards.dir / EPISODES).glob("part-*.parquet")))
    table = table.sort_by("episode")
    attention = [np.asarray(a, dtype=np.float64) for a in table["attention"].to_pylist()]
    baseline = position_baseline(attention)
    parts = []
    for episode, items, orders, matrices in zip(table["episode"].to_pylist(), table["items"].to_pylist(),
                                                table["orders"].to_pylist(), attention):
        i, j, w = episode_edges(np.asarray(items), matrices, np.asarray(orders), baseline)
        parts.append(pa.table({"episode": np.full(len(i), episode), "i": i, "j": j, "weight": w.astype(np.float32)},
                              schema=EDGE_SCHEMA))
    edges = pa.concat_tables(parts)
    for start in range(0, edges.num_rows, 1 << 20):
        pq.write_table(edges.slice(start, 1 << 20), shards.dir / EDGES / part_name(start >> 20))
    n = shards.n_embedded
    graph = affinity_graph(edges["i"].to_numpy(), edges["j"].to_numpy(), edges["weight"].to_numpy(), n)
    vectors = _vectors(shards)
    fused = fuse(graph, knn_graph(*nearest_neighbours(vectors, clusterer.n_neighbors)), clusterer.embedding_weight)
    labels, eigenvalues = spectral_clusters(fused, clusterer.n_clusters, clusterer.k_range, clusterer.random_state)
    clusterer.labels_ = None
    clusterer.cluster_centers_ = cluster_means(vectors, labels)
    clusterer.fit_rows_, clusterer.n_features_in_ = vectors.shape
    clusterer.sample_, clusterer.k_scores_ = None, None
    record = {
        "episodes": table.num_rows, "edges": edges.num_rows, "edges_per_text": round(edges.num_rows / n, 2),
        "pairs": graph.nnz // 2, "fused_pairs": fused.nnz // 2, "embedding_weight": clusterer.embedding_weight,
        "k": int(labels.max()) + 1, "eigenvalues": [round(v, 6) for v in eigenvalues],
    }
    sample_labels = np.split(labels, np.cumsum(shards.embedded)[:-1])
    return Fitted(clusterer, 1.0, sample_labels, False), record
