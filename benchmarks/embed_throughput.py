"""Embedding throughput on one device: icc's TextEmbedder against SentenceTransformer.encode.

Both embed the same texts with the same model on the same device, loaded and warmed up; the
methods alternate `--repeats` times and the table gives medians. Methods:

- `icc embed`: `TextEmbedder.embed`, tokenising and embedding (an actor with embedder.pool.tokenize=actor);
- `icc embed_tokens`: `TextEmbedder.embed_tokens` on texts tokenised already: the GPU actor's share
  of the pipeline's work, where CPU tasks tokenise (embedder.pool.tokenize=stage, the default on GPUs);
- `SentenceTransformer.encode` at its default batch size (32) and at icc's; on a GPU also in fp16,
  as a user who knows to would run it.

FLOP/s are model FLOPs: those of each text unpadded (matrix products and attention, as torch's
FlopCounterMode counts them on the model with eager attention), summed and divided by the seconds.
The peak is a large matrix product timed on the same device, in the dtype the embedder computes in
(bfloat16 or float16 under autocast on a GPU, float32 on a CPU).

    python benchmarks/embed_throughput.py --data ../shared/data/text/agnews_test.csv [--device cuda]

It needs torch, transformers, sentence-transformers and pandas, not Ray: on a GPU machine without
icc installed, run it from the repository root with PYTHONPATH=. and the model as a local
directory (--model DIR).
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sentence_transformers import SentenceTransformer
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from icc.models.embedder import TextEmbedder, token_ids
from icc.models.hub import resolve_model

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 256  # all-MiniLM-L6-v2's max_seq_length in sentence-transformers


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of an (n, n) @ (n, n) matrix product in `dtype`: median of 10 after 3 warm-ups."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    seconds = []
    for i in range(13):
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        if i >= 3:
            seconds.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(seconds))


def model_flops(model_path: str, lengths: np.ndarray, device: torch.device) -> float:
    """Model FLOPs of embedding texts of these token counts (n,), each run alone, unpadded."""
    # Eager attention runs as matrix products, which FlopCounterMode counts; fused SDPA kernels
    # have no FLOP formula on every device.
    model = AutoModel.from_pretrained(model_path, attn_implementation="eager").to(device).eval()
    flops = {}
    for length in np.unique(lengths):
        ids = torch.ones((1, int(length)), dtype=torch.long, device=device)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        flops[length] = counter.get_total_flops()
    return float(sum(flops[length] for length in lengths))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/text/agnews_test.csv")
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="name or local directory")
    parser.add_argument("--rows", type=int, default=None, help="the first ROWS texts (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    args = parser.parse_args()
    texts = pd.read_csv(args.data)["text"].astype(str).tolist()[: args.rows]
    path = resolve_model(args.model)
    device = torch.device(args.device)

    ours = TextEmbedder(path, max_length=MAX_LENGTH, device=args.device)
    theirs = SentenceTransformer(path, device=args.device)
    theirs.max_seq_length = MAX_LENGTH
    ids = token_ids(ours.tokenizer, texts, MAX_LENGTH)
    # Each method embeds the first n texts; `ids` are tokenised outside the timer.
    methods = {
        "icc embed (tokenise + embed)": lambda n: ours.embed(texts[:n]),
        "icc embed_tokens (tokenised by a CPU stage)": lambda n: ours.embed_tokens(ids[:n])[0],
        "SentenceTransformer.encode (batch 32, default)":
            lambda n: theirs.encode(texts[:n], normalize_embeddings=True),
        f"SentenceTransformer.encode (batch {ours.batch_size}, as icc)":
            lambda n: theirs.encode(texts[:n], batch_size=ours.batch_size, normalize_embeddings=True),
    }
    if device.type == "cuda":
        theirs_fp16 = SentenceTransformer(path, device=args.device, model_kwargs={"dtype": torch.float16})
        theirs_fp16.max_seq_length = MAX_LENGTH
        methods[f"SentenceTransformer.encode fp16 (batch {ours.batch_size})"] = \
            lambda n: theirs_fp16.encode(texts[:n], batch_size=ours.batch_size, normalize_embeddings=True)

    compute_dtype = ours.autocast_dtype or torch.float32
    peak = peak_flops(device, compute_dtype)
    total_flops = model_flops(path, np.array([len(row) for row in ids]), device)
    warm = min(512, len(texts))
    reference = theirs.encode(texts[:warm], normalize_embeddings=True)
    # Warm-up, and the agreement of each method with sentence-transformers in float32.
    min_cosine = {name: float(np.min(np.sum(embed(warm) * reference, axis=1))) for name, embed in methods.items()}
    seconds = {name: [] for name in methods}
    for _ in range(args.repeats):
        for name, embed in methods.items():
            _synchronize(device)
            start = time.perf_counter()
            embed(len(texts))
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    rows = {name: {"seconds": runs, "texts_per_s": len(texts) / float(np.median(runs)),
                   "model_tflops": total_flops / float(np.median(runs)) / 1e12,
                   "fraction_of_peak": total_flops / float(np.median(runs)) / peak,
                   "min_cosine_vs_sentence_transformers_fp32": min_cosine[name]}
            for name, runs in seconds.items()}
    baseline = rows["SentenceTransformer.encode (batch 32, default)"]["texts_per_s"]
    result = {"device": device_name, "data": args.data.name, "texts": len(texts), "model": args.model,
              "max_length": MAX_LENGTH, "icc_batch_size": ours.batch_size, "compute_dtype": str(compute_dtype),
              "peak_matmul_tflops": peak / 1e12, "model_gflop_per_text": total_flops / len(texts) / 1e9,
              "methods": rows}
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"embed_throughput_{device.type}_{args.data.stem}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Embedding throughput on one device: {device_name}",
        "",
        f"{len(texts):,} texts of {args.data.name}, {args.model}, max_length {MAX_LENGTH}; "
        f"{total_flops / len(texts) / 1e9:.2f} model GFLOP per text. Peak: a matrix product in "
        f"{compute_dtype} measured at {peak / 1e12:.2f} TFLOP/s. Medians of {args.repeats} alternating runs.",
        "",
        "| method | texts/s | vs encode default | seconds [range] | model TFLOP/s | of peak | min cosine vs encode fp32 |",
        "|---|---:|---:|---|---:|---:|---:|",
        *(f"| {name} | {row['texts_per_s']:,.1f} | {row['texts_per_s'] / baseline:.2f}x "
          f"| {np.median(row['seconds']):.1f} [{min(row['seconds']):.1f}-{max(row['seconds']):.1f}] "
          f"| {row['model_tflops']:.3f} | {row['fraction_of_peak']:.1%} "
          f"| {row['min_cosine_vs_sentence_transformers_fp32']:.4f} |" for name, row in rows.items()),
        "",
        f"Command: `python benchmarks/embed_throughput.py --data {os.path.relpath(args.data)} --device {args.device}"
        + (f" --rows {args.rows}" if args.rows else "") + f" --repeats {args.repeats}`",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
