"""Benchmark embedders x clustering algorithms x labelled datasets: F1, ARI, ... seconds and memory per cell."""

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from icc.bench.grid import check_dims, check_metric, clusterer_specs, dataset_specs, embedder_specs
from icc.bench.run import cluster_cells, embeddings
from icc.bench.summarize import check_summarize
from icc.bench.tables import cell_line, write_markdown, write_plot
from icc.checks import check_bool, check_int, check_positive
from icc.config import to_kwargs
from icc.models.hub import cache_dir
from icc.pipeline import hydra_main, write_run_record
from icc.ray_runtime import start_ray


def run(cfg: DictConfig) -> None:
    # Every setting is checked before Ray starts.
    bench = cfg.bench
    check_int(bench.seed, "bench.seed")
    check_positive(bench.cpus_per_cell, "bench.cpus_per_cell")
    datasets = dataset_specs(bench.datasets, to_kwargs(cfg.datasets), bench.seed)
    embedders = embedder_specs(bench.embedders, to_kwargs(cfg.embedders), to_kwargs(cfg.embedder))
    clusterers = clusterer_specs(bench.clusterers, to_kwargs(cfg.clusterers))
    dims = check_dims(bench.dims, bench.reduce)
    select_by = check_metric(bench.select_by)
    summarize = None
    if check_bool(bench.summarize, "bench.summarize"):
        summarize = {"llm": to_kwargs(cfg.llm, "generate", "pool"), "pool": to_kwargs(cfg.llm.pool),
                     **to_kwargs(cfg.summarize)}
        check_summarize(**summarize)
    cache = Path(bench.cache_dir or cache_dir() / "bench").expanduser()
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    start_ray(**cfg.ray)

    rows, inputs = [], []
    for embedding in embeddings(datasets, embedders, cache, inputs, summarize):
        for row in cluster_cells(embedding, clusterers, dims, bench.reduce, bench.seed, bench.cpus_per_cell):
            print(cell_line(row, select_by), flush=True)
            rows.append(row)

    cells = pd.DataFrame(rows)
    cells.to_parquet(out / "bench.parquet", index=False)
    write_markdown(cells, out / "bench.md", select_by)
    write_plot(cells, out / "bench.html", select_by)
    write_run_record(out, "bench", cfg, cache_dir=str(cache), inputs=inputs)
    print(f"\nicc bench: {len(cells)} cells -> {out / 'bench.parquet'}, {out / 'bench.md'}, {out / 'bench.html'}")


main = hydra_main("bench", run)

if __name__ == "__main__":
    main()
