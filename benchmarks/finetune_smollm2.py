"""SmolLM2-135M-Instruct + LoRA fine-tuned by `icc finetune` on a CPU: zero-shot (unless --no-before) against
fine-tuned answers on the same held-out synthetic episodes, next to two answers that know nothing of the points.

A CPU-sized version of the paper's setting: k in --ks, d in --ds, n in 10..20 points, training dfs
{1, 2, 5, 100}, evaluation also at the unseen dfs 1.25, 1.5, 1.75; the paper's LoRA (r=64, alpha=16,
dropout 0.05, q/k/v/o) and a cosine schedule; 2 CPU Ray Train workers with DeepSpeed ZeRO-2, fp32.
`icc finetune` runs as a subprocess on a local Ray (again, resuming, if it fails); the references are
"chance" (labels uniform in 0..k-1, mean of 20 draws per episode) and "one cluster" (every point in
cluster 0), also for the held-out accuracy that training logs against the episodes seen (the curve).
The Markdown table and the raw numbers (JSON) go to benchmarks/results/.

    python benchmarks/finetune_smollm2.py --steps 60 --ks 2,3 --ds 1,2
    python benchmarks/finetune_smollm2.py --out DIR --report-only   # the tables again from a finished run
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
import pyarrow.parquet as pq

from icc.finetune.evaluate import held_out_episodes, paired_bootstrap
from icc.incontext.scoring import METRICS, episode_scores

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("zero_shot", "finetuned", "chance", "one_cluster")  # zero_shot only where the run answered before training
NAMES = {"zero_shot": "zero-shot", "finetuned": "fine-tuned", "chance": "chance", "one_cluster": "one cluster"}
PARTS = ("all", "seen_df", "unseen_df")
TRAIN_DFS = 4
EVAL_DFS = [1, 1.25, 1.5, 1.75, 2, 5, 100]  # icc finetune's default evaluation.dfs
N_RANGE = [10, 20]


def finetune(out: Path, args) -> dict:
    """Run `icc finetune`; when it fails (e.g. its local Ray was stopped from outside), run it again with
    trainer.resume=true once a checkpoint exists. Returns the overrides, the seconds of all attempts
    and their number (also written to out/benchmark_run.json)."""
    overrides = [
        "llm.model=SmolLM2-135M-Instruct", "ray.progress_bars=false", f"data.ks=[{args.ks}]", f"data.ds=[{args.ds}]",
        f"data.n_range=[{N_RANGE[0]},{N_RANGE[1]}]", f"data.episodes={args.episodes}", "data.validation_episodes=1",
        f"data.loss_tokens={args.loss_tokens}", f"lora.target_modules=[{args.lora_modules}]",
        f"trainer.workers={args.workers}", f"trainer.micro_batch_size={args.micro_batch_size}",
        f"trainer.accumulation={args.accumulation}", f"trainer.max_steps={args.steps}", f"trainer.lr={args.lr}",
        f"trainer.warmup_steps={args.warmup_steps}", f"trainer.eval_every={args.eval_every}",
        f"trainer.checkpoint_every={args.checkpoint_every}", f"evaluation.episodes={args.eval_episodes}",
        f"evaluation.curve_episodes={args.curve_episodes}", f"output.dir={out}",
        f"evaluation.before={str(not args.no_before).lower()}",
    ]
    start = time.perf_counter()
    for attempt in range(1, args.attempts + 1):
        resume = (out / "train" / "checkpoint_manager_snapshot.json").exists()
        command = [Path(sys.executable).parent / "icc", "finetune", *overrides, f"trainer.resume={str(resume).lower()}"]
        if subprocess.run(command, cwd=ROOT).returncode == 0:
            run = {"command": " ".join(["python", "benchmarks/finetune_smollm2.py", *sys.argv[1:]]),
                   "overrides": overrides, "job_seconds": round(time.perf_counter() - start, 1), "attempts": attempt}
            (out / "benchmark_run.json").write_text(json.dumps(run, indent=2) + "\n")
            return run
    raise SystemExit(f"icc finetune failed {args.attempts} times")


def with_references(frame: pd.DataFrame, draws: int = 20, seed: int = 0) -> pd.DataFrame:
    """`frame` (evaluation.parquet) with acc/ari/nmi of the "chance" and "one_cluster" answers."""
    rng = np.random.default_rng(seed)
    chance = [
        {m: np.mean([s[m] for s in scores]) for m in METRICS}
        for scores in ([episode_scores(labels, rng.integers(0, k, len(labels))) for _ in range(draws)]
                       for labels, k in zip(frame["labels"], frame["k"]))
    ]
    one = [episode_scores(labels, np.zeros(len(labels), dtype=int)) for labels in frame["labels"]]
    for method, scores in (("chance", chance), ("one_cluster", one)):
        for metric in METRICS:
            frame[f"{metric}_{method}"] = [s[metric] for s in scores]
    return frame


def references(episodes: list[dict]) -> dict:
    """Mean accuracy of the "chance" and "one_cluster" answers to `episodes` (as `with_references`)."""
    frame = with_references(pd.DataFrame({"labels": [e["labels"] for e in episodes], "k": [e["k"] for e in episodes]}))
    return {method: float(frame[f"acc_{method}"].mean()) for method in ("chance", "one_cluster")}


def spread(values) -> dict:
    """Per-episode spread of a score: mean, standard deviation and quartiles."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)), "q1": q1, "median": median, "q3": q3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps")
    parser.add_argument("--ks", default="2,3", help="cluster counts, comma-separated")
    parser.add_argument("--ds", default="1,2", help="dimensions, comma-separated")
    parser.add_argument("--episodes", type=int, default=40, help="training episodes per (k, d, df) cell")
    parser.add_argument("--eval-episodes", type=int, default=5, help="held-out episodes per (k, d, df) cell")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--loss-tokens", default="answer", help="data.loss_tokens: answer or labels")
    parser.add_argument("--lora-modules", default="q_proj,k_proj,v_proj,o_proj", help="lora.target_modules")
    parser.add_argument("--curve-episodes", type=int, default=1, help="held-out episodes per cell for the curve")
    parser.add_argument("--no-before", action="store_true", help="no zero-shot answers (evaluation.before=false)")
    parser.add_argument("--notes", type=Path, default=None, help="Markdown appended to the results (e.g. a diagnosis)")
    parser.add_argument("--attempts", type=int, default=3, help="runs of icc finetune, resuming after a failure")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results")
    parser.add_argument("--name", default="finetune_smollm2_cpu", help="file name of the results, no suffix")
    parser.add_argument("--out", type=Path, default=None, help="output.dir of icc finetune (default: a temporary one)")
    parser.add_argument("--report-only", action="store_true", help="read the finished run in --out, do not train")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = (args.out or Path(tmp)).resolve()
        run = json.loads((out / "benchmark_run.json").read_text()) if args.report_only else finetune(out, args)
        metrics = json.loads((out / "metrics.json").read_text())
        frame = with_references(pq.read_table(out / "evaluation.parquet").to_pandas())
    train = metrics["train"]
    curve = held_out_episodes(args.curve_episodes, [int(k) for k in args.ks.split(",")],
                              [int(d) for d in args.ds.split(",")], EVAL_DFS, N_RANGE, seed=2)
    methods = [m for m in METHODS if f"acc_{m}" in frame]
    others = [m for m in methods if m != "finetuned"]
    parts = {"all": frame, "seen_df": frame[frame["seen"]], "unseen_df": frame[~frame["seen"]]}
    result = {
        "model": "SmolLM2-135M-Instruct", **run, "methods": methods,
        "effective_batch": args.workers * args.micro_batch_size * args.accumulation,
        "training_episodes": args.episodes * len(args.ks.split(",")) * len(args.ds.split(",")) * TRAIN_DFS,
        "seconds": metrics["seconds"],
        "train": {key: train[key] for key in ("step", "resumed_from_step", "train_loss", "eval_loss", "tokens_per_s",
                                              "peak_memory_gib")},
        "eval_loss_by_step": train["history"]["eval_loss"],
        "eval_label_loss_by_step": train["history"]["eval_label_loss"],
        "curve": {"episodes": len(curve), "step_seen_acc": train["history"]["held_out_acc"], **references(curve)},
        "evaluation": metrics["evaluation"],
        "scores": {part: {m: {"episodes": len(rows), **{x: float(rows[f"{x}_{m}"].mean()) for x in METRICS}}
                          for m in methods} for part, rows in parts.items()},
        "acc_gain_over": {part: {m: paired_bootstrap(rows[f"acc_{m}"], rows["acc_finetuned"])
                                 for m in others} for part, rows in parts.items()},
        "per_episode_acc": {part: {m: spread(rows[f"acc_{m}"]) for m in methods} for part, rows in parts.items()},
        "by_df_acc": {f"{df:g}": {m: float(rows[f"acc_{m}"].mean()) for m in methods} for df, rows in frame.groupby("df")},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / args.name
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    notes = "\n\n" + args.notes.read_text().strip() if args.notes else ""
    stem.with_suffix(".md").write_text(markdown(result, args) + notes + "\n")
    print(markdown(result, args))


def markdown(result: dict, args) -> str:
    train, scores, gains, methods = result["train"], result["scores"], result["acc_gain_over"], result["methods"]
    others, answered = [m for m in methods if m != "finetuned"], [m for m in methods if m != "one_cluster"]
    ci = lambda g: f"{g['mean']:+.3f} ({g['ci95'][0]:+.3f} .. {g['ci95'][1]:+.3f})"  # noqa: E731
    lines = [
        f"# icc finetune: SmolLM2-135M-Instruct + LoRA on a 2-core CPU, fine-tuned vs {', '.join(NAMES[m] for m in others)} "
        f"(k {args.ks}, d {args.ds})",
        "",
        f"Training: {result['training_episodes']} synthetic episodes (k in {{{args.ks}}}, d in {{{args.ds}}}, n in 10..20, "
        f"df in {{1, 2, 5, 100}}), {train['step']} optimizer steps of {result['effective_batch']} episodes "
        f"({train['step'] * result['effective_batch']} episodes seen), LoRA r=64 alpha=16 on {args.lora_modules}, "
        f"data.loss_tokens={args.loss_tokens}, lr {args.lr} "
        f"cosine, {args.workers} Ray Train workers with DeepSpeed ZeRO-2 (fp32, gloo): "
        f"{result['seconds']['train']:.0f} s of training, {train['tokens_per_s']:.0f} tokens/s. "
        f"Eval loss per answer token {result['eval_loss_by_step'][0][1]:.3f} at step 0, {train['eval_loss']:.3f} at the end; "
        f"per label token {result['eval_label_loss_by_step'][0][1]:.3f} at step 0, "
        f"{result['eval_label_loss_by_step'][-1][1]:.3f} at the end.",
        "",
        f"Evaluation: the same {scores['all']['finetuned']['episodes']} held-out episodes (other seeds; "
        f"{args.eval_episodes} per (k, d, df) cell, df also at the unseen 1.25, 1.5, 1.75) answered by "
        + ("the base model (zero-shot) and " if "zero_shot" in methods else "")
        + "the fine-tuned model, constrained greedy; accuracy after Hungarian matching (a missing label is an error). "
        "Chance: uniform random labels; one cluster: every point in cluster 0.",
        "",
        "| episodes | n | " + " | ".join(f"acc {NAMES[m]}" for m in methods) + " | "
        + " | ".join(f"ARI / NMI {NAMES[m]}" for m in answered) + " |",
        "|---|---|" + "---|" * (len(methods) + len(answered)),
    ]
    for part in PARTS:
        s = scores[part]
        lines.append(
            f"| {part} | {s['finetuned']['episodes']} | " + " | ".join(f"{s[m]['acc']:.3f}" for m in methods) + " | "
            + " | ".join(f"{s[m]['ari']:.3f} / {s[m]['nmi']:.3f}" for m in answered) + " |"
        )
    lines += ["", "Paired accuracy gain of the fine-tuned model, mean and 95% bootstrap CI over episodes "
              "(better / worse / tied episodes):", "",
              "| episodes | " + " | ".join(f"over {NAMES[m]}" for m in others) + " |", "|---|" + "---|" * len(others)]
    for part in PARTS:
        g = gains[part]
        lines.append(f"| {part} | " + " | ".join(
            f"{ci(g[m])}, {g[m]['better']} / {g[m]['worse']} / {g[m]['tied']}" for m in others
        ) + " |")
    lines += ["", "| df | " + " | ".join(f"acc {NAMES[m]}" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for df, acc in result["by_df_acc"].items():
        lines.append(f"| {df} | " + " | ".join(f"{acc[m]:.3f}" for m in methods) + " |")
    curve = result["curve"]
    lines += ["", f"Held-out accuracy during training ({curve['episodes']} other held-out episodes, constrained greedy "
              f"answers; chance {curve['chance']:.3f}, one cluster {curve['one_cluster']:.3f} on them):", "",
              "| step | episodes seen | held-out acc | eval loss (label tokens) |", "|---|---|---|---|"]
    label_loss = dict(result["eval_label_loss_by_step"])
    for step, seen, acc in curve["step_seen_acc"]:
        lines.append(f"| {step} | {seen} | {acc:.3f} | {label_loss[step]:.3f} |")
    spreads = result["per_episode_acc"]["all"]
    lines += [
        "",
        "Per-episode accuracy (all episodes): " + "; ".join(
            f"{m} mean {s['mean']:.3f}, std {s['std']:.3f}, quartiles {s['q1']:.3f} / {s['median']:.3f} / {s['q3']:.3f}"
            for m, s in spreads.items() if m in ("zero_shot", "finetuned")) + ".",
        "Answers (parse status): " + "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in statuses.items())
                                               for m, statuses in result["evaluation"]["parse_status"].items()) + ".",
        "",
        f"Whole job (Ray start, both evaluations, training): {result['job_seconds']:.0f} s in {result['attempts']} "
        f"run(s) of icc finetune (the training seconds above are the last run's, from step "
        f"{train['resumed_from_step']}). Command: `{result['command']}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
