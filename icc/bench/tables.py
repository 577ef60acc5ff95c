"""bench.md and bench.html from the bench table (one row per cell, as in bench.parquet), and a
cell's console line.

bench.md: the paper's Table 8 (the best algorithm per embedding and dataset, with its metrics),
a per-algorithm table (means over every embedding and dataset, and how often each was best) and
every cell. bench.html: quality against cost, one panel per dataset.
"""

from pathlib import Path

import pandas as pd

METRICS = {  # column: header, in the paper's order, then ours
    "f1_weighted": "F1", "ari": "ARI", "homogeneity": "Homog.", "silhouette": "Silh.", "calinski_harabasz": "CH",
    "acc": "ACC", "nmi": "NMI", "v_measure": "V",
}
COSTS = {"embed_s": "embed s", "cluster_s": "cluster s", "embed_peak_rss_mb": "embed MiB",
         "cluster_peak_rss_mb": "cluster MiB"}


def embedding_label(row) -> str:
    """The embedding as the tables name it: embedder, then ` summaries` and ` pca-128` where they apply."""
    label = row["embedder"]
    if row["input"] == "summary":
        label += " summaries"
    if row["reduce"] != "none":
        label += f" {row['reduce']}-{row['dim']}"
    return label


def cell_line(row: dict, select_by: str = "f1_weighted") -> str:
    """One cell as the console shows it while the bench runs."""
    return (f"{row['dataset']:<16} {embedding_label(row):<28} {row['algorithm']:<14} "
            f"{select_by}={row[select_by]:.3f} ari={row['ari']:.3f} embed={row['embed_s']:.1f}s"
            f"{' (cached)' if row['embed_cached'] else ''} cluster={row['cluster_s']:.2f}s "
            f"peak={row['cluster_peak_rss_mb']:.0f}MiB")


def best_cells(cells: pd.DataFrame, select_by: str = "f1_weighted") -> pd.DataFrame:
    """Table 8: per dataset and embedding, the cell with the highest `select_by` (ties: the
    first algorithm in grid order), in grid order of datasets and embeddings."""
    cells = cells.assign(embedding=cells.apply(embedding_label, axis=1))
    best = cells.loc[cells.groupby(["dataset", "embedding"], sort=False)[select_by].idxmax().to_numpy()]
    datasets = {name: i for i, name in enumerate(cells["dataset"].unique())}
    return best.sort_values("dataset", key=lambda column: column.map(datasets), kind="stable")


def algorithm_summary(cells: pd.DataFrame, select_by: str = "f1_weighted") -> pd.DataFrame:
    """One row per algorithm: cells, wins (times best in Table 8), mean metrics and costs."""
    wins = best_cells(cells, select_by)["algorithm"].value_counts()
    summary = cells.groupby("algorithm", sort=False).agg(
        cells=("dataset", "size"), **{m: (m, "mean") for m in METRICS},
        cluster_s=("cluster_s", "mean"), cluster_peak_rss_mb=("cluster_peak_rss_mb", "max"),
    )
    summary.insert(1, "wins", wins.reindex(summary.index).fillna(0).astype(int))
    return summary.reset_index()


def markdown_table(frame: pd.DataFrame, columns: dict[str, str]) -> str:
    """A Markdown table of `frame`'s `columns` ({column: header}); floats with 3 decimals, or 1
    above 100 (seconds, MiB, Calinski-Harabasz)."""
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        if pd.isna(value):
            return "–"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return str(value)


def write_markdown(cells: pd.DataFrame, path: Path, select_by: str = "f1_weighted", title: str = "icc bench") -> None:
    best = best_cells(cells, select_by)
    full = cells.assign(embedding=cells.apply(embedding_label, axis=1))
    sections = [
        f"# {title}\n",
        f"{len(cells)} cells: {cells['dataset'].nunique()} datasets x {full['embedding'].nunique()} embeddings x "
        f"{cells['algorithm'].nunique()} algorithms. F1 is weighted F1 after Hungarian matching of clusters to "
        "classes; ACC the matched accuracy. Seconds are wall-clock; memory is the peak resident memory of the "
        "process that embedded (an embedder actor; the driver for TF-IDF) or clustered (a Ray worker).\n",
        f"## Best algorithm per embedding and dataset (by {METRICS.get(select_by, select_by)}; the paper's Table 8)\n",
        markdown_table(best, {"dataset": "Dataset", "rows": "Rows", "embedding": "Embedding", "algorithm": "Algorithm",
                              **METRICS, **COSTS}),
        "\n## Per algorithm (means over every embedding and dataset; wins: best in the table above)\n",
        markdown_table(algorithm_summary(cells, select_by),
                       {"algorithm": "Algorithm", "cells": "cells", "wins": "wins", **METRICS,
                        "cluster_s": "cluster s", "cluster_peak_rss_mb": "max cluster MiB"}),
        "\n## Every cell\n",
        markdown_table(full, {"dataset": "Dataset", "embedding": "Embedding", "algorithm": "Algorithm",
                              **METRICS, "cluster_s": "cluster s", "cluster_peak_rss_mb": "cluster MiB"}),
    ]
    Path(path).write_text("\n".join(sections) + "\n")


def write_plot(cells: pd.DataFrame, path: Path, quality: str = "f1_weighted") -> None:
    """A self-contained HTML scatter: `quality` against seconds (embed + cluster, log scale),
    colour = embedding, symbol = algorithm, one panel per dataset."""
    import plotly.express as px

    frame = cells.assign(embedding=cells.apply(embedding_label, axis=1),
                         seconds=cells["embed_s"] + cells["cluster_s"])
    figure = px.scatter(
        frame, x="seconds", y=quality, color="embedding", symbol="algorithm", facet_col="dataset",
        facet_col_wrap=2, log_x=True, hover_data=["ari", "acc", "embed_s", "cluster_s", "cluster_peak_rss_mb"],
        title=f"{METRICS.get(quality, quality)} against seconds to embed and cluster",
        labels={"seconds": "seconds (embed + cluster)", quality: METRICS.get(quality, quality)},
    )
    figure.write_html(path, include_plotlyjs=True, full_html=True)
