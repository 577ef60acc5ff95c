"""Cluster names: c-TF-IDF keywords re-ranked by embedding (`KeywordLabeler`) or a few words from an LLM (`LLMLabeler`).

A labeler's `label(cluster_texts, centroids)` takes, per cluster, member texts nearest the centroid
first (up to its `texts_per_cluster`) and the (k, dim) centroids in the run's embedding space, and
returns `ClusterNames`: a name per cluster, its ranked keywords and where each name came from.
"""

import re
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from icc.config import build
from icc.errors import ICCError
from icc.models.llm import PromptActor
from icc.ray_runtime import map_actors

NAME_PROMPT = "Texts from one group:\n{texts}\n\nKeywords: {keywords}\n\nName the group's topic in two to five words."
# Written after the opened assistant turn: small models then answer with a topic, not a sentence about one.
ANSWER_START = "Topic:"


@dataclass
class ClusterNames:
    """What a labeler found, one entry per cluster 0..k-1.

    names: the name (None: none, e.g. a cluster without a word); representation: its keywords,
    best first (BERTopic's `Representation`); source: "keywords" or "llm", what gave the name
    (None where there is none), so an LLM name that fell back to the keywords shows as "keywords".
    """

    names: list[str | None]
    representation: list[list[str]]
    source: list[str | None]

    @property
    def fell_back(self) -> list[int]:
        """Clusters an LLM labeler named by their keywords (its answer was empty or too long)."""
        return [c for c, s in enumerate(self.source) if s == "keywords"]


