"""Embed a bench dataset once: through Ray Data the first time, from the cache after that."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from icc.bench.cache import commit_entry, entry_path, new_entry
from icc.bench.datasets import read_dataset
from icc.bench.grid import DatasetSpec, EmbedderSpec
from icc.corpus.embed_stage import embed_dataset
from icc.corpus.shards import Shards, read_vectors, write_embedded
from icc.data.fingerprint import cache_key
from icc.data.parquet import read_output
from icc.files import read_json, write_json
from icc.memory import peak_rss_mib, reset_peak_rss
from icc.models.embedder import TextEmbedder
from icc.models.tfidf import tfidf_dataset


class MeasuredEmbedder(TextEmbedder):
    """A TextEmbedder actor whose batches also carry `peak_rss_mb`, its process's peak memory so
    far (model, activations, batch)."""

    def __call__(self, batch: dict) -> dict:
        batch = super().__call__(batch)
        batch["peak_rss_mb"] = np.full(len(batch["vector"]), peak_rss_mib())
        return batch


@dataclass
class LabelledVectors:
    """An embedded labelled corpus: `vectors` (n_embedded, dim) float32 for the rows where
    `embedded` (n,) is True, in row order; `labels` (n,) str, None where a row has none."""

    vectors: np.ndarray
    labels: np.ndarray
    embedded: np.ndarray


def load_entry(entry: Path) -> LabelledVectors:
    """The vectors, labels and embedded mask of a cache entry that `write_embedded` wrote."""
    shards = Shards.load(entry)
    rows = read_output(entry / "texts.parquet", columns=["reject", "label"] if shards.has_labels else ["reject"])
    n = rows.num_rows
    labels = rows.column("label").to_numpy(zero_copy_only=False) if shards.has_labels else np.full(n, None)
    vectors = [read_vectors(shards, i) for i in range(len(shards.rows))]
    return LabelledVectors(vectors=np.concatenate(vectors) if vectors else np.zeros((0, shards.dim), np.float32),
                           labels=labels, embedded=rows.column("reject").to_numpy(zero_copy_only=False) == "")


def embedded_corpus(embedder: EmbedderSpec, dataset: DatasetSpec, cache_dir) -> tuple[LabelledVectors, dict]:
    """The dataset embedded by `embedder`, and its meta: seconds (of the run that embedded it),
    texts_per_s, peak_rss_mb, dim, cached (whether this call found it in the cache)."""
    key = cache_key(embedder=embedder.vector_params(), **dataset.cache_parts())
    entry = entry_path(cache_dir, "embeddings", key)
    if (entry / "meta.json").exists():
        return load_entry(entry), {**read_json(entry / "meta.json"), "cached": True}

    partial = new_entry(entry)
    start = time.perf_counter()
    ds = read_dataset(dataset)
    if embedder.kind == "tfidf":
        reset_peak_rss()  # TF-IDF is fitted in this process
        ds, _ = tfidf_dataset(ds, **embedder.params)
        shards = write_embedded(ds, partial)
        peak = peak_rss_mib()
    else:
        ds = embed_dataset(ds, embedder.params, **embedder.pool, embedder_class=MeasuredEmbedder).materialize()
        shards = write_embedded(ds, partial)
        peak = float(ds.max("peak_rss_mb")) if shards.n_rows else float("nan")
    seconds = time.perf_counter() - start
    shards.check_clusterable(dataset.path)
    meta = {
        "embedder": embedder.name, "vector_params": embedder.vector_params(), "dataset": dataset.name,
        "path": dataset.path, "rows": shards.n_rows, "embedded": shards.n_embedded, "dim": shards.dim,
        "truncated": shards.truncated, "seconds": round(seconds, 3),
        "texts_per_s": round(shards.n_embedded / seconds, 2), "peak_rss_mb": round(peak, 1),
    }
    write_json(partial / "meta.json", meta)
    commit_entry(partial, entry)
    return load_entry(entry), {**meta, "cached": False}
