"""The LLM-embeddings clustering study (Petukhova et al. 2024, ../shared/REFERENCE.md §2) with `icc bench`.

Five `icc bench` runs into OUT/<run> (each skipped when its bench.parquet exists), one shared cache:
- texts: TF-IDF and MiniLM x the paper's five algorithms x CSTR, SyskillWebert, BBC, 20 Newsgroups
  (every row);
- smollm2: SmolLM2-135M mean-pooled hidden states x the five algorithms x CSTR and SyskillWebert
  (every row, 256 tokens);
- samples: TF-IDF, MiniLM and SmolLM2 (128 tokens) on stratified samples of BBC (300 rows) and
  20 Newsgroups (600 rows), as SmolLM2 embeds about one text a second on this CPU;
- summaries: TF-IDF and MiniLM on SmolLM2 summaries of CSTR and SyskillWebert (`bench.summarize`);
- sizes: MiniLM on CSTR and SyskillWebert reduced by PCA to 256, 128, 64, 32 (`bench.dims`).

Writes benchmarks/results/bench.{md,parquet}: the best F1 / ARI per dataset and embedding next to
the paper's, then the bench.md tables over every cell of the runs; and OUT/bench.html, the plot.

    flock /tmp/icc-heavy.lock python benchmarks/bench_paper.py --out /tmp/icc-bench
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from icc.bench.tables import write_markdown, write_plot

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT.parent / "shared" / "data" / "text"
RESULTS = ROOT / "benchmarks" / "results"
ICC = Path(sys.executable).parent / "icc"

SAMPLED = {"bbc_300": ("bbc", 300), "newsgroups_600": ("20newsgroups", 600)}  # name: (dataset, rows); no digit first
SAMPLES = [f"+datasets.{name}={{path:{TEXT / ('20newsgroups_test' if of == '20newsgroups' else of)}.csv,"
           f"text_column:text,label_column:label,k:null,sample:{rows}}}" for name, (of, rows) in SAMPLED.items()]
SMALL = "bench.datasets=[cstr,syskillwebert]"
RUNS = {
    "texts": ["bench.datasets=[cstr,syskillwebert,bbc,20newsgroups]", "bench.embedders=[tfidf,minilm]"],
    "smollm2": [SMALL, "bench.embedders=[smollm2_mean]"],
    "samples": [*SAMPLES, f"bench.datasets=[{','.join(SAMPLED)}]", "bench.embedders=[tfidf,minilm,smollm2_mean]",
                "+embedders.smollm2_mean.max_length=128"],
    "summaries": [SMALL, "bench.embedders=[tfidf,minilm]", "bench.summarize=true", "summarize.max_chars=1000",
                  "summarize.max_new_tokens=48"],
    "sizes": [SMALL, "bench.embedders=[minilm]", "bench.dims=[256,128,64,32]"],
}
# REFERENCE.md §2: best F1 / ARI per dataset (the paper has no BBC).
PAPER = {
    "cstr": {"SBERT (all-mpnet-base-v2)": (.85, .60), "OpenAI ada-002": (.84, .59)},
    "syskillwebert": {"SBERT (all-mpnet-base-v2)": (.74, .58), "OpenAI ada-002": (.90, .79)},
    "20newsgroups": {"SBERT (all-mpnet-base-v2)": (.43, .25), "OpenAI ada-002": (.69, .52)},
}


def run(name: str, out: Path) -> tuple[pd.DataFrame, float]:
    """The cells of one run and its wall-clock seconds (0 when it was already there)."""
    target = out / name
    start = time.perf_counter()
    if not (target / "bench.parquet").exists():
        command = [str(ICC), "bench", *RUNS[name], "bench.cpus_per_cell=2", "ray.progress_bars=false",
                   f"output.dir={target}"]
        subprocess.run(command, check=True, cwd=ROOT)
    cells = pd.read_parquet(target / "bench.parquet")
    return cells.assign(run=name), time.perf_counter() - start


def paper_table(cells: pd.DataFrame) -> str:
    """Best F1 / ARI (by F1, over the five algorithms) per dataset and full-size text embedding."""
    full = cells[(cells["reduce"] == "none") & (cells["input"] == "text")]
    best = full.loc[full.groupby(["dataset", "embedder"])["f1_weighted"].idxmax()]
    embedders = list(dict.fromkeys(best["embedder"]))
    papers = list(next(iter(PAPER.values())))
    lines = ["| dataset | rows | " + " | ".join([f"paper {p}" for p in papers] + [f"ours {e}" for e in embedders]) + " |",
             "|---" * (2 + len(papers) + len(embedders)) + "|"]
    for dataset, rows in best.groupby("dataset", sort=False):
        base = SAMPLED.get(dataset, (dataset,))[0]
        paper = [f"{PAPER[base][p][0]:.2f} / {PAPER[base][p][1]:.2f}" if base in PAPER else "-" for p in papers]
        ours = {r.embedder: f"{r.f1_weighted:.3f} / {r.ari:.3f} ({r.algorithm})" for r in rows.itertuples()}
        lines.append(f"| {dataset} | {rows['rows'].iloc[0]} | " + " | ".join(paper + [ours.get(e, "-") for e in embedders]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory of the runs (kept, so a re-run resumes)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs, seconds = [], {}
    for name in RUNS:
        cells, seconds[name] = run(name, args.out)
        runs.append(cells)
    cells = pd.concat(runs, ignore_index=True).drop_duplicates(  # e.g. MiniLM on CSTR in texts, summaries and sizes
        ["dataset", "embedder", "input", "reduce", "dim", "algorithm"])
    args.results.mkdir(parents=True, exist_ok=True)
    cells.to_parquet(args.results / "bench.parquet", index=False)
    write_markdown(cells, args.results / "bench.md", title="icc bench: every cell of the runs below")
    write_plot(cells, args.out / "bench.html")  # 5 MB with plotly inlined: kept out of the repository
    header = "\n".join([
        "<!-- Written by benchmarks/bench_paper.py; the tables after the first are `icc bench`'s bench.md. -->",
        "# The LLM-embeddings clustering study on this 2-core CPU",
        "",
        "`python benchmarks/bench_paper.py --out DIR`: the `icc bench` runs of its docstring, "
        "wall-clock seconds per run (0: reused): " + ", ".join(f"{n} {s:.0f}" for n, s in seconds.items()) + ".",
        "",
        "## Best F1 / ARI per dataset and embedding, next to the paper (REFERENCE.md §2)",
        "",
        paper_table(cells),
        "",
    ])
    path = args.results / "bench.md"
    path.write_text(header + "\n" + path.read_text())
    print(path.read_text()[:3000])


if __name__ == "__main__":
    main()
