"""Scheduled incremental runs on AG News: 4 daily partitions assigned to the first day's centroids
vs one full run over all of them.

AG News test (7,600 news, 4 topics) is split at random (seed 0) into 4 partitions of 1,900 rows,
`date=2026-01-0{1..4}/part.csv` (columns id = the row number in the CSV, text, label). Then
- incremental: day d = 1..4 adds partition d to the corpus directory and runs
  `icc cluster schedule.mode=incremental` (day 1 fits k-means k=4 on partition 1, days 2-4 embed
  their partition and assign it to those centroids; default drift threshold);
- full: one `icc cluster` (schedule.mode=full) over the 4 partitions: embeds all 7,600 rows, fits;
- refit: `schedule.refit=true` on a copy of the incremental state after day 4 (fits on the
  stored embeddings of all partitions, embeds nothing).
Every command is a separate `icc` process (its own local Ray, MiniLM, labeler=none, no report);
seconds are their wall-clock time. Reported: ARI between the incremental clusters of partitions
2-4 and the full run's (and the refit's) clusters of the same rows, ACC/ARI of each against the
topics, drift per run, seconds per run.

    flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/incremental_agnews.py
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from sklearn.metrics import adjusted_rand_score

from icc.corpus.incremental import read_assignments
from icc.metrics import external_metrics

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "text" / "agnews_test.csv"
WORK = ROOT / "benchmarks" / "runs" / "incremental_agnews"
RESULTS = ROOT / "benchmarks" / "results"
DAYS = [f"date=2026-01-0{d}" for d in (1, 2, 3, 4)]
COMMON = ["data=file", "data.id_column=id", "data.label_column=label", "clusterer.k=4", "labeler=none",
          "report.enabled=false", "ray.progress_bars=false"]


def icc(*args) -> float:
    """Run `icc cluster <args>`; its wall-clock seconds."""
    start = time.perf_counter()
    result = subprocess.run([Path(sys.executable).parent / "icc", "cluster", *COMMON, *args], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    print(result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "", flush=True)
    return round(time.perf_counter() - start, 1)


def split(corpus: Path) -> dict:
    """The partitions as {id: label}; writes them under `corpus`/staging."""
    table = pyarrow.csv.read_csv(CSV)
    table = table.append_column("id", pa.array(np.arange(table.num_rows)))
    order = np.random.default_rng(0).permutation(table.num_rows)
    for day, rows in zip(DAYS, np.array_split(order, len(DAYS))):
        (corpus / "staging" / day).mkdir(parents=True)
        pyarrow.csv.write_csv(table.take(np.sort(rows)).select(["id", "text", "label"]),
                              corpus / "staging" / day / "part.csv")
    return dict(zip(table["id"].to_pylist(), table["label"].to_pylist()))


def scores(ids, clusters, labels: dict) -> dict:
    found = external_metrics(np.array([labels[i] for i in ids]), np.asarray(clusters))
    return {"acc": round(found["acc"], 4), "ari": round(found["ari"], 4)}


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    labels = split(WORK)
    data, state = WORK / "corpus", WORK / "state"
    runs = []
    for day in DAYS:
        shutil.copytree(WORK / "staging" / day, data / day)
        seconds = icc(f"data.path={data}", "schedule.mode=incremental", f"schedule.state={state}",
                      f"output.dir={WORK / 'hydra' / day.replace('=', '_')}")  # no '=' in a Hydra value
        (metrics_file,) = sorted((state / "runs").glob("*/metrics.json"))[-1:]
        metrics = json.loads(metrics_file.read_text())
        runs.append({"partition": day, "seconds": seconds, "action": metrics["action"],
                     "rows_embedded": metrics["rows_embedded_this_run"], "drift": metrics.get("drift"),
                     "stage_seconds": metrics["seconds"]})
    incremental = read_assignments(state).to_pandas()
    shutil.copytree(state, WORK / "state_refit")
    refit_seconds = icc(f"data.path={data}", "schedule.mode=incremental", f"schedule.state={WORK / 'state_refit'}",
                        "schedule.refit=true", f"output.dir={WORK / 'hydra' / 'refit'}")
    refit = read_assignments(WORK / "state_refit").to_pandas()
    full_seconds = icc(f"data.path={data}", f"output.dir={WORK / 'full'}")
    full = pq.read_table(WORK / "full" / "assignments.parquet").to_pandas()

    by_id = {name: dict(zip(t["id"], t["cluster"])) for name, t in (("full", full), ("refit", refit))}
    later = incremental[incremental["partition"] != DAYS[0]]
    result = {
        "rows": len(incremental), "partitions": DAYS, "runs": runs,
        "full": {"seconds": full_seconds, **scores(full["id"], full["cluster"], labels)},
        "refit": {"seconds": refit_seconds, **scores(refit["id"], refit["cluster"], labels)},
        "incremental": {"seconds": sum(r["seconds"] for r in runs),
                        **scores(incremental["id"], incremental["cluster"], labels),
                        "later_partitions": scores(later["id"], later["cluster"], labels)},
        "ari_later_partitions_vs": {
            name: round(adjusted_rand_score([by_id[name][i] for i in later["id"]], later["cluster"]), 4)
            for name in by_id},
    }
    (RESULTS / "incremental_agnews.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "incremental_agnews.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [
        "# Incremental runs on AG News (4 partitions of 1,900 rows) vs a full run",
        "",
        "`flock /tmp/icc-heavy.lock .venv/bin/python benchmarks/incremental_agnews.py` (2 CPUs, MiniLM, k-means k=4;",
        "each run a separate `icc cluster` process with its own local Ray; see the script's docstring).",
        "",
        "| run | action | rows embedded | far_share | size_tvd | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        drift = run["drift"] or {}
        lines.append(f"| incremental {run['partition']} | {run['action']} | {run['rows_embedded']} | "
                     + " | ".join(f"{drift[name]:.3f}" if name in drift else "" for name in ("far_share", "size_tvd"))
                     + f" | {run['seconds']} |")
    lines += [
        f"| refit (schedule.refit=true, stored embeddings) | refit | 0 | | | {r['refit']['seconds']} |",
        f"| full (schedule.mode=full, all 4 partitions) | fit | {r['rows']} | | | {r['full']['seconds']} |",
        "",
        "| clusters of | ACC | ARI (vs topics) |",
        "|---|---|---|",
        f"| incremental, all 4 partitions | {r['incremental']['acc']} | {r['incremental']['ari']} |",
        f"| incremental, partitions 2-4 (assigned) | {r['incremental']['later_partitions']['acc']} | "
        f"{r['incremental']['later_partitions']['ari']} |",
        f"| full run | {r['full']['acc']} | {r['full']['ari']} |",
        f"| refit | {r['refit']['acc']} | {r['refit']['ari']} |",
        "",
        f"Agreement of the incremental assignments of partitions 2-4 with the full run's clusters of the same "
        f"rows: ARI {r['ari_later_partitions_vs']['full']}; with the refit's: {r['ari_later_partitions_vs']['refit']}.",
        f"A daily incremental run (partitions 2-4) took {np.mean([x['seconds'] for x in r['runs'][1:]]):.1f} s on "
        f"average vs {r['full']['seconds']} s for the full run over the 4 partitions.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
