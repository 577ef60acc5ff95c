"""Attention spectral clustering before and after taking prompt position out (issue 18, part 2).

SmolLM2's item attention is read once per episode in `--orders` prompt orders (the given one
first, then random ones; forward passes only) at `--layers`. Each setting -- R orders
(1, 2, ..., `--orders`) x positional baseline off/on -- then picks its layer by mean ARI on
validation episodes (seed 1, as `icc incontext` does) and is scored on the test episodes (seed 0);
R=1 without baseline is the paper's method. k-means and GMM (`icc.incontext.baselines`) score the
same test episodes. The default of `icc incontext` is the setting with the best validation ARI over
all the data sets: test labels choose nothing.

    python benchmarks/attention_position.py [--orders 4] [--episodes 20] [--validation 5] [--sets wine ...]
    python benchmarks/attention_position.py --merge results/a.json results/b.json --out attention_position
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from icc.incontext.baselines import point_baselines, text_baselines
from icc.incontext.episodes import build_episodes
from icc.incontext.layers import check_layers, choose_layer
from icc.incontext.runner import attention_column, cluster_episodes
from icc.incontext.scoring import episode_scores
from icc.models.embedder import TextEmbedder
from icc.models.llm import load_causal_lm

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path("/work/shared/data")
SETS = {
    "synthetic": {"kind": "synthetic", "ks": [2, 3], "ds": [1, 2], "dfs": [1, 2, 100], "n_range": [10, 20]},
    **{
        name: {"kind": "numeric", "path": f"{DATA}/numeric/{path}.data", "labels": f"{DATA}/numeric/{path}.labels0",
               "n_range": [10, 20], "k_range": [2, 3], "standardize": True}
        for name, path in [("wine", "uci/wine"), ("ecoli", "uci/ecoli"), ("hepta", "fcps/hepta"), ("tetra", "fcps/tetra")]
    },
    "cstr": {"kind": "text", "path": f"{DATA}/text/cstr.csv", "text_column": "text", "label_column": "label",
             "n_range": [10, 12], "k_range": [2, 2], "max_chars": 120, "conditions": [None], "condition_labels": None},
}


def read_attention(model, tokenizer, episodes: list[dict], layers: list[int], orders: int, batch: int) -> list[dict]:
    """`run_episodes`-like rows: each episode with `attention_orders` and `attention_L<layer>`."""
    rows = []
    for start in range(0, len(episodes), batch):
        chunk = episodes[start: start + batch]
        results = cluster_episodes(model, tokenizer, chunk, layers, answer=[False] * len(chunk), orders=orders)
        for episode, result in zip(chunk, results):
            rows.append({**episode, "attention_orders": result["orders"],
                         **{attention_column(layer): result["attention"][layer] for layer in layers}})
    return rows


def first_orders(rows: list[dict], layers: list[int], orders: int) -> list[dict]:
    """The rows as if read with only their first `orders` prompt orders."""
    return [{**r, "attention_orders": r["attention_orders"][:orders],
             **{attention_column(layer): r[attention_column(layer)][:orders] for layer in layers}} for r in rows]


def mean_scores(rows: list[dict], predictions: list) -> dict:
    scores = [episode_scores(r["labels"], p) for r, p in zip(rows, predictions)]
    return {metric: round(float(np.mean([s[metric] for s in scores])), 4) for metric in ("acc", "ari")}


def evaluate(test: list[dict], validation: list[dict], layers: list[int], max_orders: int) -> dict:
    """{setting: {"acc", "ari", "layer", "validation_ari"}} per attention setting, and the baselines."""
    settings = {}
    for orders in sorted({1, 2, max_orders}):
        for baseline in (False, True):
            t, v = first_orders(test, layers, orders), first_orders(validation, layers, orders)
            predictions, summary = choose_layer(t, v, layers, "auto", seed=0, baseline=baseline)
            settings[f"R={orders} baseline={'on' if baseline else 'off'}"] = {
                **mean_scores(test, [p["pred_attention"] for p in predictions]),
                "layer": summary["layer"],
                "validation_ari": round(summary["validation_ari_by_layer"][summary["layer"]], 4),
            }
    return settings


def baselines(test: list[dict], embedder) -> dict:
    if test[0]["texts"] is not None:
        predicted = [text_baselines(r["texts"], r["k"], embedder, 0) for r in test]
    else:
        predicted = [point_baselines(r["points"], r["k"], 0) for r in test]
    return {method: mean_scores(test, [p[method] for p in predicted]) for method in predicted[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--orders", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=20, help="test episodes per real set")
    parser.add_argument("--validation", type=int, default=5, help="validation episodes per real set")
    parser.add_argument("--per-cell", type=int, default=3, help="synthetic test episodes per (k, d, df) cell")
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--layers", default="8,11,14,17,20,23,26", help="decoder layers read (every_3: all of icc's default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", default="attention_position")
    parser.add_argument("--merge", nargs="+", help="combine the sets of earlier reports into --out; no model runs")
    args = parser.parse_args()
    if args.merge:
        reports = [json.loads(Path(path).read_text()) for path in args.merge]
        sets = {name: result for report in reports for name, result in report["sets"].items()}
        write({**reports[0], "sets": sets, "merged_from": [str(path) for path in args.merge]}, args.out)
        return

    torch.set_num_threads(2)
    model, tokenizer = load_causal_lm(args.model, device="cpu")
    spec = args.layers if args.layers.startswith("every_") else [int(x) for x in args.layers.split(",")]
    layers = check_layers(spec, model.config.num_hidden_layers)
    embedder = TextEmbedder("all-MiniLM-L6-v2") if "cstr" in args.sets else None
    report = {"model": args.model, "layers": layers, "orders": args.orders, "sets": {}}
    for name in args.sets:
        data, start = SETS[name], time.perf_counter()
        synthetic = data["kind"] == "synthetic"
        test = build_episodes(data, 0, args.per_cell if synthetic else args.episodes, "test")
        validation = build_episodes(data, 1, 1 if synthetic else args.validation, "validation")
        rows = read_attention(model, tokenizer, test + validation, layers, args.orders, args.batch)
        result = {
            "episodes": len(test), "validation_episodes": len(validation),
            "attention": evaluate(rows[: len(test)], rows[len(test):], layers, args.orders),
            "baselines": baselines(test, embedder),
            "seconds": round(time.perf_counter() - start, 1),
        }
        report["sets"][name] = result
        print(name, json.dumps(result), flush=True)
        write(report, args.out)


def write(report: dict, out: str) -> None:
    """Add the mean validation ARI per setting over the sets so far and the setting it chooses; write the JSON."""
    totals = {}
    for result in report["sets"].values():
        for setting, scores in result["attention"].items():
            totals.setdefault(setting, []).append(scores["validation_ari"])
    report["mean_validation_ari"] = {setting: round(float(np.mean(v)), 4) for setting, v in totals.items()}
    report["chosen"] = max(report["mean_validation_ari"], key=report["mean_validation_ari"].get)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{out}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{out}.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    """The report as tables: per set, test accuracy / ARI of every setting and baseline."""
    lines = [
        f"# Attention spectral clustering without prompt position ({report['model']}, CPU)",
        "",
        (f"`python benchmarks/attention_position.py` (layers {report['layers']}, up to {report['orders']} prompt "
         "orders). Each attention setting picks its layer by mean ARI on the validation episodes (seed 1); "
         "scores are means over the test episodes (seed 0). R=1 baseline=off is the paper's method (before)."),
        "",
        "| set | episodes | method | layer | validation ARI | test acc | test ARI |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in report["sets"].items():
        for setting, m in result["attention"].items():
            lines.append(f"| {name} | {result['episodes']} | attention {setting} | {m['layer']} | "
                         f"{m['validation_ari']:.3f} | {m['acc']:.3f} | {m['ari']:.3f} |")
        for method, m in result["baselines"].items():
            lines.append(f"| {name} | {result['episodes']} | {method} | | | {m['acc']:.3f} | {m['ari']:.3f} |")
    if "merged_from" in report:
        lines += ["", "Sets from the runs " + ", ".join(f"`{path}`" for path in report["merged_from"]) + "."]
    lines += ["", "Mean validation ARI over the sets (chooses the default): "
              + ", ".join(f"{s} {v:.3f}" for s, v in report["mean_validation_ari"].items())
              + f"; chosen: **{report['chosen']}**.", ""]
    return "\n".join(lines)
    print(json.dumps({"mean_validation_ari": report["mean_validation_ari"], "chosen": report["chosen"]}))


if __name__ == "__main__":
    main()
