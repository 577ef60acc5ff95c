"""Lower precision on the CPU: `TextEmbedder` at each `embedder.precision` against `SentenceTransformer.encode`.

On each data set's texts, in one run: `SentenceTransformer.encode(batch_size=64)` fp32 (the
baseline), icc's `TextEmbedder` at precision float32, int8 (torch dynamic quantisation), onnx-int8
(ONNX Runtime int8, converted once into the model cache: `icc.models.onnx_encoder`) and bfloat16
(bf16 weights, AMX matrix units where the CPU has them), each with its model loaded and warmed
up; the methods alternate `--repeats` times and the table gives median texts/s.
Quality: scikit-learn `KMeans(k, n_init=10, random_state=0)` ACC (Hungarian) of each method's
vectors against the labels, and the minimum (and mean) cosine of each row's vector to encode's fp32.

    python benchmarks/cpu_precision.py --data ../shared/data/text/{agnews_test,banking77_test,cstr}.csv --rows 300 0 0
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
from icc.models.device import resolve_precision
from icc.models.embedder import TextEmbedder
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers
PRECISIONS = ("float32", "int8", "onnx-int8", "bfloat16")  # the CPU's (float16 runs on GPUs only)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--rows", type=int, nargs="+", default=[0],
                        help="a seeded random sample of ROWS texts per set: one for all, or one per --data (0: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--name", default="cpu_precision", help="the results' file stem")
    args = parser.parse_args()
    path = resolve_model("all-MiniLM-L6-v2")
    encoder = SentenceTransformer(path, device="cpu")
    encoder.max_seq_length = MAX_LENGTH
    methods = {"SentenceTransformer.encode(batch_size=64) fp32": lambda t: encoder.encode(t, batch_size=64,
                                                                                         normalize_embeddings=True)}
    load_seconds = {}
    for precision in PRECISIONS:
        start = time.perf_counter()
        ours = TextEmbedder(path, max_length=MAX_LENGTH, device="cpu", precision=precision)
        load_seconds[precision] = time.perf_counter() - start
        batches = f"{ours.tokens_per_batch}-token batches" if ours.tokens_per_batch else f"batch {ours.batch_size}"
        methods[f"icc TextEmbedder {precision} ({batches})"] = ours.embed
    auto = resolve_precision("auto", gpu=False)
    results = {"threads": torch.get_num_threads(), "cores": os.cpu_count(), "load_seconds": load_seconds,
               "auto_on_this_cpu": auto, "repeats": args.repeats, "sets": {}}
    if len(args.rows) not in (1, len(args.data)):
        parser.error("--rows takes one number, or one per --data file")
    for data, sample in zip(args.data, args.rows * len(args.data) if len(args.rows) == 1 else args.rows):
        frame = pd.read_csv(data)
        if sample and len(frame) > sample:
            frame = frame.sample(sample, random_state=0)
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
    stem = args.results / args.name
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    loads = ", ".join(f"{precision} {seconds:.1f} s" for precision, seconds in load_seconds.items())
    lines = [f"# embedder.precision on the CPU: icc TextEmbedder vs SentenceTransformer.encode ({os.cpu_count()} cores, "
             f"{results['threads']} torch threads)", "",
             f"all-MiniLM-L6-v2, max_length {MAX_LENGTH}; medians of {args.repeats} alternating runs; ACC of "
             f"KMeans(k, n_init=10, random_state=0) on each method's vectors; cosine to encode's fp32 vectors. "
             f"Load (and conversion) seconds: {loads} (onnx-int8 converts once, then loads from the cache). "
             f"`embedder.precision=auto` on this CPU: {auto}.", "",
             "| data (texts) | method | texts/s | vs encode | ACC | ACC - encode | min cosine | mean cosine |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in results["sets"].items():
        base = entry["methods"][next(iter(methods))]
        lines += [f"| {name} ({entry['texts']:,}) | {method} | {row['texts_per_s']:.1f} "
                  f"| {row['texts_per_s'] / base['texts_per_s']:.2f}x | {row['acc']:.3f} | {row['acc'] - base['acc']:+.3f} "
                  f"| {row['min_cosine_vs_encode']:.4f} | {row['mean_cosine_vs_encode']:.4f} |"
                  for method, row in entry["methods"].items()]
    lines += ["", "Command: `python benchmarks/cpu_precision.py --data " + " ".join(os.path.relpath(d) for d in args.data)
              + (f" --rows {' '.join(map(str, args.rows))}" if any(args.rows) else "") + f" --repeats {args.repeats} --name {args.name}`"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
