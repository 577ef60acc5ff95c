"""GPU throughput, ready for a lent GPU: icc's TextEmbedder vs SentenceTransformer.encode, and the LLM prefill.

One process, no Ray. Models of the real architectures (all-MiniLM-L6-v2's BERT, SmolLM2-135M's
Llama) with random weights, built on the GPU machine from their config and tokenizer files
(throughput does not depend on the weights; the MiniLM weights, 88 MB, exceed what a `run`
call carries). Reported, side by side, each a median of `--repeats` alternating runs:

- embedding `--texts` AG News texts: `TextEmbedder.embed` (bf16 autocast; fp32) and
  `SentenceTransformer.encode` (fp32; the model cast to bf16), at each of `--batch-sizes`;
  texts/s, model TFLOP/s (FLOPs of each text unpadded, `embed_throughput.model_flops`) and their
  fraction of a bf16 matrix-product peak measured on the same device (`embed_throughput.peak_flops`);
- the LLM prefill attention capture runs: `--prefill-batch` sequences of `--prefill-tokens`
  random token ids through the decoder in bf16 (weights bf16) and fp32; tokens/s and fraction of peak.

Here, in the repository root, write what travels (config and tokenizer files, the texts: < 10 MiB):

    python benchmarks/gpu_embed.py --export .gpu_embed && echo /.gpu_embed/ >> .git/info/exclude
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl_st sentence-transformers

then on the GPU machine (torch, transformers; sentence-transformers from the wheel), one call:

    run(carry=[".gpu_embed", ".whl_st"], timeout_s=600, command="python3 -m pip install -q --no-index --no-deps
        --target /tmp/site .whl_st/*.whl && PYTHONPATH=.:benchmarks:/tmp/site python3 benchmarks/gpu_embed.py
        --files .gpu_embed --out $OUT")

Budget on one H200 (not measured: no GPU has been lent yet): well under 10 minutes; 20,000 texts
at ~10k texts/s take seconds a method. The CPU test, at a tiny size:

    python benchmarks/gpu_embed.py --export /tmp/ge && PYTHONPATH=.:benchmarks python benchmarks/gpu_embed.py \\
        --files /tmp/ge --out /tmp/ge_out --device cpu --tiny
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from embed_throughput import model_flops, peak_flops
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from icc.models.embedder import TextEmbedder

ROOT = Path(__file__).resolve().parents[1]
MAX_LENGTH = 256
ARCH_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def export(target: Path, rows: int = 20_000) -> None:
    """Write the encoder's and the LLM's config and tokenizer files and `rows` AG News texts to `target`."""
    from icc.models.hub import resolve_model

    for name, sub in (("all-MiniLM-L6-v2", "encoder"), ("SmolLM2-135M-Instruct", "llm")):
        (target / sub).mkdir(parents=True, exist_ok=True)
        for file in ARCH_FILES:
            if (Path(resolve_model(name)) / file).exists():
                shutil.copy(Path(resolve_model(name)) / file, target / sub / file)
    texts = pd.read_csv(ROOT.parent / "shared/data/text/agnews_test.csv")["text"]
    pd.DataFrame({"text": np.resize(texts.to_numpy(), rows)}).to_csv(target / "texts.csv", index=False)


def random_model(files: Path, work: Path) -> str:
    """A directory with the encoder's config and tokenizer and random weights of its architecture."""
    torch.manual_seed(0)
    shutil.copytree(files / "encoder", work, dirs_exist_ok=True)
    AutoModel.from_config(AutoConfig.from_pretrained(work)).save_pretrained(work)
    return str(work)


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def embedding(path: str, texts: list[str], batch_sizes: list[int], device: torch.device, repeats: int,
              peak: float) -> dict:
    """texts/s and fraction of `peak` of each method at each batch size."""
    from sentence_transformers import SentenceTransformer

    ours = {"bf16": TextEmbedder(path, max_length=MAX_LENGTH, device=device.type, precision="bfloat16"),
            "fp32": TextEmbedder(path, max_length=MAX_LENGTH, device=device.type, precision="float32")}
    theirs = {"fp32": SentenceTransformer(path, device=device.type),
              "bf16": SentenceTransformer(path, device=device.type, model_kwargs={"dtype": torch.bfloat16})}
    for model in theirs.values():
        model.max_seq_length = MAX_LENGTH
    lengths = np.array([len(ids) for ids in ours["fp32"].tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
                        ["input_ids"]])
    flops = model_flops(path, lengths, device)
    rows = {}
    for batch in batch_sizes:
        methods = {}
        for dtype, embedder in ours.items():
            def run(embedder=embedder, batch=batch):
                embedder.batch_size = batch
                embedder.embed(texts)
            methods[f"icc TextEmbedder {dtype} (batch {batch})"] = run
        for dtype, model in theirs.items():
            methods[f"SentenceTransformer.encode {dtype} (batch {batch})"] = \
                lambda model=model, batch=batch: model.encode(texts, batch_size=batch, normalize_embeddings=True)
        for fn in methods.values():
            fn()  # warm-up
        seconds = {name: [] for name in methods}
        for _ in range(repeats):
            for name, fn in methods.items():
                seconds[name].append(timed(fn, device))
        for name, runs in seconds.items():
            median = float(np.median(runs))
            rows[name] = {"seconds": runs, "texts_per_s": len(texts) / median, "model_tflops": flops / median / 1e12,
                          "fraction_of_bf16_peak": flops / median / peak}
        print(json.dumps({name: round(rows[name]["texts_per_s"], 1) for name in methods}), flush=True)
    return {"texts": len(texts), "model_gflop_per_text": flops / len(texts) / 1e9, "methods": rows}


