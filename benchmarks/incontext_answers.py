"""Are the LLM's generated answers valid labellings, and do they beat the answers that ignore the items?

Runs `icc incontext` with generation only (`attention.layers=[]`) on the default synthetic grid,
on the real (UCI) numeric sets of ../shared/data/numeric/ with at most 13 columns (longer points
make prompts SmolLM2 reads slowly on a CPU) and on FCPS hepta and tetra, once with the base model (zero-shot) and, given
`--adapter`, once with a fine-tuned LoRA adapter. Each answer is checked here, independently of the
parser: a valid labelling has exactly n labels in 0..k-1 in first-appearance order. Accuracy
(Hungarian) and ARI of the answers sit next to `chance` (uniform labels), `one_cluster` (every item
in cluster 0) and k-means on the same episodes.

    python benchmarks/incontext_answers.py --out /tmp/icc-answers [--adapter /tmp/ft/final/adapter]
    python benchmarks/incontext_answers.py --out /tmp/icc-answers --adapter ... --report-only   # the runs done so far
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
NUMERIC = ROOT.parent / "shared" / "data" / "numeric"
RESULTS = ROOT / "benchmarks" / "results"
MAX_COLUMNS = 13
SHOWN = ("generate", "chance", "one_cluster", "kmeans")


def data_sets(episodes: int) -> dict[str, list[str]]:
    """{name: `icc incontext` data overrides}: the default grid, then the real numeric sets."""
    sets = {"synthetic grid": ["data=synthetic"]}
    real = [p for p in sorted(NUMERIC.glob("uci/*.data")) if len(p.read_text().split("\n", 1)[0].split()) <= MAX_COLUMNS]
    for path in real + [NUMERIC / "fcps/hepta.data", NUMERIC / "fcps/tetra.data"]:
        labels = path.with_suffix(".labels0")
        if labels.exists():
            sets[f"{path.parent.name}/{path.stem}"] = [
                "data=numeric", f"data.path={path}", f"data.labels={labels}", f"data.episodes={episodes}"]
    return sets


def run(overrides: list[str], adapter: str | None, out: Path) -> Path:
    """One `icc incontext` run into `out` (skipped when `out` holds its metrics.json already)."""
    if not (out / "metrics.json").exists():
        model = [f"llm.adapter={adapter}"] if adapter else []
        command = [sys.executable, "-m", "pipelines.incontext", *overrides, *model, "attention.layers=[]",
                   "ray.progress_bars=false", f"output.dir={out}"]
        subprocess.run(command, check=True, cwd=ROOT)
    return out


def is_labelling(labels: list[int], n: int, k: int) -> bool:
    """n labels in 0..k-1, each at most one more than the largest before it."""
    top = -1
    for label in labels:
        if not 0 <= label <= min(k - 1, top + 1):
            return False
        top = max(top, label)
    return len(labels) == n


def scores(out: Path) -> dict:
    """Valid answers, parse statuses, seconds and mean acc / ARI per SHOWN method of one run."""
    rows = pq.read_table(out / "episodes.parquet").to_pylist()
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "episodes": len(rows),
        "valid": sum(is_labelling(r["pred_generate"], r["n"], r["k"]) for r in rows),
        "parse_status": metrics["parse_status"],
        "seconds_llm": round(metrics["seconds"]["llm"], 1),
        **{m: {x: round(float(np.mean([r[f"{x}_{m}"] for r in rows])), 4) for x in ("acc", "ari")} for m in SHOWN},
    }


def markdown(report: dict) -> str:
    lines = [
        "# Generated answers of SmolLM2-135M-Instruct in `icc incontext` (constrained decoding, CPU)",
        "",
        __doc__.split("\n\n")[1].replace("\n", " "),
        "",
        "| data | model | episodes | valid answers | acc generate | acc chance | acc one cluster | acc k-means "
        "| ARI generate | ARI chance | ARI k-means | LLM s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, models in report["runs"].items():
        for model, s in models.items():  # (with --report-only, the runs done)
            lines.append(
                f"| {name} | {model} | {s['episodes']} | {s['valid']} / {s['episodes']} | {s['generate']['acc']:.3f} "
                f"| {s['chance']['acc']:.3f} | {s['one_cluster']['acc']:.3f} | {s['kmeans']['acc']:.3f} "
                f"| {s['generate']['ari']:.3f} | {s['chance']['ari']:.3f} | {s['kmeans']['ari']:.3f} "
                f"| {s['seconds_llm']:.0f} |")
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/icc-answers"))
    parser.add_argument("--adapter", help="a LoRA adapter directory of `icc finetune` (its output.dir/adapter)")
    parser.add_argument("--episodes", type=int, default=30, help="episodes per real numeric set")
    parser.add_argument("--name", default="incontext_answers_smollm2_cpu", help="the results files' name")
    parser.add_argument("--report-only", action="store_true", help="report the runs in --out, run nothing")
    args = parser.parse_args()
    models = {"zero-shot": None, **({"fine-tuned": args.adapter} if args.adapter else {})}
    report = {"command": "python benchmarks/incontext_answers.py " + " ".join(sys.argv[1:]), "runs": {}}
    for name, overrides in data_sets(args.episodes).items():
        outs = {model: args.out / name.replace("/", "-").replace(" ", "-") / model for model in models}
        report["runs"][name] = {
            model: scores(out if args.report_only else run(overrides, models[model], out))
            for model, out in outs.items() if not args.report_only or (out / "metrics.json").exists()
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
