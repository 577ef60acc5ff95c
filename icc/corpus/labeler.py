"""Cluster names: c-TF-IDF keywords (`KeywordLabeler`) or a few words from an LLM (`LLMLabeler`).

A labeler's `names(cluster_texts)` takes, per cluster, member texts nearest the centroid first
(up to its `texts_per_cluster`) and returns one name per cluster (None where it has none).
"""

import re

import numpy as np
import pyarrow as pa

from icc.config import build
from icc.models.llm import PromptActor
from icc.ray_runtime import map_actors

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


class ClusterNamer(PromptActor):
    """Ray Data actor: one causal LM; a batch (pyarrow, column `texts`: list of strings per cluster)
    gains `name` (null for a cluster without texts). max_chars: each text is cut to this many
    characters in the prompt. Other keyword arguments: `PromptActor`'s."""

    answer_start = ANSWER_START

    def __init__(self, model: str, max_new_tokens: int = 12, max_chars: int = 200, **load_options):
        super().__init__(model, max_new_tokens, **load_options)
        self.max_chars = max_chars

    def prompts(self, batch: pa.Table) -> dict[int, str]:
        return {i: NAME_PROMPT.format(texts="\n".join(f"- {' '.join(t.split())[: self.max_chars]}" for t in texts))
                for i, texts in enumerate(batch.column("texts").to_pylist()) if texts}

    def answered(self, batch: pa.Table, answers: list[str | None]) -> pa.Table:
        names = [None if answer is None else clean_name(answer) for answer in answers]
        return batch.append_column("name", pa.array(names, pa.string()))


def clean_name(answer: str, max_chars: int = 60) -> str | None:
    """The first line of an LLM's answer without a "Title:" prefix, quotes or a final period."""
    line = next((line.strip() for line in answer.splitlines() if line.strip()), "")
    line = re.sub(r"^(title|name|topic)\s*:\s*", "", line, flags=re.IGNORECASE).strip(" \"'*`.")
    return line[:max_chars] or None


class LLMLabeler:
    """Names from an LLM shown each cluster's `texts_per_cluster` most central texts, as a Ray Data
    stage over the clusters on a pool of `ClusterNamer` actors, `clusters_per_batch` prompts per
    `generate` call. Needs Ray started (`icc.ray_runtime.start_ray`).

    llm: what loads the model (the config's `llm` group: model, dtype, adapter, ...); pool: how
    Ray runs it (`llm.pool`: actors, num_gpus, cpus_per_actor, num_threads).
    """

    def __init__(self, llm: dict, pool: dict, texts_per_cluster: int = 5, clusters_per_batch: int = 8,
                 max_chars: int = 200, max_new_tokens: int = 12):
        self.llm, self.pool = llm, pool
        self.texts_per_cluster, self.clusters_per_batch = texts_per_cluster, clusters_per_batch
        self.max_chars, self.max_new_tokens = max_chars, max_new_tokens

    def names(self, cluster_texts: list[list[str]]) -> list[str | None]:
        import ray.data

        items = [{"cluster": c, "texts": texts[: self.texts_per_cluster]} for c, texts in enumerate(cluster_texts)]
        namer = {**self.llm, "max_new_tokens": self.max_new_tokens, "max_chars": self.max_chars}
        ds = map_actors(ray.data.from_items(items), ClusterNamer, namer, self.clusters_per_batch, **self.pool,
                        batch_format="pyarrow")
        named = {row["cluster"]: row["name"] for row in ds.select_columns(["cluster", "name"]).take_all()}
        return [named[c] for c in range(len(cluster_texts))]


LABELERS = {"keywords": KeywordLabeler, "llm": LLMLabeler}


def make_labeler(name: str, llm: dict | None = None, pool: dict | None = None, **params):
    """The labeler registered under `name` with its keyword parameters; None for "none".
    llm, pool: what loads the LLM and how Ray runs it, for `name` "llm" (ignored by the others)."""
    if name == "llm":
        params.update(llm=llm or {}, pool=pool or {})
    return None if name == "none" else build(LABELERS, "labeler", name, **params)
