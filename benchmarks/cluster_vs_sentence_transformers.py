"""`icc cluster` against what a user does by hand, on the same texts in one run.

By hand: `SentenceTransformer.encode(batch_size=64, normalize_embeddings=True)` with
all-MiniLM-L6-v2, then scikit-learn `KMeans(k, n_init=10, random_state=0)`.
Ours: `icc cluster` as a subprocess on a local Ray (start-up of Ray and of the actor included in
the embed stage's seconds). Writes a Markdown table and the raw numbers as JSON.

    python benchmarks/cluster_vs_sentence_transformers.py --data ../shared/data/text/agnews_test.csv
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans

from icc.metrics import external_metrics
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]


def by_hand(texts: list[str], labels, k: int) -> dict:
    model = SentenceTransformer(resolve_model("all-MiniLM-L6-v2"), device="cpu")
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
            **{key: metrics[key] for key in ("texts_per_s", "rows", "acc", "ari", "nmi")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/text/agnews_test.csv")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    k = frame["label"].nunique()
    hand = by_hand(frame["text"].tolist(), frame["label"].to_numpy(), k)
    with tempfile.TemporaryDirectory() as tmp:
        icc = ours(args.data.resolve(), k, Path(tmp))
    result = {"data": args.data.name, "rows": len(frame), "k": k, "sentence_transformers": hand, "icc": icc,
              "throughput_ratio": icc["texts_per_s"] / hand["texts_per_s"], "acc_difference": icc["acc"] - hand["acc"]}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"cluster_vs_sentence_transformers_{args.data.stem}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join([
        f"# icc cluster vs sentence-transformers + scikit-learn: {args.data.name} ({len(frame)} rows, k={k})",
        "",
        "| | texts/s (embed) | embed s | ACC | ARI | NMI |",
        "|---|---|---|---|---|---|",
        f"| SentenceTransformer.encode(64) + KMeans(n_init=10) | {hand['texts_per_s']:.1f} | {hand['embed_seconds']:.1f} "
        f"| {hand['acc']:.3f} | {hand['ari']:.3f} | {hand['nmi']:.3f} |",
        f"| icc cluster (Ray actor, start-up included) | {icc['texts_per_s']:.1f} | {icc['embed_seconds']:.1f} "
        f"| {icc['acc']:.3f} | {icc['ari']:.3f} | {icc['nmi']:.3f} |",
        "",
        f"Throughput ratio icc / sentence-transformers: {result['throughput_ratio']:.2f}; "
        f"ACC difference: {result['acc_difference']:+.3f}; rows written by icc: {icc['rows']}; "
        f"whole icc job incl. Ray start: {icc['job_seconds']:.1f} s.",
        "",
        f"Command: `python benchmarks/cluster_vs_sentence_transformers.py --data {args.data}`",
    ])
    stem.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
