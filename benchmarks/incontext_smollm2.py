"""In-context clustering with SmolLM2-135M-Instruct on this machine: the done-when runs of `icc incontext`.

Three runs, each an `icc incontext` job (skipped when its output dir already has metrics.json):
- synthetic: the default grid (k 2..5, d 1..3, df 1 / 2 / 100, 10 episodes per cell);
- wine: episodes of 10-30 points from UCI wine (../shared/data/numeric/uci), k 2..3;
- agnews: 20 sets of 10-20 AG News texts, each clustered "by topic" and "by sentiment".

Writes benchmarks/results/incontext_smollm2.{md,json}: accuracy per method on the synthetic grid
(k=3, d=3 next to the paper's Table 1, and the whole grid by df), the wine and AG News tables, and
for AG News how much the condition changes the partition (ARI between the two conditions' labels).

    python benchmarks/incontext_smollm2.py --out /tmp/icc-incontext
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.metrics import adjusted_rand_score

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
ICC = Path(sys.executable).parent / "icc"

RUNS = {
    "synthetic": ["data=synthetic"],
    "wine": ["data=numeric", f"data.path={SHARED / 'numeric/uci/wine.data'}",
             f"data.labels={SHARED / 'numeric/uci/wine.labels0'}"],
    "agnews": ["data=text", f"data.path={SHARED / 'text/agnews_test.csv'}",
               'data.conditions=["by topic","by sentiment"]', "data.condition_labels=[label,null]"],
}
# ../shared/REFERENCE.md §1, Table 1: accuracy % at k=3, d=3 for df = 1 / 2 / 100.
PAPER_TABLE1 = {
    "k-means (paper)": (67.95, 89.05, 97.08),
    "GPT-4o zero-shot": (77.75, 89.56, 96.25),
    "Llama-3.2-1B-Instruct zero-shot": (45.40, 46.54, 47.36),
    "Llama-3.2-1B-Instruct fine-tuned": (82.66, 88.76, 96.28),
    "Llama-3.1-8B-Instruct zero-shot": (55.29, 61.21, 64.42),
}
SHOWN = ["generate", "attention", "attention_oracle", "kmeans", "gmm", "spectral", "kmeans_embeddings"]


def run(name: str, out: Path) -> dict:
    target = out / name
    if not (target / "metrics.json").exists():
        command = [str(ICC), "incontext", *RUNS[name], "ray.progress_bars=false", f"output.dir={target}"]
        subprocess.run(command, check=True, cwd=ROOT)
    metrics = json.loads((target / "metrics.json").read_text())
    episodes = pq.read_table(target / "episodes.parquet", columns=report_columns(target)).to_pandas()
    return {"metrics": metrics, "episodes": episodes}


def report_columns(target: Path) -> list[str]:
    """The episodes.parquet columns this report reads (not the attention matrices)."""
    names = pq.read_schema(target / "episodes.parquet").names
    return [c for c in names if not c.startswith("attention_L")]


def acc_table(episodes: pd.DataFrame, by: str | None) -> pd.DataFrame:
    """Mean accuracy (%) per method (rows) and value of `by` (columns), with the episode count."""
    methods = [m for m in SHOWN if f"acc_{m}" in episodes]
    groups = [(f"{value:g}" if isinstance(value, float) else str(value), rows) for value, rows in episodes.groupby(by)] \
        if by else [("all", episodes)]
    table = {value: {m: 100 * rows[f"acc_{m}"].mean() for m in methods} for value, rows in groups}
    counts = {value: len(rows) for value, rows in groups}
    frame = pd.DataFrame(table)
    frame.loc["episodes"] = pd.Series(counts)
    return frame


def markdown(frame: pd.DataFrame, first: str) -> str:
    lines = [f"| {first} | " + " | ".join(frame.columns) + " |", "|---" * (len(frame.columns) + 1) + "|"]
    for name, row in frame.iterrows():
        cells = [f"{v:.0f}" if name == "episodes" else ("-" if pd.isna(v) else f"{v:.1f}") for v in row]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def condition_agreement(episodes: pd.DataFrame) -> dict[str, float | None]:
    """Mean ARI between the labels a method gives the same items under the two conditions (None
    for generation when no answer held a list: all labels missing would agree trivially)."""
    first, second = sorted(episodes["condition"].unique())
    # an item set's episodes share its draw's seed
    pairs = episodes[episodes["condition"] == first].merge(
        episodes[episodes["condition"] == second], on="seed", suffixes=("_a", "_b"))
    agreement = {}
    for method in ("generate", "attention", "kmeans_embeddings"):
        aris = [adjusted_rand_score(x, y) for x, y in zip(pairs[f"pred_{method}_a"], pairs[f"pred_{method}_b"])]
        agreement[method] = round(float(np.mean(aris)), 3)
    if (episodes["parse_status"] == "no_list").all():
        agreement["generate"] = None
    return agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/icc-incontext"))
    args = parser.parse_args()
    runs = {name: run(name, args.out) for name in RUNS}

    synthetic = runs["synthetic"]["episodes"]
    cell = synthetic[(synthetic["k"] == 3) & (synthetic["d"] == 3)]
    ours = acc_table(cell, "df")
    paper = pd.DataFrame(PAPER_TABLE1, index=["1", "2", "100"]).T
    table1 = pd.concat([ours.drop("episodes"), paper, ours.loc[["episodes"]]])
    sm = runs["synthetic"]["metrics"]
    agreement = condition_agreement(runs["agnews"]["episodes"])
    seconds = {name: r["metrics"]["seconds"] for name, r in runs.items()}
    att = {name: r["metrics"]["attention"] for name, r in runs.items()}

    config = json.loads((args.out / "synthetic" / "run.json").read_text())["config"]
    text = f"""# In-context clustering with SmolLM2-135M-Instruct on a 2-core CPU

