"""Benchmark embedders x clustering algorithms x labelled datasets: F1, ARI, ... seconds and memory per cell."""

import sys
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from icc.bench.cells import cluster_cell, reduce_vectors
from icc.bench.embed import embedded_corpus
from icc.bench.grid import check_dims, clusterer_specs, dataset_specs, embedder_specs
from icc.bench.summarize import summarized_dataset
from icc.bench.tables import METRICS, write_markdown, write_plot
from icc.config import CONFIG_DIR, to_kwargs
from icc.errors import ICCError, user_errors
from icc.files import write_json
from icc.models.hub import cache_dir
from icc.pipeline import StageTimer, package_versions
from icc.ray_runtime import start_ray
from pipelines.cluster import LLM_GENERATION_KEYS


def run(cfg: DictConfig) -> Path:
    bench = cfg.bench
    datasets = dataset_specs(bench.datasets, to_kwargs(cfg.datasets), bench.seed)
    embedders = embedder_specs(bench.embedders, to_kwargs(cfg.embedders), to_kwargs(cfg.embedder))
    clusterers = clusterer_specs(bench.clusterers, to_kwargs(cfg.clusterers))
    dims = check_dims(bench.dims, bench.reduce)
    if bench.select_by not in METRICS:
        raise ICCError(f"unknown bench.select_by '{bench.select_by}' (choose from {', '.join(METRICS)})")
    cache = Path(bench.cache_dir or cache_dir() / "bench").expanduser()
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    start_ray(**cfg.ray)

    import ray

    cell = ray.remote(cluster_cell).options(num_cpus=bench.cpus_per_cell)
    rows, inputs = [], []
    for dataset in datasets:
        sources = [("text", dataset, {})]
        if bench.summarize:
            llm = to_kwargs(cfg.llm, *LLM_GENERATION_KEYS)
            summary, summary_meta = summarized_dataset(dataset, cache, llm, **to_kwargs(cfg.summarize))
            sources.append(("summary", summary, summary_meta))
            inputs.append({"summaries": summary_meta})
        for input_name, source, summary_meta in sources:
            for embedder in embedders:
                corpus, meta = embedded_corpus(embedder, source, cache)
                inputs.append({"embeddings": meta})
                k = dataset.k or len(pd.unique(corpus.labels[pd.notna(corpus.labels)]))
                if not 2 <= k <= len(corpus.vectors):
                    raise ICCError(f"dataset '{dataset.name}': k={k} needs 2..{len(corpus.vectors)} embedded texts")
                for reduce, X, reduce_s in _variants(corpus.vectors, dims, bench.reduce, bench.seed):
                    vectors = ray.put(X)
                    results = ray.get([cell.remote(vectors, corpus.labels, corpus.embedded, c.params, k, bench.seed)
                                       for c in clusterers])
                    for clusterer, result in zip(clusterers, results):
                        row = {
                            "dataset": dataset.name, "rows": len(corpus.labels), "k": k, "embedder": embedder.name,
                            "input": input_name, "dim": X.shape[1], "reduce": reduce, "algorithm": clusterer.name,
                            **result,
                            "embed_s": meta["seconds"], "texts_per_s": meta["texts_per_s"],
                            "embed_peak_rss_mb": meta["peak_rss_mb"], "embed_cached": meta["cached"],
                            "reduce_s": reduce_s, "summarize_s": summary_meta.get("seconds", 0.0),
                        }
                        rows.append(row)
                        _print_cell(row, bench.select_by)

    cells = pd.DataFrame(rows)
    cells.to_parquet(out / "bench.parquet", index=False)
    write_markdown(cells, out / "bench.md", bench.select_by)
    write_plot(cells, out / "bench.html", bench.select_by)
    write_json(out / "run.json", {
        "pipeline": "bench",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "cache_dir": str(cache),
        "inputs": inputs,
        "versions": package_versions(),
    })
    print(f"\nicc bench: {len(cells)} cells -> {out / 'bench.parquet'}, {out / 'bench.md'}, {out / 'bench.html'}")
    return out


def _variants(vectors: np.ndarray, dims: list[int], method: str, seed: int):
    """(reduce, vectors, seconds to reduce): the full embedding, then each size in `dims` below it."""
    yield "none", vectors, 0.0
    for dim in dims:
        if dim < vectors.shape[1]:
            timer = StageTimer()
            with timer("reduce"):
                reduced = reduce_vectors(vectors, dim, method, seed)
            yield method, reduced, timer.seconds["reduce"]


def _print_cell(row: dict, select_by: str) -> None:
    variant = ("summaries " if row["input"] == "summary" else "") + (f"{row['reduce']}-{row['dim']}" if row["reduce"] != "none" else "")
    print(f"{row['dataset']:<16} {row['embedder'] + ' ' + variant:<28} {row['algorithm']:<14} "
          f"{select_by}={row[select_by]:.3f} ari={row['ari']:.3f} embed={row['embed_s']:.1f}s"
          f"{' (cached)' if row['embed_cached'] else ''} cluster={row['cluster_s']:.2f}s "
          f"peak={row['cluster_peak_rss_mb']:.0f}MiB", flush=True)


@hydra.main(config_path=CONFIG_DIR, config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
