"""The embeddings x algorithms x datasets study (`icc bench`), after Petukhova et al. 2024.

- `icc.bench.grid`: the grid's specs (embedders, clusterers, datasets) read from the config;
- `icc.bench.cache`: embeddings (and summaries) computed once per input, cached on disk;
- `icc.bench.summarize`: an LLM summary of each text, as a Ray Data stage;
- `icc.bench.cells`: one cell: reduce the vectors, cluster, score, time, measure memory;
- `icc.bench.run`: the grid one embedding at a time (`embeddings`), its cells as Ray tasks (`cluster_cells`);
- `icc.bench.tables`: bench.md (the paper's Table 8 layout, per-algorithm table) and the cost plot.
"""
