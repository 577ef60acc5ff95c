"""`icc cluster` against what a user does by hand, on the same texts in one run.

By hand: `SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)` with
all-MiniLM-L6-v2, then scikit-learn `KMeans(k, n_init=10, random_state=0)`.
Ours: `icc cluster` as a subprocess on a local Ray (start-up of the actor, reading and writing
Parquet included in the embed stage's seconds; `encode` is timed with its model loaded). The two
alternate `--repeats` times, so that both see the same machine; the table gives medians and ranges.
Writes a Markdown table and the raw numbers as JSON.

    python benchmarks/cluster_vs_sentence_transformers.py --data ../shared/data/text/agnews_test.csv
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans

from icc.metrics import external_metrics
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def by_hand(model: SentenceTransformer, texts: list[str], labels, k: int) -> dict:
    start = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    seconds = time.perf_counter() - start
    predicted = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors)
    return {"embed_seconds": seconds, "texts_per_s": len(texts) / seconds, **external_metrics(labels, predicted)}


def ours(data: Path, k: int, out: Path) -> dict:
    start = time.perf_counter()
    subprocess.run(
        [Path(sys.executable).parent / "icc", "cluster", "data=file", f"data.path={data}", "data.label_column=label",
         f"clusterer.k={k}", f"output.dir={out}", "ray.progress_bars=false"],
        check=True, cwd=ROOT, stdout=subprocess.DEVNULL,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    return {"job_seconds": time.perf_counter() - start, "embed_seconds": metrics["seconds"]["embed"],
            "stage_seconds": metrics["seconds"], **{key: metrics[key] for key in ("texts_per_s", "rows", "acc", "ari", "nmi")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/text/agnews_test.csv")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    k = frame["label"].nunique()
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
    hand, icc = [], []
    for _ in range(args.repeats):
        hand.append(by_hand(model, frame["text"].tolist(), frame["label"].to_numpy(), k))
        with tempfile.TemporaryDirectory() as tmp:
            icc.append(ours(args.data.resolve(), k, Path(tmp)))
    ratios = [ours_run["texts_per_s"] / hand_run["texts_per_s"] for hand_run, ours_run in zip(hand, icc)]
    result = {"data": args.data.name, "rows": len(frame), "k": k, "sentence_transformers": hand, "icc": icc,
              "throughput_ratio": float(np.median(ratios)), "throughput_ratios": ratios,
              "acc_difference": icc[0]["acc"] - hand[0]["acc"]}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"cluster_vs_sentence_transformers_{args.data.stem}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join([
        f"# icc cluster vs sentence-transformers + scikit-learn: {args.data.name} ({len(frame)} rows, k={k})",
        "",
        f"{args.repeats} alternating runs of each; texts/s and seconds are medians, with the range in brackets.",
        "",
        "| | texts/s (embed) | embed s | ACC | ARI | NMI |",
        "|---|---|---|---|---|---|",
        _row("SentenceTransformer.encode(64) + KMeans(n_init=10)", hand),
        _row("icc cluster (Ray actor; start-up, read and write included)", icc),
        "",
        f"Throughput ratio icc / sentence-transformers: median {result['throughput_ratio']:.2f} "
        f"(per run: {', '.join(f'{r:.2f}' for r in ratios)}); ACC difference: {result['acc_difference']:+.3f}; "
        f"rows written by icc: {icc[0]['rows']}; whole icc job incl. Ray start: "
        f"{np.median([run['job_seconds'] for run in icc]):.1f} s.",
        "",
        f"Command: `python benchmarks/cluster_vs_sentence_transformers.py --data {args.data} --repeats {args.repeats}`",
    ])
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)


def _row(name: str, runs: list[dict]) -> str:
    """A table row: median and range of texts/s and seconds; the quality of the first run (all runs
    cluster the same vectors with the same seed)."""
    def spread(key: str) -> str:
        values = [run[key] for run in runs]
        return f"{np.median(values):.1f} [{min(values):.1f}-{max(values):.1f}]"
    first = runs[0]
    return (f"| {name} | {spread('texts_per_s')} | {spread('embed_seconds')} "
            f"| {first['acc']:.3f} | {first['ari']:.3f} | {first['nmi']:.3f} |")


if __name__ == "__main__":
    main()
