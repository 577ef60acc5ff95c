"""Fine-tune an LLM to cluster: LoRA, next-token prediction on synthetic episodes, Ray Train + DeepSpeed; scored before and after."""

from pathlib import Path

from omegaconf import DictConfig

from icc.checks import check_bool, check_int
from icc.config import to_kwargs
from icc.finetune.evaluate import generated_labels, held_out_episodes
from icc.finetune.lora import merge_adapter
from icc.finetune.summary import print_summary, write_evaluation
from icc.finetune.train import ADAPTER, check_fit, check_settings, export_adapter, fit
from icc.incontext.runner import check_episode_settings
from icc.models.llm import check_causal_lm
from icc.pipeline import StageTimer, hydra_main, write_run_record
from icc.ray_runtime import start_ray


def run(cfg: DictConfig) -> None:
    # Every setting is checked, and the held-out episodes drawn, before Ray starts.
    llm, load = to_kwargs(cfg.llm), to_kwargs(cfg.llm, "generate", "pool")  # load: what loads the model
    data, lora, trainer = to_kwargs(cfg.data), to_kwargs(cfg.lora), to_kwargs(cfg.trainer)
    evaluation = to_kwargs(cfg.evaluation)
    check_settings(load, cfg.seed, data, evaluation)
    check_causal_lm(**load)
    check_fit(data, lora, trainer, cfg.seed)
    check_episode_settings(llm["generate"], llm["pool"])  # the evaluation's answers
    check_bool(cfg.merge, "merge")
    before = check_bool(evaluation.pop("before"), "evaluation.before")
    curve_episodes = check_int(evaluation.pop("curve_episodes"), "evaluation.curve_episodes")
    held_out = held_out_episodes(**evaluation)
    curve = held_out_episodes(**{**evaluation, "episodes": curve_episodes})  # the accuracy curve during training
    out = Path(cfg.output.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    start_ray(**cfg.ray)

    answers = {}
    if held_out and before:
        with timer("evaluate_before"):
            answers["zero_shot"] = generated_labels(held_out, llm)
    with timer("train"):
        result = fit(out, load, data, lora, trainer, cfg.seed, curve)
        adapter = str(export_adapter(result, out / ADAPTER))
    if held_out:
        with timer("evaluate_after"):
            answers["finetuned"] = generated_labels(held_out, {**llm, "adapter": adapter})
    if cfg.merge:
        with timer("merge"):
            merge_adapter(out / "merged", device="cpu", **{**load, "adapter": adapter})

    metrics = {"train": result.metrics, "seconds": timer.seconds}
    if held_out:
        metrics["evaluation"] = write_evaluation(out, answers, set(data["dfs"]))
    write_run_record(out, "finetune", cfg, metrics)
    print_summary(out, cfg.llm.model, metrics)


main = hydra_main("finetune", run)

if __name__ == "__main__":
    main()