class KeywordLabeler:
    """Keywords that set each cluster apart, as BERTopic finds them, then re-ranked as KeyBERT does.

    1. c-TF-IDF (BERTopic's class-based TF-IDF) over the words and phrases scikit-learn's
       CountVectorizer counts in the member texts' first `max_chars` characters (`ngram_range`,
       `stop_words`, in at least `min_df` texts): a term's weight in cluster c is tf * idf, tf its
       share of c's terms (its square root with `reduce_frequent_words`), idf log(1 + A / f) or,
       with `bm25_weighting`, log(1 + (A - f + 0.5) / (f + 0.5)); A the mean number of terms per
       cluster, f the term's count over all clusters. A word that every cluster uses a lot ("said"
       in news) weighs little.
    2. With `embedder` (TextEmbedder keyword arguments: the run's encoder) the `candidates`
       heaviest terms are embedded and ordered by maximal marginal relevance: cosine similarity to
       the cluster's centroid, less `diversity` times the similarity to a term already chosen.
    The `representation_words` first terms are the representation; the `top_words` first, the name.
    """

    def __init__(self, top_words: int = 3, representation_words: int = 10, texts_per_cluster: int = 500,
                 stop_words="english", ngram_range=(1, 2), min_df: int = 2, reduce_frequent_words: bool = True,
                 bm25_weighting: bool = True, rerank: bool = True, candidates: int = 30, diversity: float = 0.3,
                 max_chars: int = 10_000, embedder: dict | None = None):
        if not 0 <= diversity <= 1:
            raise ICCError(f"labeler.diversity must be between 0 and 1, got {diversity}")
        self.top_words, self.representation_words = top_words, max(top_words, representation_words)
        self.texts_per_cluster, self.stop_words, self.ngram_range = texts_per_cluster, stop_words, tuple(ngram_range)
        self.min_df, self.reduce_frequent_words, self.bm25_weighting = min_df, reduce_frequent_words, bm25_weighting
        self.candidates, self.diversity = max(candidates, self.representation_words), diversity
        self.max_chars = max_chars
        self.embedder = embedder if rerank else None
        self._encoder = None
        self._loading: Future | None = None  # the encoder's load that `preload` started

    def weights(self, cluster_texts: list[list[str]]):
        """(terms, (k, vocabulary) CSR c-TF-IDF weights); (empty, None) when no term is left."""
        from scipy import sparse
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        texts = [t[: self.max_chars] for member in cluster_texts for t in member]
        owner = np.repeat(np.arange(len(cluster_texts)), [len(member) for member in cluster_texts])
        vectorizer = CountVectorizer(stop_words=self.stop_words, ngram_range=self.ngram_range,
                                     min_df=min(self.min_df, max(len(texts), 1)))
        try:
            counts = vectorizer.fit_transform(texts)  # (texts, vocabulary)
        except ValueError:  # no term left at all (only stop words or symbols)
            return np.array([], dtype=object), None
        one_hot = sparse.csr_matrix((np.ones(len(texts)), (owner, np.arange(len(texts)))),
                                    shape=(len(cluster_texts), len(texts)))
        counts = (one_hot @ counts).tocsr().astype(np.float64)  # (k, vocabulary)
        per_term = np.asarray(counts.sum(axis=0)).ravel()
        mean_terms = counts.sum() / len(cluster_texts)
        idf = (np.log1p((mean_terms - per_term + 0.5) / (per_term + 0.5)) if self.bm25_weighting
               else np.log1p(mean_terms / per_term))
        tf = normalize(counts, norm="l1")
        if self.reduce_frequent_words:
            tf.data = np.sqrt(tf.data)
        return vectorizer.get_feature_names_out(), tf.multiply(np.maximum(idf, 0)).tocsr()

    def keywords(self, cluster_texts: list[list[str]], centroids: np.ndarray | None = None) -> list[list[str]]:
        """The `representation_words` best terms of each cluster, best first (fewer for tiny clusters);
        re-ranked against `centroids` (k, dim) when the labeler has an embedder."""
        terms, weights = self.weights(cluster_texts)
        if weights is None:
            return [[] for _ in cluster_texts]
        heaviest = []
        for c in range(weights.shape[0]):
            row = weights.getrow(c)
            keep = row.data > 0
            top = row.indices[keep][np.argsort(-row.data[keep], kind="stable")[: self.candidates]]
            heaviest.append(terms[top].tolist())
        if self.embedder is None or centroids is None:
            return [words[: self.representation_words] for words in heaviest]
        return self.rerank(heaviest, np.asarray(centroids, dtype=np.float32))

    def rerank(self, candidates: list[list[str]], centroids: np.ndarray) -> list[list[str]]:
        """Each cluster's candidate terms in maximal-marginal-relevance order against its centroid."""
        vocabulary = sorted({w for words in candidates for w in words})
        if not vocabulary:
            return [[] for _ in candidates]
        vectors = dict(zip(vocabulary, self.encoder().embed(vocabulary)))
        centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        return [mmr(words, np.array([vectors[w] for w in words]).reshape(len(words), -1), centroid,
                    self.representation_words, self.diversity)
                for words, centroid in zip(candidates, centroids)]

    def preload(self) -> None:
        """Start loading the re-ranking encoder (torch, transformers and the model: seconds) in a
        background thread, so that a driver that meanwhile waits on Ray has it by the label stage;
        `encoder` waits for it (and raises what the load raised). Nothing to do without `embedder`."""
        if self.embedder is not None and self._encoder is None and self._loading is None:
            self._loading = loading = Future()

            def load():
                try:
                    loading.set_result(self._load_encoder())
                except BaseException as e:  # raised by encoder()
                    loading.set_exception(e)

            # a daemon: a run that fails early exits without waiting for the load to end
            threading.Thread(target=load, name="icc-labeler-encoder", daemon=True).start()

    def use_encoder(self, encoder) -> None:
        """Re-rank with `encoder`, a loaded TextEmbedder made from this labeler's `embedder` settings
        (a caller that holds one, as `icc.TextClusterer` does, spares a second load of the model)."""
        if self.embedder is not None:
            self._encoder = encoder

    def encoder(self):
        """The re-ranking encoder: the one `use_encoder` gave or `preload` loads, else loaded now."""
        if self._encoder is None:
            self._encoder = self._loading.result() if self._loading else self._load_encoder()
            self._loading = None
        return self._encoder

    def _load_encoder(self):
        """The run's encoder on this process's CPU (`loadable_settings`): it embeds a few hundred
        terms, and a GPU here is the embed stage's."""
        from icc.models.embedder import TextEmbedder, loadable_settings

        return TextEmbedder(**{**loadable_settings(self.embedder), "device": "cpu"})

    def label(self, cluster_texts: list[list[str]], centroids: np.ndarray | None = None) -> ClusterNames:
        representation = self.keywords(cluster_texts, centroids)
        names = [", ".join(words[: self.top_words]) or None for words in representation]
        return ClusterNames(names, representation, ["keywords" if n else None for n in names])


def mmr(words: list[str], vectors: np.ndarray, target: np.ndarray, n: int, diversity: float) -> list[str]:
    """Up to n of `words` (their unit `vectors` (m, dim)) by maximal marginal relevance to the unit
    `target` (dim,): each step takes the word maximising (1 - diversity) * sim(word, target) -
    diversity * max sim(word, a word taken)."""
    if not words:
        return []
    relevance = vectors @ target
    between = vectors @ vectors.T
    chosen = [int(np.argmax(relevance))]
    while len(chosen) < min(n, len(words)):
        score = (1 - diversity) * relevance - diversity * between[:, chosen].max(axis=1)
        score[chosen] = -np.inf
        chosen.append(int(np.argmax(score)))
    return [words[i] for i in chosen]


