"""Lower precision on the CPU: `TextEmbedder` in int8 and bf16 against float32 and `SentenceTransformer.encode`.

On each data set's texts, in one run: `SentenceTransformer.encode(batch_size=64)` fp32 (the
baseline), icc's `TextEmbedder` fp32, int8 (`embedder.quantize=int8`) and bf16 weights
(`embedder.dtype=bfloat16`, AMX matrix units where the CPU has them), each with its model
loaded and warmed up; the three alternate `--repeats` times and the table gives median texts/s.
Quality: scikit-learn `KMeans(k, n_init=10, random_state=0)` ACC (Hungarian) of each method's
vectors against the labels, and the minimum (and mean) cosine of each row's vector to encode's fp32.

    python benchmarks/cpu_precision.py --data ../shared/data/text/agnews_test.csv --rows 2000
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans

from icc.metrics import external_metrics
from icc.models.embedder import TextEmbedder
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--rows", type=int, default=None, help="a seeded random sample of ROWS texts per set")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    path = resolve_model("all-MiniLM-L6-v2")
    encoder = SentenceTransformer(path, device="cpu")
    encoder.max_seq_length = MAX_LENGTH
    fp32 = TextEmbedder(path, max_length=MAX_LENGTH, device="cpu")
    start = time.perf_counter()
    int8 = TextEmbedder(path, max_length=MAX_LENGTH, device="cpu", quantize="int8")
    load_seconds = time.perf_counter() - start
    bf16 = TextEmbedder(path, max_length=MAX_LENGTH, device="cpu", dtype="bfloat16")
    methods = {
        "SentenceTransformer.encode(batch_size=64) fp32": lambda t: encoder.encode(t, batch_size=64,
                                                                                  normalize_embeddings=True),
        f"icc TextEmbedder fp32 ({fp32.tokens_per_batch}-token batches)": fp32.embed,
        f"icc TextEmbedder int8 (batch {int8.batch_size})": int8.embed,
        f"icc TextEmbedder bf16 (batch {bf16.batch_size})": bf16.embed,
    }
    results = {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "int8_load_seconds": load_seconds,
               "repeats": args.repeats, "sets": {}}
    for data in args.data:
        frame = pd.read_csv(data)
        if args.rows and len(frame) > args.rows:
            frame = frame.sample(args.rows, random_state=0)
        texts, labels = frame["text"].astype(str).tolist(), frame["label"].to_numpy()
        for embed in methods.values():
            embed(texts[:64])  # warm-up
        seconds, vectors = {name: [] for name in methods}, {}
        for _ in range(args.repeats):
            for name, embed in methods.items():
                start = time.perf_counter()
                vectors[name] = embed(texts)
                seconds[name].append(time.perf_counter() - start)
        reference = vectors[next(iter(methods))]
        k = len(np.unique(labels))
        rows = {}
        for name in methods:
            cosine = np.sum(vectors[name] * reference, axis=1)
            predicted = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors[name])
            rows[name] = {"seconds": seconds[name], "texts_per_s": len(texts) / float(np.median(seconds[name])),
                          "acc": external_metrics(labels, predicted)["acc"],
                          "min_cosine_vs_encode": float(cosine.min()), "mean_cosine_vs_encode": float(cosine.mean())}
        results["sets"][data.name] = {"texts": len(texts), "k": k, "methods": rows}
        print(data.name, json.dumps(rows), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / "cpu_precision"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [f"# int8 and bf16 on the CPU: icc TextEmbedder vs SentenceTransformer.encode ({os.cpu_count()} cores, "
             f"{results['threads']} torch threads)", "",
             f"all-MiniLM-L6-v2, max_length {MAX_LENGTH}; medians of {args.repeats} alternating runs; ACC of "
             f"KMeans(k, n_init=10, random_state=0) on each method's vectors; cosine to encode's fp32 vectors. "
             f"int8 conversion at load: {load_seconds:.1f} s.", "",
             "| data (texts) | method | texts/s | vs encode | ACC | ACC - encode | min cosine | mean cosine |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in results["sets"].items():
        base = entry["methods"][next(iter(methods))]
        lines += [f"| {name} ({entry['texts']:,}) | {method} | {row['texts_per_s']:.1f} "
                  f"| {row['texts_per_s'] / base['texts_per_s']:.2f}x | {row['acc']:.3f} | {row['acc'] - base['acc']:+.3f} "
                  f"| {row['min_cosine_vs_encode']:.4f} | {row['mean_cosine_vs_encode']:.4f} |"
                  for method, row in entry["methods"].items()]
    lines += ["", "Command: `python benchmarks/cpu_precision.py --data " + " ".join(os.path.relpath(d) for d in args.data)
              + (f" --rows {args.rows}" if args.rows else "") + f" --repeats {args.repeats}`"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