`icc incontext`, greedy generation (episodes_per_batch {config['llm']['generate']['episodes_per_batch']}) and spectral
clustering of the item attention of layers `{config['attention']['layers']}`, `attention.layer=auto` (the
layer with the best mean ARI on separate validation episodes, seed 1); `attention_oracle` is the best
layer on the test labels, an oracle. Accuracy % after Hungarian matching (a missing label counts as
an error). Synthetic grid: n in {config['data']['n_range']} points per episode.

## Synthetic grid: k=3, d=3, next to the paper's Table 1 (df = 1 / 2 / 100)

{markdown(table1, "method")}

## Synthetic grid, all cells (k 2..5, d 1..3), by df

{markdown(acc_table(synthetic, "df"), "method")}

By k:

{markdown(acc_table(synthetic, "k"), "method")}

{sm['episodes']} test + {sm['validation_episodes']} validation episodes in {sum(seconds['synthetic'].values()):.0f} s
(stages: {', '.join(f'{k} {v:.0f} s' for k, v in seconds['synthetic'].items())}; Ray start-up not included);
{sm['episodes_per_s']} episodes/s through the LLM. Attention layer chosen: {att['synthetic']['layer']}
(oracle layer {att['synthetic']['oracle_layer']}). Answers: {sm['parse_status']}.

## Real numeric data: UCI wine (standardised; episodes of 10-30 points, k 2..3)

{markdown(acc_table(runs['wine']['episodes'], None), "method")}

Attention layer chosen: {att['wine']['layer']} (oracle {att['wine']['oracle_layer']}); answers:
{runs['wine']['metrics']['parse_status']}; {sum(seconds['wine'].values()):.0f} s.

## Texts with two conditions on the same items: AG News, "by topic" and "by sentiment"

Each item set (10-20 texts, 2-4 topics) is prompted twice, once per condition. Only the topic
condition is scored (AG News has no sentiment labels); the sentiment answers are unscored.

{markdown(acc_table(runs['agnews']['episodes'].dropna(subset=['acc_generate']), 'condition'), "method")}

How much the condition changes the partition: mean ARI between the labels of the same items under
the two conditions (1: the condition is ignored): generation {agreement['generate'] if agreement['generate'] is not None
else "n/a (no answer held a list)"}; attention-SC {agreement['attention']}; k-means on MiniLM embeddings
{agreement['kmeans_embeddings']} (it never sees the condition).
Answers: {runs['agnews']['metrics']['parse_status']}; {sum(seconds['agnews'].values()):.0f} s.

Command: `python benchmarks/incontext_smollm2.py --out /tmp/icc-incontext`
"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "incontext_smollm2.md").write_text(text)
    summary = {name: {"metrics": r["metrics"]} for name, r in runs.items()}
    summary["table1_k3_d3"] = json.loads(table1.to_json())
    summary["agnews_condition_agreement_ari"] = agreement
    (RESULTS / "incontext_smollm2.json").write_text(json.dumps(summary, indent=1))
    print(text)


if __name__ == "__main__":
    main()
