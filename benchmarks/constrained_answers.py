"""Constrained vs free-form answers of `cluster_episodes` (`icc.incontext.constrained`): parse statuses,
accuracy and ARI of the generated labels, tokens generated and seconds, on synthetic episodes.

Episodes: `--episodes` per (k, d) cell, k 2..3, d 1..2, df 100, n 10..20; batches of
`episodes_per_batch` sorted by (d, n) as `run_episodes` makes them; the free form with the llm
config's bounds (max_new_tokens, new_tokens_per_item). Seconds: the fastest of `--repeats` runs of
each, the two alternating (greedy: the answers do not change).

    python benchmarks/constrained_answers.py [--episodes 5] [--repeats 3] [--model SmolLM2-135M-Instruct]
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from icc.config import CONFIG_DIR
from icc.incontext.runner import cluster_episodes
from icc.incontext.scoring import episode_scores
from icc.incontext.synthetic import make_episodes
from icc.models.llm import load_causal_lm

RESULTS = Path(__file__).resolve().parent / "results"


def counted_generate(model, eos: int) -> list[int]:
    """Wrap `model.generate` so that each row's new tokens (up to its first EOS, included) are
    appended to the returned list."""
    original, counts = model.generate, []

    def generate(**kwargs):
        output = original(**kwargs)
        for row in output[:, kwargs["input_ids"].shape[1]:].tolist():
            counts.append(row.index(eos) + 1 if eos in row else len(row))
        return output

    model.generate = generate
    return counts


def run(model, tokenizer, episodes: list[dict], generate: dict, constrained: bool, counts: list[int]) -> dict:
    """One pass over the episodes: parse statuses, mean acc and ARI, tokens (from `counts`), seconds, answers."""
    counts.clear()
    size = generate["episodes_per_batch"]
    start = time.perf_counter()
    results = [
        result for first in range(0, len(episodes), size)
        for result in cluster_episodes(model, tokenizer, episodes[first: first + size], (), generate["max_new_tokens"],
                                       generate["new_tokens_per_item"], constrained)
    ]
    seconds = time.perf_counter() - start
    scores = [episode_scores(e["labels"], r["labels"]) for e, r in zip(episodes, results)]
    return {
        "parse_status": dict(Counter(r["parse_status"] for r in results)),
        "acc": round(float(np.mean([s["acc"] for s in scores])), 3),
        "ari": round(float(np.mean([s["ari"] for s in scores])), 3),
        "tokens": sum(counts), "seconds": round(seconds, 1),
        "answers": [r["answer"] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    generate = yaml.safe_load((Path(CONFIG_DIR) / "llm" / "smollm2.yaml").read_text())["generate"]
    episodes = make_episodes(args.episodes, ks=[2, 3], ds=[1, 2], dfs=[100], seed=0, n_range=(10, 20))
    episodes.sort(key=lambda e: (e["d"], e["n"]))
    model, tokenizer = load_causal_lm(args.model, device="cpu")
    counts = counted_generate(model, tokenizer.eos_token_id)
    cluster_episodes(model, tokenizer, episodes[:1])  # warm-up
    runs = [{name: run(model, tokenizer, episodes, generate, constrained, counts)
             for name, constrained in (("constrained", True), ("free form", False))} for _ in range(args.repeats)]
    rows = {name: {**runs[0][name], "seconds": min(r[name]["seconds"] for r in runs)} for name in runs[0]}

    one_cluster = [episode_scores(e["labels"], [0] * e["n"]) for e in episodes]
    baseline = {metric: float(np.mean([s[metric] for s in one_cluster])) for metric in ("acc", "ari")}
    table = "\n".join(
        f"| {name} | {r['parse_status']} | {r['acc']:.3f} | {r['ari']:.3f} | {r['tokens']} | {r['seconds']:.1f} |"
        for name, r in rows.items()
    )
    examples = "\n".join(f"- {name}: `{r['answers'][0][:120]!r}`" for name, r in rows.items())
    text = f"""# Constrained vs free-form answers ({args.model}, CPU)

{len(episodes)} synthetic episodes (k 2..3, d 1..2, df 100, n 10..20), `cluster_episodes` in batches of
{generate['episodes_per_batch']}; free form at most min({generate['max_new_tokens']}, {generate['new_tokens_per_item']} n + 10) new tokens. Accuracy after Hungarian
matching and ARI: means over the episodes; tokens: generated, summed over the episodes (EOS included);
seconds: the fastest of {args.repeats} runs ({torch.get_num_threads()} torch threads).

| answers | parse status | accuracy | ARI | tokens | seconds |
|---|---|---|---|---|---|
{table}
| (every item in one cluster) | | {baseline['acc']:.3f} | {baseline['ari']:.3f} | | |

First answer of each:
{examples}

Command: `python benchmarks/constrained_answers.py --episodes {args.episodes} --repeats {args.repeats}`
"""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "constrained_answers_smollm2_cpu.md").write_text(text)
    (RESULTS / "constrained_answers_smollm2_cpu.json").write_text(json.dumps({**rows, "one_cluster": baseline}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
