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


def episode_scores(labels, pred) -> dict[str, float]:
    """{"acc", "ari", "nmi"} of predicted labels (n,) against true labels (n,); NaN when labels is None."""
    if labels is None:
        return dict.fromkeys(METRICS, math.nan)
    scores = external_metrics(np.asarray(labels), np.asarray(pred))
    return {metric: scores[metric] for metric in METRICS}


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
