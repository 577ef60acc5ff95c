"""In-context clustering: an LLM clusters the items of its prompt (its answer; its attention), on episodes run on a Ray actor pool."""

import sys
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from icc.config import CONFIG_DIR, to_kwargs
from icc.errors import ICCError, user_errors
from icc.files import write_json
from icc.incontext.attention import affinity_from_attention, spectral_labels
from icc.incontext.baselines import point_baselines, text_baselines
from icc.incontext.episodes import build_episodes, episodes_table
from icc.incontext.runner import ATTENTION_TYPE, attention_column, check_layers, num_layers, run_episodes
from icc.incontext.scoring import GROUPS, METRICS, episode_scores, mean_by_layer, summarize
from icc.models.embedder import TextEmbedder
from icc.pipeline import StageTimer, package_versions
from icc.ray_runtime import start_ray

OmegaConf.register_new_resolver("icc_config_dir", lambda sub: str(Path(CONFIG_DIR, sub)), replace=True)

METHODS = ["generate", "attention", "attention_oracle", "kmeans", "gmm", "spectral", "kmeans_embeddings"]


def run(cfg: DictConfig) -> Path:
    out = Path(cfg.output.dir)
    out.mkdir(parents=True, exist_ok=True)
    timer = StageTimer()
    data, llm, attention = to_kwargs(cfg.data), to_kwargs(cfg.llm), to_kwargs(cfg.attention)

    with timer("episodes"):
        layers = check_layers(attention["layers"], num_layers(llm["model"], llm["trust_remote_code"]))
        auto = bool(layers) and attention["layer"] == "auto"
        if layers and not auto and attention["layer"] not in layers:
            raise ICCError(f"attention.layer must be auto or one of attention.layers {layers}, got {attention['layer']!r}")
        if auto and attention["validation_seed"] == cfg.seed:
            raise ICCError("attention.validation_seed must differ from seed: validation episodes choose the layer")
        episodes = build_episodes(data, cfg.seed, data.get("episodes"), "test")
        if auto:
            episodes += build_episodes(data, attention["validation_seed"], attention["validation_episodes"], "validation")

    with timer("llm"):
        start_ray(**cfg.ray)
        rows = run_episodes(episodes_table(episodes), layers=layers, **llm)
    test = [r for r in rows if r["split"] == "test"]
    validation = [r for r in rows if r["split"] == "validation"]

    with timer("attention"), threadpool_limits(1):  # n <= 50 points: BLAS threads only add overhead
        test_labels = _labels_by_layer(test, layers, cfg.seed)
        validation_ari = mean_by_layer([r["labels"] for r in validation], _labels_by_layer(validation, layers, cfg.seed))
        test_ari = mean_by_layer([r["labels"] for r in test], test_labels)
        if auto and not validation_ari:
            raise ICCError("attention.layer=auto needs validation episodes with labels")
        layer = max(validation_ari, key=validation_ari.get) if auto else attention["layer"]
        oracle = max(test_ari, key=test_ari.get) if test_ari else None
        for i, row in enumerate(test):
            if layers:
                row["pred_attention"] = test_labels[layer][i].tolist()
            if oracle is not None:
                row["pred_attention_oracle"] = test_labels[oracle][i].tolist()

    with timer("baselines"):
        embedder = TextEmbedder(cfg.baselines.embedder) if any(r["texts"] is not None for r in test) else None
        for row in test:
            if row["texts"] is not None:
                predicted = text_baselines(row["texts"], row["k"], embedder, cfg.seed)
            else:
                predicted = point_baselines(row["points"], row["k"], cfg.seed)
            row.update({f"pred_{method}": labels.tolist() for method, labels in predicted.items()})
    methods = [m for m in METHODS if f"pred_{m}" in test[0]]
    for row in test:
        for method in methods:
            scores = episode_scores(row["labels"], row[f"pred_{method}"])
            row.update({f"{metric}_{method}": value for metric, value in scores.items()})

    with timer("write"):
        written = pa.Table.from_pylist([_reordered(r, layers) for r in test])
        for name in map(attention_column, layers):
            written = written.set_column(written.schema.get_field_index(name), name, written[name].cast(ATTENTION_TYPE))
        pq.write_table(written, out / "episodes.parquet")

    scores = pd.DataFrame(test)[[*GROUPS, *(f"{metric}_{m}" for m in methods for metric in METRICS)]]
    metrics = {
        "episodes": len(test),
        "validation_episodes": len(validation),
        "methods": summarize(scores, methods),
        "parse_status": dict(Counter(r["parse_status"] for r in test)),
        "attention": {
            "layers": layers,
            "layer": layer if layers else None,
            "layer_chosen_by": "mean ARI on validation episodes" if auto else "config",
            "validation_ari_by_layer": validation_ari,
            "oracle_layer": oracle,
            "oracle_test_ari_by_layer": test_ari,
        },
        "seconds": timer.seconds,
        "episodes_per_s": round(len(rows) / timer.seconds["llm"], 3),
    }
    write_json(out / "metrics.json", metrics)
    write_json(out / "run.json", {
        "pipeline": "incontext",
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": package_versions(),
    })
    _print_summary(out, cfg.llm.model, metrics)
    return out


def _labels_by_layer(rows: list[dict], layers: list[int], seed: int) -> dict[int, list[np.ndarray]]:
    """{layer: labels (n,) per row} by spectral clustering of each row's item attention at that layer."""
    return {
        layer: [
            spectral_labels(affinity_from_attention(np.asarray(r[attention_column(layer)])), r["k"], seed) for r in rows
        ]
        for layer in layers
    }


def _reordered(row: dict, layers: list[int]) -> dict:
    """A test row for episodes.parquet: without `split`, the attention matrices last."""
    matrices = {attention_column(layer): row[attention_column(layer)] for layer in layers}
    rest = {key: value for key, value in row.items() if key not in matrices and key != "split"}
    return {**rest, **matrices}


def _print_summary(out: Path, model: str, metrics: dict) -> None:
    att = metrics["attention"]
    print(f"\nicc incontext: {metrics['episodes']} episodes ({metrics['validation_episodes']} for validation), "
          f"{model}, {metrics['episodes_per_s']} episodes/s -> {out}")
    if att["layers"]:
        print(f"  attention layer {att['layer']} ({att['layer_chosen_by']}); oracle layer {att['oracle_layer']}")
    print(f"  {'method':<18} {'episodes':>8} {'acc':>6} {'ari':>6} {'nmi':>6}")
    for method, m in metrics["methods"].items():
        values = " ".join(f"{m[x]:>6.3f}" if m[x] is not None else f"{'-':>6}" for x in METRICS)
        print(f"  {method:<18} {m['episodes']:>8} {values}")
    print("  answers: " + ", ".join(f"{status} {count}" for status, count in metrics["parse_status"].items()))


@hydra.main(config_path=CONFIG_DIR, config_name="incontext", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
