"""The condition of `clusterer=attention` (`clusterer.condition`) on a set with two attributes:
AG News texts labelled by topic (4) and by whether they contain a digit (2), a stratified 25 texts
per (topic, digit) cell. Two runs of `benchmarks/attention_corpus.py`, "by topic" and "by whether
the text contains a number", each scored against its own attribute and the other, at the attention
graph alone (the only graph a condition can change) and fused at the preset's `embedding_weight`;
and the ARI between the two conditions' partitions.

    flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/attention_condition.py
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from icc.corpus.attention_graph import EDGES, affinity_graph, fuse, knn_graph, nearest_neighbours, spectral_clusters
from icc.data.parquet import vector_matrix
from icc.metrics import external_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "text"
RESULTS = ROOT / "benchmarks" / "results"
CONDITIONS = {"topic": "by topic", "digit": "by whether the text contains a number"}
K = {"topic": 4, "digit": 2}  # clusters asked for under each condition: the values of its attribute


def two_attributes(path: Path, per_cell: int, seed: int) -> pd.DataFrame:
    """AG News rows with `topic` (its label) and `digit` ("number" / "no number"), per_cell per pair."""
    table = pd.read_csv(path)
    table["topic"] = table["label"].astype(str)
    table["digit"] = np.where(table["text"].str.contains(r"\d"), "number", "no number")
    cells = [rows.sample(per_cell, random_state=seed) for _, rows in table.groupby(["topic", "digit"])]
    return pd.concat(cells).sample(frac=1, random_state=seed).reset_index(drop=True)


def partitions(run: Path, weight: float, k: int, seed: int) -> np.ndarray:
    """The run's edges fused with its embedding kNN graph at `weight`, clustered spectrally into k."""
    texts = pd.read_parquet(run / "texts.parquet")
    embedded = int((texts["reject"] == "").sum())
    vectors = vector_matrix(pq.read_table(run / "embeddings.parquet")["vector"]).reshape(embedded, -1)
    edges = pq.read_table(run / EDGES).to_pandas()
    attention = affinity_graph(edges["i"].to_numpy(), edges["j"].to_numpy(), edges["weight"].to_numpy(), len(vectors))
    config = json.loads((run / "run.json").read_text())["config"]["clusterer"]
    embedding = knn_graph(*nearest_neighbours(vectors, config["n_neighbors"]))
    return spectral_clusters(fuse(attention, embedding, weight), k, (2, 20), seed)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--per-cell", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "attention_condition")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sample = two_attributes(args.data_dir / "agnews_test.csv", args.per_cell, args.seed)
    sample.to_csv(args.out / "two_attributes.csv", index=False)
    runs = {}
    for name, condition in CONDITIONS.items():
        runs[name] = args.out / name
        subprocess.run([sys.executable, "-m", "pipelines.cluster", "clusterer=attention", f"clusterer.k={K[name]}",
                        f"clusterer.seed={args.seed}", f"clusterer.condition={condition!r}",
                        f"data.path={args.out / 'two_attributes.csv'}", "data.label_column=null", "labeler=none",
                        "report.enabled=false", "ray.progress_bars=false", f"output.dir={runs[name]}",
                        "output.overwrite=true"], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    weight = json.loads((runs["topic"] / "run.json").read_text())["config"]["clusterer"]["embedding_weight"]
    rows = []
    for graph, w in (("attention alone", 0.0), (f"fused, embedding_weight {weight}", weight)):
        labels = {name: partitions(run, w, K[name], args.seed) for name, run in runs.items()}
        for name, predicted in labels.items():
            rows.append({"graph": graph, "condition": CONDITIONS[name],
                         **{f"ari_vs_{a}": round(external_metrics(sample[a].to_numpy(), predicted)["ari"], 4)
                            for a in CONDITIONS}})
        rows.append({"graph": graph, "condition": "ARI between the two conditions' partitions",
                     "ari_between": round(external_metrics(labels["topic"], labels["digit"])["ari"], 4)})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attention_condition_agnews.json").write_text(json.dumps({"per_cell": args.per_cell, "k": K,
                                                                        "rows": rows}, indent=2) + "\n")
    lines = [f"# clusterer.condition on {len(sample)} AG News texts: topic x digit ({args.per_cell} per cell), "
             f"k={K['topic']} by topic, {K['digit']} by number, no labels (default layer), SmolLM2-135M", "",
             "`flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/attention_condition.py`", "",
             "| graph | condition | ARI vs topic | ARI vs digit | ARI between |", "|---|---|---|---|---|"]
    lines += [f"| {r['graph']} | {r['condition']} | {r.get('ari_vs_topic', '')} | {r.get('ari_vs_digit', '')} | "
              f"{r.get('ari_between', '')} |" for r in rows]
    (RESULTS / "attention_condition_agnews.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
