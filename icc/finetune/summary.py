"""What an `icc finetune` run reports: evaluation.parquet, the evaluation entry of metrics.json and
the summary it prints."""

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from icc.finetune.evaluate import score_episodes, summary

EVALUATION = "evaluation.parquet"


def write_evaluation(out: Path, answers: dict[str, list[dict]], seen_dfs: set) -> dict:
    """Score each method's `answers` to the held-out episodes, write them to out/evaluation.parquet
    and return their summary (metrics.json's `evaluation`)."""
    frame = score_episodes(answers, seen_dfs)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / EVALUATION)
    return summary(frame, list(answers))


def print_summary(out: Path, model: str, metrics: dict) -> None:
    """The training run in one line, then each part's scores per method and the accuracy gain."""
    train = metrics["train"]
    print(f"\nicc finetune: {model} + LoRA, {train['step']} steps ({train['tokens_per_s']:.0f} tokens/s), "
          f"train loss {train['train_loss']:.3f}, eval loss {train.get('eval_loss', float('nan')):.3f} "
          f"(label tokens {train.get('eval_label_loss', float('nan')):.3f}) -> {out}")
    if train["history"]["held_out_acc"]:
        print("  held-out acc by episodes seen: "
              + ", ".join(f"{seen}: {acc:.3f}" for _, seen, acc in train["history"]["held_out_acc"]))
    for part, methods in metrics.get("evaluation", {}).items():
        if part == "parse_status":
            continue
        for method in ("zero_shot", "finetuned"):
            if method in methods:
                m = methods[method]
                print(f"  {part:<10} {method:<10} {m['episodes']:>5} episodes  acc {m['acc']:.3f}  ari {m['ari']:.3f}  "
                      f"nmi {m['nmi']:.3f}")
        if "acc_gain" in methods:
            gain = methods["acc_gain"]
            print(f"  {part:<10} acc gain {gain['mean']:+.3f} (95% CI {gain['ci95'][0]:+.3f} .. {gain['ci95'][1]:+.3f})")