def prefill(files: Path, batch: int, tokens: int, device: torch.device, repeats: int, peak: float) -> dict:
    """tokens/s and fraction of `peak` of one prefill of (batch, tokens) random ids, bf16 and fp32."""
    config = AutoConfig.from_pretrained(files / "llm")
    ids = torch.randint(0, config.vocab_size, (batch, tokens), device=device)
    eager = AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(device).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        eager.model(input_ids=ids[:1])  # the decoder only: attention capture reads hidden states, not logits
    flops = counter.get_total_flops() * batch
    del eager
    rows = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()

        @torch.inference_mode()
        def run(model=model):
            model.model(input_ids=ids)
        run()
        runs = [timed(run, device) for _ in range(repeats)]
        median = float(np.median(runs))
        rows[f"LLM prefill {name} ({batch} x {tokens} tokens)"] = {
            "seconds": runs, "tokens_per_s": batch * tokens / median, "model_tflops": flops / median / 1e12,
            "fraction_of_bf16_peak": flops / median / peak}
        del model
    return {"batch": batch, "tokens": tokens, "gflop": flops / 1e9, "methods": rows}


def markdown(result: dict) -> str:
    embed, llm = result["embedding"], result["prefill"]
    lines = [f"# GPU throughput: {result['device']}", "",
             f"Random weights of all-MiniLM-L6-v2's and SmolLM2-135M's architectures; {embed['texts']:,} AG News texts, "
             f"max_length {MAX_LENGTH}, {embed['model_gflop_per_text']:.2f} model GFLOP per text; bf16 matrix-product "
             f"peak measured at {result['peak_bf16_tflops']:.1f} TFLOP/s; medians of {result['repeats']} alternating runs.",
             "", "| method | texts/s | vs encode fp32 (same batch) | model TFLOP/s | of bf16 peak |", "|---|---:|---:|---:|---:|"]
    for name, row in embed["methods"].items():
        batch = name.rsplit("(batch ", 1)[1]
        base = embed["methods"][f"SentenceTransformer.encode fp32 (batch {batch}"]["texts_per_s"]
        lines.append(f"| {name} | {row['texts_per_s']:,.0f} | {row['texts_per_s'] / base:.2f}x "
                     f"| {row['model_tflops']:.2f} | {row['fraction_of_bf16_peak']:.1%} |")
    lines += ["", "| LLM prefill | tokens/s | model TFLOP/s | of bf16 peak |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {row['tokens_per_s']:,.0f} | {row['model_tflops']:.2f} | {row['fraction_of_bf16_peak']:.1%} |"
              for name, row in llm["methods"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--export", type=Path, help="write the files that travel to this directory and stop")
    parser.add_argument("--files", type=Path, default=Path(".gpu_embed"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--prefill-batch", type=int, default=32)
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="a CPU test: 64 texts, batch 16 and 32, prefill 2 x 64")
    args = parser.parse_args()
    if args.export:
        export(args.export)
        return
    if args.tiny:
        args.texts, args.batch_sizes, args.prefill_batch, args.prefill_tokens, args.repeats = 64, [16, 32], 2, 64, 1
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    peak = peak_flops(device, torch.bfloat16)
    texts = pd.read_csv(args.files / "texts.csv")["text"].astype(str).tolist()[: args.texts]
    path = random_model(args.files, args.out / "random_minilm")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "peak_bf16_tflops": peak / 1e12, "repeats": args.repeats,
              "embedding": embedding(path, texts, args.batch_sizes, device, args.repeats, peak),
              "prefill": prefill(args.files, args.prefill_batch, args.prefill_tokens, device, args.repeats, peak)}
    shutil.rmtree(path)
    stem = args.out / f"gpu_embed_{device.type}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
