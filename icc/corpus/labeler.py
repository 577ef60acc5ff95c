"""Cluster names: c-TF-IDF keywords (`KeywordLabeler`) or a few words from an LLM (`LLMLabeler`).

A labeler's `names(cluster_texts)` takes, per cluster, member texts nearest the centroid first
(up to its `texts_per_cluster`) and returns one name per cluster (None where it has none).
"""

import re

import numpy as np
import pyarrow as pa

from icc.config import build
from icc.models.llm import generate, load_causal_lm, render_chat
from icc.ray_runtime import actor_pool

NAME_PROMPT = (
    "Here are texts from one group:\n{texts}\n\n"
    "What do these texts have in common? Give a short title of two to five words."
)
# Written after the opened assistant turn: small models then answer with a title, not a sentence about one.
ANSWER_START = "Title:"


class KeywordLabeler:
    """c-TF-IDF (BERTopic's class-based TF-IDF): each cluster's texts form one document; a word's
    weight in cluster c is its share of c's words times log(1 + A / f), A the mean number of words
    per cluster and f the word's count over all clusters. The name is the `top_words` heaviest words.

    stop_words: "english", None or a list, as scikit-learn's CountVectorizer takes it.
    """

    def __init__(self, top_words: int = 3, texts_per_cluster: int = 500, stop_words="english", ngram_range=(1, 1)):
        self.top_words = top_words
        self.texts_per_cluster = texts_per_cluster
        self.stop_words = stop_words
        self.ngram_range = tuple(ngram_range)

    def keywords(self, cluster_texts: list[list[str]]) -> list[list[str]]:
        """The `top_words` heaviest words of each cluster, heaviest first (fewer for tiny clusters)."""
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.preprocessing import normalize

        vectorizer = CountVectorizer(stop_words=self.stop_words, ngram_range=self.ngram_range)
        try:
            counts = vectorizer.fit_transform([" ".join(texts) for texts in cluster_texts])  # (k, vocabulary)
        except ValueError:  # no word left at all (only stop words or symbols)
            return [[] for _ in cluster_texts]
        words = vectorizer.get_feature_names_out()
        per_word = np.asarray(counts.sum(axis=0)).ravel()
        weights = normalize(counts, norm="l1").multiply(np.log1p(counts.sum() / len(cluster_texts) / per_word)).tocsr()
        keywords = []
        for c in range(weights.shape[0]):
            row = weights.getrow(c)
            top = row.indices[np.argsort(-row.data, kind="stable")[: self.top_words]]
            keywords.append(words[top].tolist())
        return keywords

    def names(self, cluster_texts: list[list[str]]) -> list[str | None]:
        return [", ".join(words) or None for words in self.keywords(cluster_texts)]


class ClusterNamer:
    """Ray Data actor: one causal LM; a batch (pyarrow, column `texts`: list of strings per cluster)
    gains `name` (null for a cluster without texts).

    max_chars: each text is cut to this many characters in the prompt.
    Other keyword arguments go to `load_causal_lm` (dtype, device, adapter, num_threads, ...).
    """

    def __init__(self, model: str, max_new_tokens: int = 12, max_chars: int = 200, **load_options):
        self.model, self.tokenizer = load_causal_lm(model, **load_options)
        self.max_new_tokens, self.max_chars = max_new_tokens, max_chars

    def __call__(self, batch: pa.Table) -> pa.Table:
        groups = batch.column("texts").to_pylist()
        asked = [i for i, texts in enumerate(groups) if texts]
        prompts = [render_chat(self.tokenizer, [{"role": "user", "content": self.prompt(groups[i])}]) + ANSWER_START
                   for i in asked]
        answers = generate(self.model, self.tokenizer, prompts, self.max_new_tokens) if prompts else []
        names = [None] * len(groups)
        for i, answer in zip(asked, answers):
            names[i] = clean_name(answer)
        return batch.append_column("name", pa.array(names, pa.string()))

    def prompt(self, texts: list[str]) -> str:
        return NAME_PROMPT.format(texts="\n".join(f"- {' '.join(t.split())[: self.max_chars]}" for t in texts))


def clean_name(answer: str, max_chars: int = 60) -> str | None:
    """The first line of an LLM's answer without a "Title:" prefix, quotes or a final period."""
    line = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    line = re.sub(r"^(title|name|topic)\s*:\s*", "", line, flags=re.IGNORECASE).strip(" \"'*`.")
    return line[:max_chars] or None


class LLMLabeler:
    """Names from an LLM shown each cluster's `texts_per_cluster` most central texts, as a Ray Data
    stage over the clusters on a pool of `ClusterNamer` actors (see `icc.runtime.actor_pool` for
    `actors`, `num_gpus`, `cpus_per_actor`), `clusters_per_batch` prompts per `generate` call.
    Needs Ray started (`icc.runtime.start_ray`).
    """

    def __init__(self, model: str, texts_per_cluster: int = 5, clusters_per_batch: int = 8, actors: int | None = None,
                 num_gpus: float | None = None, cpus_per_actor: float = 1, **namer_kwargs):
        self.model, self.texts_per_cluster, self.clusters_per_batch = model, texts_per_cluster, clusters_per_batch
        self.pool = {"actors": actors, "num_gpus": num_gpus, "cpus_per_actor": cpus_per_actor}
        self.namer_kwargs = namer_kwargs

    def names(self, cluster_texts: list[list[str]]) -> list[str | None]:
        import ray.data

        items = [{"cluster": c, "texts": texts[: self.texts_per_cluster]} for c, texts in enumerate(cluster_texts)]
        ds = ray.data.from_items(items).map_batches(
            ClusterNamer,
            fn_constructor_kwargs={"model": self.model, **self.namer_kwargs},
            batch_size=self.clusters_per_batch,
            batch_format="pyarrow",
            **actor_pool(**self.pool),
        )
        named = {row["cluster"]: row["name"] for row in ds.select_columns(["cluster", "name"]).take_all()}
        return [named[c] for c in range(len(cluster_texts))]


LABELERS = {"keywords": KeywordLabeler, "llm": LLMLabeler}


def make_labeler(name: str, **params):
    """The labeler registered under `name` with its keyword parameters; None for "none"."""
    return None if name == "none" else build(LABELERS, "labeler", name, **params)
