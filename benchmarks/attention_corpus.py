"""`icc cluster clusterer=attention` on a stratified sample of AG News, next to k-means and spectral
clustering on the same MiniLM embeddings, with and without fusion with the embedding kNN graph.

One `icc cluster clusterer=attention` process (its own local Ray, SmolLM2-135M, labeler=none, no
report) embeds the sample, prompts the episodes and clusters the fused graph at the preset's
`embedding_weight`. The other rows reuse what that run wrote: its attention edges
(attention_edges.parquet) fused at each weight of --weights (0: attention alone, 1: the embedding
kNN graph alone) through the same sparse spectral step, and k-means (faiss, icc's `KMeans`) and
scikit-learn spectral clustering (icc's `Spectral`, as `clusterer=spectral`) on its embeddings.
Cost: the LLM seconds per 1,000 texts (the actors' prefill time, model load excluded), edges and
prompt tokens per text, the driver's peak RSS, and a projection for 1M texts with an 8B model.

    flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/attention_corpus.py --n 600
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from icc.cluster import KMeans, Spectral
from icc.corpus.attention_graph import (
    EDGES,
    EPISODES,
    affinity_graph,
    fuse,
    knn_graph,
    nearest_neighbours,
    spectral_clusters,
    truncate_texts,
)
from icc.data.parquet import vector_matrix
from icc.incontext.runner import render_episode
from icc.metrics import external_metrics
from icc.models.llm import load_causal_lm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "text"
RESULTS = ROOT / "benchmarks" / "results"
# Projection: an 8B dense decoder's prefill costs about 2 x 8e9 FLOP per token (attention of
# ~1,500-token prompts adds a few percent); an H100 runs bf16 prefill at about 40% of its 989 TFLOP/s.
PARAMS_8B, H100_FLOPS, H100_UTILISATION = 8e9, 989e12, 0.4


def stratified(path: Path, n: int, seed: int) -> pd.DataFrame:
    table = pd.read_csv(path)
    per = n // table["label"].nunique()
    parts = [rows.sample(per, random_state=seed) for _, rows in table.groupby("label")]
    return pd.concat(parts).sample(frac=1, random_state=seed).reset_index(drop=True)


def scores(labels, truth) -> dict:
    metrics = external_metrics(truth, labels)
    return {name: round(metrics[name], 4) for name in ("acc", "ari", "nmi")}


def prompt_tokens(run: Path, k: int, max_text_tokens: int | None) -> float:
    """Mean tokens of one rendered episode prompt as the actors read it (texts cut to
    max_text_tokens; the first order, each order has as many)."""
    _, tokenizer = load_causal_lm("SmolLM2-135M-Instruct")
    episodes = pq.read_table(run / EPISODES).to_pylist()
    texts = pd.read_parquet(run / "texts.parquet")
    embedded = texts.loc[texts["reject"] == "", "text"].tolist()
    lengths = []
    for e in episodes:
        shown = truncate_texts(tokenizer, [embedded[i] for i in e["items"]], max_text_tokens)
        lengths.append(len(tokenizer(render_episode(tokenizer, {"texts": shown, "k": k})[0],
                                     add_special_tokens=False)["input_ids"]))
    return float(np.mean(lengths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="agnews_test.csv")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="resume the run in --out (a run cut off by a timeout)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "runs" / "attention_corpus")
    parser.add_argument("overrides", nargs="*", help="more icc cluster overrides, e.g. clusterer.orders=1")
    args = parser.parse_args()
    name = Path(args.data).stem
    args.out = args.out / name
    args.out.mkdir(parents=True, exist_ok=True)
    sample = stratified(args.data_dir / args.data, args.n, args.seed)
    sample.to_csv(args.out / "sample.csv", index=False)
    k = sample["label"].nunique()
    run = args.out / "run"
    command = [sys.executable, "-m", "pipelines.cluster", "clusterer=attention", f"clusterer.k={k}",
               f"clusterer.seed={args.seed}", f"data.path={args.out / 'sample.csv'}", "data.label_column=label",
               "labeler=none", "report.enabled=false", "ray.progress_bars=false", f"output.dir={run}",
               f"output.overwrite={str(not args.resume).lower()}", *args.overrides]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    metrics = json.loads((run / "metrics.json").read_text())
    graph_record = metrics["attention_graph"]
    config = json.loads((run / "run.json").read_text())["config"]["clusterer"]

    texts = pd.read_parquet(run / "texts.parquet")
    truth = texts.loc[texts["reject"] == "", "label"].to_numpy()
    vectors = vector_matrix(pq.read_table(run / "embeddings.parquet")["vector"]).reshape(len(truth), -1)
    edges = pq.read_table(run / EDGES).to_pandas()
    attention = affinity_graph(edges["i"].to_numpy(), edges["j"].to_numpy(), edges["weight"].to_numpy(), len(truth))
    embedding = knn_graph(*nearest_neighbours(vectors, config["n_neighbors"]))
    rows = []
    assigned = pd.read_parquet(run / "assignments.parquet")
    rows.append({"method": f"icc cluster clusterer=attention (embedding_weight {config['embedding_weight']})",
                 **scores(assigned.loc[assigned["cluster"] >= 0, "cluster"].to_numpy(), truth)})
    for weight in args.weights:
        labels, _ = spectral_clusters(fuse(attention, embedding, weight), k, (2, 20), args.seed)
        label = {0.0: "attention graph alone", 1.0: "embedding kNN graph alone"}.get(weight, f"fused, weight {weight}")
        rows.append({"method": f"attention spectral: {label}", "embedding_weight": weight, **scores(labels, truth)})
    rows.append({"method": "clusterer=kmeans (MiniLM)",
                 **scores(KMeans(n_clusters=k, random_state=args.seed).fit(vectors).labels_, truth)})
    rows.append({"method": "clusterer=spectral (MiniLM, 10-NN)",
                 **scores(Spectral(n_clusters=k, random_state=args.seed).fit(vectors).labels_, truth)})

    tokens = prompt_tokens(run, k, config["max_text_tokens"])
    n = len(truth)
    tokens_per_text = tokens * graph_record["episodes"] * config["orders"] / n
    cost = {
        "texts": n, "k": k, "clusterer": config, "layer": graph_record["layer"],
        "episodes": graph_record["episodes"], "prompt_tokens_per_episode": round(tokens, 1),
        "prefill_tokens_per_text": round(tokens_per_text, 1),
        "edges": graph_record["edges"], "edges_per_text": graph_record["edges_per_text"],
        "pairs_per_text": round(graph_record["pairs"] / n, 2),
        "llm_seconds": graph_record["llm_seconds"],
        "llm_seconds_per_1000_texts": round(graph_record["llm_seconds"] * 1000 / n, 1),
        "stage_seconds": metrics["seconds"], "wall_seconds": round(wall, 1),
        "driver_peak_rss_mib": metrics["driver_peak_rss_mib"],
        "projected_h100_hours_1m_texts_8b": round(
            1e6 * tokens_per_text * 2 * PARAMS_8B / (H100_FLOPS * H100_UTILISATION) / 3600, 2),
        "cpu": f"{os.cpu_count()} cores",
    }
    result = {"data": args.data, "seed": args.seed, "overrides": args.overrides, "rows": rows, "cost": cost}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"attention_corpus_{name}_{n}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# clusterer=attention on {n} texts of {args.data} (stratified, seed {args.seed}), k={k}", "",
             "`flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/attention_corpus.py "
             f"--data {args.data} --n {args.n}"
             f"{''.join(' ' + o for o in args.overrides)}`; SmolLM2-135M-Instruct layer {cost['layer']}, "
             f"passes {config['passes']}, episode_size {config['episode_size']}, orders {config['orders']}, "
             f"neighbours {config['neighbours']}, max_text_tokens {config['max_text_tokens']}; "
             "MiniLM embeddings for all rows.", "",
             "| method | ACC | ARI | NMI |", "|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['acc']:.3f} | {r['ari']:.3f} | {r['nmi']:.3f} |" for r in rows]
    lines += ["", "| cost | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in cost.items() if key not in ("clusterer",)]
    (RESULTS / f"attention_corpus_{name}_{n}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
