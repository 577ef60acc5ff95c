"""The bench grid, one embedding at a time: `embeddings` yields each dataset's texts (and, with
`summarize`, their LLM summaries) embedded by each embedder; `cluster_cells` clusters one
embedding, full-size and reduced to each of `dims`, with every clusterer as parallel Ray tasks and
returns one row per cell (the columns of bench.parquet). Needs Ray started (`start_ray`).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from icc.bench.cells import cluster_cell, reduce_vectors
from icc.bench.embed import LabelledVectors, embedded_corpus
from icc.bench.grid import ClustererSpec, DatasetSpec, EmbedderSpec
from icc.bench.summarize import summarized_dataset
from icc.errors import ICCError
from icc.pipeline import StageTimer
from icc.ray_runtime import get


@dataclass
class Embedding:
    """One input of the grid embedded: `input` "text" (the dataset's texts) or "summary" (their
    summaries); `meta`: `embedded_corpus`'s; `summarize_s`: seconds of the run that summarised them."""

    dataset: DatasetSpec
    input: str
    embedder: EmbedderSpec
    corpus: LabelledVectors
    k: int
    meta: dict
    summarize_s: float = 0.0


def embeddings(datasets: list[DatasetSpec], embedders: list[EmbedderSpec], cache_dir, inputs: list,
               summarize: dict | None = None) -> Iterator[Embedding]:
    """Per dataset, its texts then (with `summarize`: `summarized_dataset` keyword arguments llm,
    pool, prompt, ...) their summaries, each embedded by every embedder, from the cache where it
    holds them. inputs: a list that gets, as they are made or read, {"summaries": meta} and
    {"embeddings": meta} (run.json's record of what the cells were computed from)."""
    for dataset in datasets:
        sources = [("text", dataset, {})]
        if summarize:
            summary, summary_meta = summarized_dataset(dataset, cache_dir, **summarize)
            sources.append(("summary", summary, summary_meta))
            inputs.append({"summaries": summary_meta})
        for input_name, source, summary_meta in sources:
            for embedder in embedders:
                corpus, meta = embedded_corpus(embedder, source, cache_dir)
                inputs.append({"embeddings": meta})
                k = dataset.k or len(pd.unique(corpus.labels[pd.notna(corpus.labels)]))
                if not 2 <= k <= len(corpus.vectors):
                    raise ICCError(f"dataset '{dataset.name}': k={k} needs 2..{len(corpus.vectors)} embedded texts")
                yield Embedding(dataset, input_name, embedder, corpus, k, meta, summary_meta.get("seconds", 0.0))


def cluster_cells(embedding: Embedding, clusterers: list[ClustererSpec], dims: list[int], reduce: str = "pca",
                  seed: int = 0, cpus_per_cell: float = 1) -> Iterator[dict]:
    """The rows of `embedding`'s cells: every clusterer (a Ray task of `cpus_per_cell` CPUs each,
    in parallel) on the full vectors, then on them reduced by `reduce` to each of `dims` below
    their size; a reduction's rows come when all its clusterers are done."""
    import ray

    cell = ray.remote(cluster_cell).options(num_cpus=cpus_per_cell)
    corpus, meta = embedding.corpus, embedding.meta
    for method, X, reduce_s in _reductions(corpus.vectors, dims, reduce, seed):
        vectors = ray.put(X)
        results = get([cell.remote(vectors, corpus.labels, corpus.embedded, c.params, embedding.k, seed)
                       for c in clusterers])
        for clusterer, result in zip(clusterers, results):
            yield {
                "dataset": embedding.dataset.name, "rows": len(corpus.labels), "k": embedding.k,
                "embedder": embedding.embedder.name, "input": embedding.input, "dim": X.shape[1], "reduce": method,
                "algorithm": clusterer.name, **result,
                "embed_s": meta["seconds"], "texts_per_s": meta["texts_per_s"],
                "embed_peak_rss_mb": meta["peak_rss_mb"], "embed_cached": meta["cached"],
                "reduce_s": reduce_s, "summarize_s": embedding.summarize_s,
            }


def _reductions(vectors: np.ndarray, dims: list[int], method: str, seed: int):
    """(reduce, vectors, seconds to reduce): the full embedding ("none"), then each size in `dims` below it."""
    yield "none", vectors, 0.0
    for dim in dims:
        if dim < vectors.shape[1]:
            timer = StageTimer()
            with timer("reduce"):
                reduced = reduce_vectors(vectors, dim, method, seed)
            yield method, reduced, timer.seconds["reduce"]
