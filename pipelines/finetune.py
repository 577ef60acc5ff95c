"""Fine-tune an LLM to cluster: LoRA, next-token prediction on synthetic episodes, Ray Train + DeepSpeed; scored before and after."""

import sys
from pathlib import Path

import hydra
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf

from icc.config import CONFIG_DIR, to_kwargs
from icc.errors import ICCError, user_errors
from icc.files import write_json
from icc.finetune.evaluate import generated_labels, held_out_episodes, score_episodes, summary
from icc.finetune.lora import merge_adapter
from icc.finetune.train import ADAPTER, export_adapter, fit, load_options
from icc.pipeline import StageTimer, package_versions
from icc.ray_runtime import start_ray


def run(cfg: DictConfig) -> Path:
    out = Path(cfg.output.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    llm, data, evaluation = to_kwargs(cfg.llm), to_kwargs(cfg.data), to_kwargs(cfg.evaluation)
    if llm["adapter"] is not None:
        raise ICCError("llm.adapter must be null: icc finetune trains a new adapter")
    if len({cfg.seed, data["validation_seed"], evaluation["seed"]}) < 3:
        raise ICCError("seed, data.validation_seed and evaluation.seed must differ: each draws its own episodes")
    start_ray(**cfg.ray)

    before = evaluation.pop("before")
    held_out = held_out_episodes(**evaluation) if evaluation["episodes"] else []
    answers = {}
    if held_out and before:
        with timer("evaluate_before"):
            answers["zero_shot"] = generated_labels(held_out, llm)
    with timer("train"):
        result = fit(out, llm, data, to_kwargs(cfg.lora), to_kwargs(cfg.trainer), cfg.seed)
        adapter = export_adapter(result, out / ADAPTER)
    if held_out:
        with timer("evaluate_after"):
            answers["finetuned"] = generated_labels(held_out, {**llm, "adapter": str(adapter)})
    if cfg.merge:
        with timer("merge"):
            merge_adapter(str(adapter), out / "merged", device="cpu", **load_options(llm))

    metrics = {"train": result.metrics, "seconds": timer.seconds}
    if held_out:
        frame = score_episodes(answers, set(data["dfs"]))
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), out / "evaluation.parquet")
        metrics["evaluation"] = summary(frame, list(answers))
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", {
        "pipeline": "finetune",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
    })
    _print_summary(out, cfg.llm.model, metrics)
    return out


def _print_summary(out: Path, model: str, metrics: dict) -> None:
    train = metrics["train"]
    print(f"\nicc finetune: {model} + LoRA, {train['step']} steps ({train['tokens_per_s']:.0f} tokens/s), "
          f"train loss {train['train_loss']:.3f}, eval loss {train.get('eval_loss', float('nan')):.3f} -> {out}")
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


@hydra.main(config_path=CONFIG_DIR, config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
