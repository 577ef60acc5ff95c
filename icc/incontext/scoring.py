"""Scores of in-context clustering: per episode (accuracy after Hungarian matching, ARI, NMI),
per attention layer (to choose one), and means by group (df, k, d, condition) for a report.

Predicted label -1 (an answer too short to label every item, or no label) counts as an error.
Episodes without true labels (a condition that nothing scores) have no scores.
"""

import math

import numpy as np
import pandas as pd

from icc.metrics import external_metrics

METRICS = ("acc", "ari", "nmi")
GROUPS = ("df", "k", "d", "condition")
# The methods of `icc incontext`, in the order of its report: the LLM's, the baselines, then the
# answers that ignore the items (the floor).
METHODS = ("generate", "attention", "attention_oracle", "kmeans", "gmm", "spectral", "kmeans_embeddings",
           "chance", "one_cluster")


def episode_scores(labels, pred) -> dict[str, float]:
    """{"acc", "ari", "nmi"} of predicted labels (n,) against true labels (n,); NaN when labels is None."""
    if labels is None:
        return dict.fromkeys(METRICS, math.nan)
    scores = external_metrics(np.asarray(labels), np.asarray(pred))
    return {metric: scores[metric] for metric in METRICS}


def add_scores(rows: list[dict]) -> list[str]:
    """Score each row's predictions: the METHODS it has a `pred_<method>` for (those of the first
    row, in METHODS order) are returned, and every row gains `<metric>_<method>` per method."""
    methods = [method for method in METHODS if f"pred_{method}" in rows[0]]
    for row in rows:
        for method in methods:
            scores = episode_scores(row["labels"], row[f"pred_{method}"])
            row.update({f"{metric}_{method}": value for metric, value in scores.items()})
    return methods


def mean_by_layer(truths: list, labels_by_layer: dict[int, list], metric: str = "ari") -> dict[int, float]:
    """{layer: mean `metric` over the episodes with true labels}; `truths[i]` is episode i's
    true labels (or None), `labels_by_layer[layer][i]` its labels from that layer's attention."""
    scored = [i for i, truth in enumerate(truths) if truth is not None]
    if not scored:
        return {}
    return {
        layer: float(np.mean([episode_scores(truths[i], labels[i])[metric] for i in scored]))
        for layer, labels in labels_by_layer.items()
    }


def summarize(episodes: pd.DataFrame, methods: list[str]) -> dict:
    """Per method: the number of scored episodes, mean acc/ari/nmi, and the same by each of GROUPS
    that the episodes have ({"by_df": {"1": {...}, ...}, ...}).

    episodes: one row per episode with the GROUPS columns and `<metric>_<method>` score columns.
    """
    summary = {}
    for method in methods:
        columns = [f"{metric}_{method}" for metric in METRICS]
        scored = episodes.dropna(subset=columns)
        summary[method] = _means(scored, columns)
        for group in GROUPS:
            by = {_key(value): _means(rows, columns) for value, rows in scored.groupby(group)}
            if by:
                summary[method][f"by_{group}"] = by
    return summary


def _means(rows: pd.DataFrame, columns: list[str]) -> dict:
    """{"episodes", "acc", "ari", "nmi"}: the means over `rows` (None when there are none)."""
    means = {metric: round(float(rows[column].mean()), 4) if len(rows) else None for metric, column in zip(METRICS, columns)}
    return {"episodes": len(rows), **means}


def _key(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def print_summary(out, model: str, metrics: dict) -> None:
    """The run in a few lines: episodes, the attention layer, each method's mean scores, the answers' statuses."""
    att = metrics["attention"]
    print(f"\nicc incontext: {metrics['episodes']} episodes ({metrics['validation_episodes']} for validation), "
          f"{model}, {metrics['episodes_per_s']} episodes/s -> {out}")
    if att["layers"]:
        print(f"  attention layer {att['layer']} ({att['layer_chosen_by']}); oracle layer {att['oracle_layer']}")
    print(f"  {'method':<18} {'episodes':>8} {'acc':>6} {'ari':>6} {'nmi':>6}")
    for method, m in metrics["methods"].items():
        values = " ".join(f"{m[x]:>6.3f}" if m[x] is not None else f"{'-':>6}" for x in METRICS)
        print(f"  {method:<18} {m['episodes']:>8} {values}")
    print("  answers: " + ", ".join(f"{status} {count}" for status, count in metrics["parse_status"].items()))
