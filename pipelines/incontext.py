"""In-context clustering: an LLM clusters the items of its prompt (its answer; its attention), on episodes run on a Ray actor pool."""

from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from icc.checks import check_bool, check_int
from icc.config import CONFIG_DIR, to_kwargs
from icc.incontext.baselines import add_baselines
from icc.incontext.episodes import build_episodes, episodes_table
from icc.incontext.layers import check_layer_choice, check_layers, choose_layer
from icc.incontext.runner import check_episode_settings, num_layers, results_table, run_episodes
from icc.incontext.scoring import add_scores, print_summary, summarize
from icc.models.llm import check_causal_lm
from icc.pipeline import StageTimer, hydra_main, write_run_record
from icc.ray_runtime import start_ray

EPISODES = "episodes.parquet"  # the run's output, besides metrics.json and run.json

OmegaConf.register_new_resolver("icc_config_dir", lambda sub: str(Path(CONFIG_DIR, sub)), replace=True)


def run(cfg: DictConfig) -> None:
    # Every setting is checked, and the episodes built, before Ray starts.
    data, attention = to_kwargs(cfg.data), to_kwargs(cfg.attention)
    load, generate, pool = to_kwargs(cfg.llm, "generate", "pool"), to_kwargs(cfg.llm.generate), to_kwargs(cfg.llm.pool)
    check_causal_lm(**load)
    check_episode_settings(generate, pool, attention["orders"])
    check_int(cfg.seed, "seed")
    check_bool(attention["position_baseline"], "attention.position_baseline")
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()

    with timer("episodes"):
        layers = check_layers(attention["layers"], num_layers(load["model"], load["trust_remote_code"]))
        auto = check_layer_choice(layers, attention["layer"], attention["validation_seed"], cfg.seed)
        episodes = build_episodes(data, cfg.seed, data.get("episodes"), "test")
        if auto:
            episodes += build_episodes(data, attention["validation_seed"], attention["validation_episodes"], "validation")

    with timer("llm"):
        start_ray(**cfg.ray)
        rows = run_episodes(episodes_table(episodes), load, generate, pool, layers, attention["orders"], cfg.seed)
    test = [r for r in rows if r["split"] == "test"]
    validation = [r for r in rows if r["split"] == "validation"]

    with timer("attention"), threadpool_limits(1):  # n <= 50 points: BLAS threads only add overhead
        predictions, layer_choice = choose_layer(
            test, validation, layers, attention["layer"], cfg.seed, attention["position_baseline"]
        )
    for row, predicted in zip(test, predictions):
        row.update(predicted)

    with timer("baselines"):
        add_baselines(test, cfg.baselines.embedder, cfg.seed)
    methods = add_scores(test)

    with timer("write"):
        pq.write_table(results_table(test, layers), out / EPISODES)

    metrics = {
        "episodes": len(test),
        "validation_episodes": len(validation),
        "methods": summarize(pd.DataFrame(test), methods),
        "parse_status": dict(Counter(r["parse_status"] for r in test)),
        "attention": layer_choice,
        "seconds": timer.seconds,
        "episodes_per_s": round(len(rows) / timer.seconds["llm"], 3),
    }
    write_run_record(out, "incontext", cfg, metrics)
    print_summary(out, cfg.llm.model, metrics)


main = hydra_main("incontext", run)

if __name__ == "__main__":
    main()
