"""Cluster shares over time for scheduled runs: per partition of `icc incremental`'s state (in
partition order: `date=...` names sort by date), each cluster's share of the partition's rows
under the current fit, and the state's page `report.html` (a stacked-area chart of the shares,
the shares table, the runs)."""

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from icc.corpus.incremental import State, read_assignments
from icc.corpus.report import PAGE, html_table
from icc.corpus.rundir import Manifest, renew
from icc.errors import ICCError
from icc.files import write_atomic

REPORT = "report.html"  # in the state directory, rewritten by every run
CLUSTERS_SHOWN = 20  # the largest clusters drawn and tabled; the rest sum to "other"


def cluster_shares(state_dir) -> pd.DataFrame:
    """(partitions, clusters) shares of each partition's rows per cluster (rows sum to 1; cluster -1:
    rows not assigned, e.g. rejected), partitions in order, clusters by their size over all partitions."""
    assignments = read_assignments(state_dir).select(["partition", "cluster"]).to_pandas()
    counts = pd.crosstab(assignments["partition"], assignments["cluster"]).sort_index()
    counts = counts[counts.sum().sort_values(ascending=False, kind="stable").index]
    return counts.div(counts.sum(axis=1), axis=0)


def _shown(shares: pd.DataFrame) -> pd.DataFrame:
    """`shares` with the clusters beyond the `CLUSTERS_SHOWN` largest summed into "other"."""
    shown = shares.iloc[:, :CLUSTERS_SHOWN].rename(columns=lambda c: f"cluster {c}" if c >= 0 else "unassigned")
    if shares.shape[1] > CLUSTERS_SHOWN:
        shown["other"] = shares.iloc[:, CLUSTERS_SHOWN:].sum(axis=1)
    return shown


def check_shares_report(state_dir) -> None:
    """ICCError, before a run's work, where `state_dir` holds a report.html that icc did not write."""
    if (Path(state_dir) / REPORT).exists() and REPORT not in Manifest.load(state_dir).entries:
        raise ICCError(f"schedule.state {state_dir} holds {REPORT}, which icc did not write: "
                       "refusing to replace it; move it away or choose another schedule.state")


def write_shares_report(state_dir) -> Path:
    """Write `report.html` into `state_dir` (see the module docstring), replacing only one icc wrote
    (ICCError for a report.html icc did not write); returns its path."""
    state = State.load(state_dir)
    shares = _shown(cluster_shares(state_dir))
    fig = go.Figure([go.Scatter(x=list(shares.index), y=shares[name], name=name, stackgroup="shares", mode="lines")
                     for name in shares.columns])
    fig.update_layout(height=480, margin={"l": 40, "r": 20, "t": 30, "b": 40}, yaxis={"title": "share of rows"},
                      xaxis={"title": "partition", "type": "category"})
    rows = [[partition, *[round(float(s), 4) for s in values]] for partition, values in shares.iterrows()]
    runs = [[r["run"], r["action"], ", ".join(r["new_partitions"]) or "none"] for r in state.runs]
    sections = [html_table("Shares by partition", ["partition", *shares.columns], rows),
                html_table("Runs", ["run", "action", "new partitions"], runs)]
    fit = f"fit by run {state.fit['run']}, k={state.fit['k']}" if state.fit else "no fit yet"
    page = PAGE.format(title=html.escape(f"icc: cluster shares in {Path(state_dir).name}"),
                       summary=html.escape(f"State: {state_dir} ({fit})"), sections="\n".join(sections),
                       figure=fig.to_html(full_html=False, include_plotlyjs=True, config={"responsive": True}))
    renew(state_dir, REPORT)
    path = Path(state_dir) / REPORT
    write_atomic(path, page)
    return path
