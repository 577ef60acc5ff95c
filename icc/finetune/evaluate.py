"""Before/after evaluation of a fine-tuned LLM: its generated labels on held-out synthetic episodes,
scored per episode (accuracy after Hungarian matching, ARI, NMI), summarised for the degrees of
freedom seen and unseen in training, with a paired bootstrap interval of the accuracy gain."""

import numpy as np
import pandas as pd

from icc.checks import check_int
from icc.incontext.episodes import build_episodes, episodes_table
from icc.incontext.runner import run_episodes
from icc.incontext.scoring import GROUPS, METRICS, episode_scores, summarize


def held_out_episodes(episodes: int, ks: list[int], ds: list[int], dfs: list[float], n_range, seed: int) -> list[dict]:
    """`episodes` synthetic episodes per (k, d, df) cell, drawn with `seed` (not a training seed); none for 0."""
    if check_int(episodes, "evaluation.episodes") == 0:
        return []
    data = {"kind": "synthetic", "ks": ks, "ds": ds, "dfs": dfs, "n_range": n_range}
    return build_episodes(data, seed, episodes, "test")


def generated_labels(episodes: list[dict], llm: dict) -> list[dict]:
    """The LLM's answers to `episodes` on a Ray Data actor pool (`icc.incontext.runner.run_episodes`):
    per episode, in order, the episode's fields and `answer`, `pred_generate` (n ints, -1: missing)
    and `parse_status`. `llm` is the llm config: what loads the model (its top keys, `adapter`
    included), `generate` and `pool`."""
    load = dict(llm)
    generate, pool = load.pop("generate"), load.pop("pool")
    return run_episodes(episodes_table(episodes), load, generate, pool)


def score_episodes(rows: dict[str, list[dict]], seen_dfs) -> pd.DataFrame:
    """One row per episode: its GROUPS, n, `seen` (df among `seen_dfs`) and, for each method of
    `rows` ({method: `generated_labels` output}), `pred_`, `parse_`, `acc_`, `ari_` and `nmi_<method>`."""
    first = next(iter(rows.values()))
    frame = pd.DataFrame({
        "episode": [r["episode"] for r in first], **{g: [r[g] for r in first] for g in GROUPS},
        "n": [r["n"] for r in first], "seen": [r["df"] in seen_dfs for r in first],
        "labels": [r["labels"] for r in first],
    })
    for method, results in rows.items():
        frame[f"pred_{method}"] = [r["pred_generate"] for r in results]
        frame[f"parse_{method}"] = [r["parse_status"] for r in results]
        scores = [episode_scores(r["labels"], r["pred_generate"]) for r in results]
        for metric in METRICS:
            frame[f"{metric}_{method}"] = [s[metric] for s in scores]
    return frame


def paired_bootstrap(before, after, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of after - before over paired episodes, and its 95% percentile bootstrap interval
    (episodes resampled with replacement); counts of episodes better, worse and tied."""
    difference = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    draws = np.random.default_rng(seed).integers(0, len(difference), size=(resamples, len(difference)))
    low, high = np.percentile(difference[draws].mean(axis=1), [2.5, 97.5])
    return {
        "episodes": len(difference), "mean": round(float(difference.mean()), 4), "ci95": [round(low, 4), round(high, 4)],
        "better": int((difference > 0).sum()), "worse": int((difference < 0).sum()), "tied": int((difference == 0).sum()),
    }


def summary(frame: pd.DataFrame, methods: list[str]) -> dict:
    """For all episodes, those of seen dfs and those of unseen dfs: `summarize` by method and, with
    "zero_shot" and "finetuned" among `methods`, the paired bootstrap of the accuracy gain
    (`acc_gain`); and the answers' parse statuses by method."""
    parts = {"all": frame, "seen_df": frame[frame["seen"]], "unseen_df": frame[~frame["seen"]]}
    result = {}
    for name, rows in parts.items():
        if len(rows):
            result[name] = summarize(rows, methods)
            if {"zero_shot", "finetuned"} <= set(methods):
                result[name]["acc_gain"] = paired_bootstrap(rows["acc_zero_shot"], rows["acc_finetuned"])
    result["parse_status"] = {m: frame[f"parse_{m}"].value_counts().to_dict() for m in methods}
    return result
