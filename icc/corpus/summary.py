"""What an `icc cluster` run reports: the entries of its metrics.json and the summary it prints."""

from pathlib import Path

import numpy as np

from icc.corpus.sharded import Assigned, Fitted, expand_contingency
from icc.corpus.shards import Shards
from icc.metrics import external_metrics, internal_metrics
from icc.pipeline import StageTimer

SCORES_SHOWN = ("acc", "ari", "nmi", "silhouette")


def quality(assigned: Assigned, labelled: bool) -> dict:
    """Silhouette and Calinski-Harabasz on the assignment's vector sample; with labels, ACC, ARI,
    NMI, ... over every labelled row (from the label x cluster counts)."""
    scores = internal_metrics(assigned.sample_vectors, assigned.sample_clusters)
    if labelled:
        scores.update(external_metrics(*expand_contingency(assigned.contingency)))
    return scores


def run_metrics(shards: Shards, embedded_now: int, fitted: Fitted, assigned: Assigned, timer: StageTimer,
                scores: dict) -> dict:
    """metrics.json of a full run: row and reject counts, the fit, timings, peak memory and `scores`."""
    clusterer = fitted.clusterer
    metrics = {
        "rows": shards.n_rows,
        "embedded": shards.n_embedded,
        "rows_embedded_this_run": embedded_now,
        "rejected": shards.n_rows - shards.n_embedded,
        "reject_reasons": shards.reject_reasons,
        "undecodable_rows_replaced": shards.replaced,
        "truncated_to_max_length": shards.truncated,
        "k": len(assigned.sizes),
        "noise": assigned.noise,
        "fit_rows": int(clusterer.fit_rows_),
        "fit": "distributed k-means over Ray blocks" if fitted.distributed else "in memory",
        "nodes": len(assigned.nodes),
        "seconds": timer.seconds,
        "driver_peak_rss_mib": timer.peak_rss_mib,
        "texts_per_s": round(embedded_now / max(timer.seconds["embed"], 1e-3), 2),
        "internal_metrics_rows": len(assigned.sample_clusters),
        **scores,
    }
    if getattr(clusterer, "inertia_", None) is not None:
        metrics["inertia"] = clusterer.inertia_
    if getattr(clusterer, "outliers_reduced_", None) is not None:
        metrics["outliers_reduced"] = clusterer.outliers_reduced_
    if getattr(clusterer, "k_scores_", None):
        metrics["k_silhouette"] = clusterer.k_scores_
    if getattr(clusterer, "adapt_", None):  # quality=best: what the adaptation did (icc.cluster.adapt)
        metrics["adapt"] = clusterer.adapt_
    if getattr(clusterer, "graph_", None):
        metrics["attention_graph"] = clusterer.graph_
    return metrics


def print_summary(out: Path, metrics: dict, sizes: np.ndarray, central_texts: list[list[str]],
                  names: list[str | None] | None, rows: int = 15) -> None:
    """The run in a few lines: counts, scores, and the largest `rows` clusters by name or central text."""
    found = f"k={metrics['k']}"
    if metrics.get("noise"):
        found += f", {metrics['noise']} noise (in no cluster)"
    if metrics.get("outliers_reduced"):
        found += f", {metrics['outliers_reduced']} outliers moved to their nearest cluster"
    print(f"\nicc cluster: {metrics['rows']} rows, {metrics['rejected']} rejected, {found} -> {out}")
    if metrics.get("k_silhouette"):
        print("  silhouette per k: " + "  ".join(f"{k}:{s:.3f}" for k, s in metrics["k_silhouette"].items()))
    print("  " + "  ".join(f"{name}={metrics[name]:.3f}" for name in SCORES_SHOWN if name in metrics))
    print(f"  {'cluster':>7}  {'size':>6}  {'name' if names else 'text nearest the centroid'}")
    for c in np.argsort(-sizes, kind="stable")[:rows]:
        example = central_texts[c][0].replace("\n", " ") if central_texts[c] else ""
        print(f"  {c:>7}  {sizes[c]:>6}  {(names[c] or '') if names else example[:90]}")
    if len(sizes) > rows:
        print(f"  ... {len(sizes) - rows} more clusters in {out}")