class ClusterNamer(PromptActor):
    """Ray Data actor: one causal LM; a batch (pyarrow, columns `texts`: list of strings per cluster,
    `keywords`: its keyword string) gains `name`: the answer's first line, or null for an answer that
    is empty or longer than `max_words` words (or a cluster without texts). max_chars: each text is
    cut to this many characters in the prompt. Other keyword arguments: `PromptActor`'s."""

    answer_start = ANSWER_START
    stop_strings = ("\n",)  # a name is one line

    def __init__(self, model: str, max_new_tokens: int = 20, max_chars: int = 200, max_words: int = 5,
                 **load_options):
        super().__init__(model, max_new_tokens, **load_options)
        self.max_chars, self.max_words = max_chars, max_words

    def prompts(self, batch: pa.Table) -> dict[int, str]:
        rows = zip(batch.column("texts").to_pylist(), batch.column("keywords").to_pylist())
        return {i: NAME_PROMPT.format(texts="\n".join(f"- {' '.join(t.split())[: self.max_chars]}" for t in texts),
                                      keywords=keywords or "")
                for i, (texts, keywords) in enumerate(rows) if texts}

    def answered(self, batch: pa.Table, answers: list[str | None]) -> pa.Table:
        names = [None if answer is None else clean_name(answer, self.max_words) for answer in answers]
        return batch.append_column("name", pa.array(names, pa.string()))


def clean_name(answer: str, max_words: int = 5) -> str | None:
    """The first line of an LLM's answer without a "Title:" prefix, quotes or a final period; None
    when nothing is left or it has more than `max_words` words (never cut: a cut name reads wrong)."""
    line = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    line = re.sub(r"^(title|name|topic)\s*:\s*", "", line, flags=re.IGNORECASE).strip(" \"'*`.")
    return line if 0 < len(line.split()) <= max_words else None


class LLMLabeler:
    """Names from an LLM shown each cluster's `texts_per_cluster` most central texts and its
    keywords (`keywords`: `KeywordLabeler` parameters), as a Ray Data stage over the clusters on a
    pool of `ClusterNamer` actors, `clusters_per_batch` prompts per `generate` call. A cluster whose
    answer is empty or longer than `max_words` words keeps its keyword name. Needs Ray started
    (`icc.ray_runtime.start_ray`).

    llm: what loads the model (the config's `llm` group: model, dtype, adapter, ...); pool: how
    Ray runs it (`llm.pool`: actors, num_gpus, cpus_per_actor, num_threads); embedder: the run's
    encoder, for the keywords' re-ranking.
    """

    def __init__(self, llm: dict, pool: dict, texts_per_cluster: int = 5, clusters_per_batch: int = 8,
                 max_chars: int = 200, max_new_tokens: int = 20, max_words: int = 5, keywords: dict | None = None,
                 embedder: dict | None = None):
        self.llm, self.pool = llm, pool
        self.keywords = build(LABELERS, "labeler", "keywords", **(keywords or {}), embedder=embedder)
        self.texts_per_cluster = max(texts_per_cluster, self.keywords.texts_per_cluster)
        self.shown, self.clusters_per_batch = texts_per_cluster, clusters_per_batch
        self.namer = {**llm, "max_new_tokens": max_new_tokens, "max_chars": max_chars, "max_words": max_words}

    def preload(self) -> None:
        """The keywords' `KeywordLabeler.preload` (the LLM loads in its actors, at the label stage)."""
        self.keywords.preload()

    def label(self, cluster_texts: list[list[str]], centroids: np.ndarray | None = None) -> ClusterNames:
        import ray.data

        keywords = self.keywords.label(cluster_texts, centroids)
        items = [{"cluster": c, "texts": texts[: self.shown], "keywords": ", ".join(words)}
                 for c, (texts, words) in enumerate(zip(cluster_texts, keywords.representation))]
        ds = map_actors(ray.data.from_items(items), ClusterNamer, self.namer, self.clusters_per_batch, **self.pool,
                        batch_format="pyarrow")
        named = {row["cluster"]: row["name"] for row in ds.select_columns(["cluster", "name"]).take_all()}
        return combine(keywords, [named[c] for c in range(len(cluster_texts))])


def combine(keywords: ClusterNames, llm_names: list[str | None]) -> ClusterNames:
    """The LLM's names where it gave one, the keyword names (and source) elsewhere."""
    names = [n or k for n, k in zip(llm_names, keywords.names)]
    source = ["llm" if n else s for n, s in zip(llm_names, keywords.source)]
    return ClusterNames(names, keywords.representation, source)


LABELERS = {"keywords": KeywordLabeler, "llm": LLMLabeler}


def make_labeler(name: str, llm: dict | None = None, pool: dict | None = None, embedder: dict | None = None,
                 **params):
    """The labeler registered under `name` with its keyword parameters; None for "none".
    llm, pool: what loads the LLM and how Ray runs it, for `name` "llm" (ignored by the others);
    embedder: the run's encoder (TextEmbedder keyword arguments), for re-ranking keywords."""
    if name == "llm":
        params.update(llm=llm or {}, pool=pool or {})
    return None if name == "none" else build(LABELERS, "labeler", name, embedder=embedder, **params)
