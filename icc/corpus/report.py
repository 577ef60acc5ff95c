"""The run's interactive map: one self-contained HTML page (plotly.js inlined, opens from disk).

A 2-D projection (UMAP when umap-learn is installed, the `icc[umap]` extra; PCA otherwise) of a
sample of the embedded rows, coloured by cluster, each cluster's name at its centre, the text on
hover, a legend of cluster names and sizes; then a table of the clusters (keywords and central
texts), a cluster-by-label table when the corpus has labels, and the run's main metrics. With a
search, the query is an X and its results are ringed.
"""

import html
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pyarrow.parquet as pq

from icc.checks import check_positive_int
from icc.corpus.rundir import HIERARCHY, ClusterRun
from icc.errors import ICCError
from icc.files import write_atomic

PROJECTIONS = ("auto", "pca", "umap")  # auto: umap when umap-learn is installed, else pca
HOVER_CHARS = 200  # of a text on hover: 20,000 points stay a few MB
MAP_NAME_CHARS = 32  # of a cluster name written on the map
EXAMPLE_TEXTS, EXAMPLE_CHARS = 3, 240  # central texts per cluster in the clusters table
LABEL_COLUMNS = 20  # the most frequent labels in the cluster-by-label table; the rest sum to "other"
# The metrics shown (when the run has them), in this order, then seconds and the embedding rate; metrics.json has all.
METRICS_SHOWN = ("rows", "embedded", "rejected", "k", "noise", "acc", "ari", "nmi", "silhouette",
                 "calinski_harabasz", "inertia", "fit", "nodes")
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
</style></head>
<body>
<h1>{title}</h1>
<p>{summary}</p>
{figure}
{sections}
</body></html>
"""


def check_projection(method: str) -> str:
    """The projection `method` names here ("auto" resolved); ICCError unless it can run here."""
    if method not in PROJECTIONS:
        raise ICCError(f"unknown report projection '{method}' (choose from {', '.join(PROJECTIONS)})")
    has_umap = importlib.util.find_spec("umap") is not None
    if method == "umap" and not has_umap:
        raise ICCError("report.projection=umap needs umap-learn (pip install 'icc[umap]')")
    return ("umap" if has_umap else "pca") if method == "auto" else method


def check_report(max_points: int, projection: str) -> None:
    """ICCError for a `write_report` setting of the wrong type or value."""
    check_positive_int(max_points, "report.max_points")
    check_projection(projection)


def fit_projection(vectors: np.ndarray, method: str = "auto", seed: int = 0):
    """A 2-D projection fitted on (n, dim) vectors, with `transform` for new ones (the query)."""
    if check_projection(method) == "umap":
        import umap

        with warnings.catch_warnings():  # a seed makes UMAP single-threaded, which it says on every run
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit(vectors)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit(vectors)


def sample_positions(n: int, max_points: int, seed: int = 0, keep=()) -> np.ndarray:
    """Sorted positions of at most `max_points` of n rows drawn at random, plus those in `keep`."""
    check_positive_int(max_points, "report.max_points")
    chosen = np.random.default_rng(seed).choice(n, min(n, max_points), replace=False)
    return np.union1d(chosen, np.asarray(keep, dtype=np.int64))


def write_report(run: ClusterRun, path, max_points: int = 20000, projection: str = "auto", seed: int = 0,
                 query: str | None = None, query_vector: np.ndarray | None = None, hits: list[dict] = ()) -> Path:
    """Write the map of `run` to `path`; with `query` and its `query_vector` (dim,), also mark the
    query and ring its `hits` (result dicts of `icc.search.Searcher.search`)."""
    hit_positions = run.positions([h["row"] for h in hits])
    positions = sample_positions(len(run.rows), max_points, seed, keep=hit_positions)
    projection = check_projection(projection)
    projector = fit_projection(run.vectors[positions], projection, seed)
    points = projector.transform(run.vectors[positions])
    texts = run.texts(positions)
    searched = query_vector is not None
    fig = go.Figure()
    for c in np.unique(run.cluster[positions]):
        inside = run.cluster[positions] == c
        size = f"{run.sizes[c]:,}" if c >= 0 else f"{int((run.cluster == -1).sum()):,}"
        fig.add_trace(go.Scattergl(
            x=points[inside, 0], y=points[inside, 1], mode="markers",
            name=html.escape(f"{run.cluster_label(c)} ({size})", quote=False),  # names come from the corpus
            hovertext=[_hover(t) for t, i in zip(texts, inside) if i], hoverinfo="text+name",
            marker={"size": 5, "opacity": 0.35 if searched else 0.75, **({"color": "#9e9e9e"} if c < 0 else {})},
        ))
    if searched:
        at = {p: i for i, p in enumerate(positions)}
        ringed = np.array([at[p] for p in hit_positions], dtype=np.int64).reshape(-1)
        fig.add_trace(go.Scattergl(
            x=points[ringed, 0], y=points[ringed, 1], mode="markers", name=f"results ({len(hits)})",
            hovertext=[f"#{h['rank']} score {h['score']:.3f}<br>{_hover(h['text'])}" for h in hits], hoverinfo="text",
            marker={"size": 13, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "#000"}},
        ))
        q = projector.transform(np.asarray(query_vector, dtype=np.float32).reshape(1, -1))[0]
        fig.add_trace(go.Scattergl(
            x=[q[0]], y=[q[1]], mode="markers", name="query", hovertext=[_hover(query)], hoverinfo="text",
            marker={"symbol": "x", "size": 18, "color": "#000"},
        ))
    for c in np.unique(run.cluster[positions]):
        if c >= 0:
            x, y = np.median(points[run.cluster[positions] == c], axis=0)
            fig.add_annotation(x=x, y=y, text=html.escape(_short(run.cluster_label(c), MAP_NAME_CHARS), quote=False),
                               showarrow=False, font={"size": 12, "color": "#111"}, bgcolor="rgba(255,255,255,0.7)")
    axis = {"showticklabels": False, "zeroline": False}
    fig.update_layout(
        height=760, margin={"l": 20, "r": 20, "t": 30, "b": 20}, legend={"itemsizing": "constant"},
        xaxis={**axis, "title": f"{projection.upper()} 1"}, yaxis={**axis, "title": f"{projection.upper()} 2"},
        title=f"{len(positions):,} of {len(run.rows):,} texts, {len(run.sizes)} clusters",
    )
    title = f"icc: {'search' if searched else 'clusters'} in {run.dir.name}"
    summary = f"Query: <b>{html.escape(query)}</b>" if searched else f"Run: {html.escape(str(run.dir))}"
    columns = ["rank", "score", "cluster", "name", "text"]  # of the results table
    sections = [html_table("Results", columns, [[h[key] for key in columns] for h in hits])] if searched else []
    order = np.argsort(-run.sizes, kind="stable")
    sections.append(html_table("Clusters", ["cluster", "size", "name", "keywords", "texts nearest the centre"], [
        [c, run.sizes[c], run.names[c], ", ".join(run.representation[c] or []),
         [_short(t, EXAMPLE_CHARS) for t in run.central_texts[c][:EXAMPLE_TEXTS]]] for c in order]))
    labels = run.labels()
    if labels is not None:
        sections.append(_label_table(run, labels, order))
    sections.append(hierarchy_section(run))
    sections.append(html_table("Metrics", ["metric", "value"], shown_metrics(run.metrics)))
    page = PAGE.format(title=html.escape(title), summary=summary, sections="\n".join(sections),
                       figure=fig.to_html(full_html=False, include_plotlyjs=True, config={"responsive": True}))
    path = Path(path)
    write_atomic(path, page)
    return path


def hierarchy_section(run: ClusterRun) -> str:
    """The run's hierarchy.parquet as a nested list, the root first ("" for a run without one or
    with fewer than two clusters)."""
    path = run.dir / HIERARCHY
    merges = pq.read_table(path).to_pylist() if path.exists() else []
    if not merges:
        return ""
    k = len(run.sizes)

    def node(i: int) -> str:
        if i < k:
            return f"<li>{html.escape(run.cluster_label(i))} ({run.sizes[i]:,})</li>"
        merge = merges[i - k]
        return (f"<li>{merge['size']:,} texts, distance {merge['distance']:.3g}"
                f"<ul>{node(merge['left'])}{node(merge['right'])}</ul></li>")

    return f"<h2>Hierarchy</h2>\n<ul>{node(k + len(merges) - 1)}</ul>"


def _hover(text: str) -> str:
    """A text for plotly's hover box: escaped, shortened, wrapped every ~80 characters."""
    words, lines, line = " ".join(text.split())[:HOVER_CHARS].split(" "), [], ""
    for word in words:
        if line and len(line) + len(word) > 80:
            lines.append(line)
            line = ""
        line = f"{line} {word}" if line else word
    return "<br>".join(html.escape(x) for x in [*lines, line])


def _short(text: str, chars: int) -> str:
    """`text` on one line, at most `chars` characters, cut at a word with "…"."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + "…"


def shown_metrics(metrics: dict) -> list[list]:
    """(name, value) rows of the `METRICS_SHOWN` the run has, plus its total seconds; throughput only
    when this run embedded rows (a resumed run that embedded none has no rate to show)."""
    rows = [[key, metrics[key]] for key in METRICS_SHOWN if key in metrics]
    if "seconds" in metrics:
        rows.append(["seconds", sum(metrics["seconds"].values())])
    if metrics.get("rows_embedded_this_run"):
        rows.append(["texts_per_s (embed)", metrics["texts_per_s"]])
    return rows


def _label_table(run: ClusterRun, labels: np.ndarray, order: np.ndarray) -> str:
    """Clusters (rows, in `order`) by the corpus's labels (columns, the most frequent first):
    counts of embedded rows, the majority label and its share of the cluster."""
    known = np.array([x is not None for x in labels])
    names, counts = np.unique(labels[known].astype(str), return_counts=True)
    shown = names[np.argsort(-counts, kind="stable")][:LABEL_COLUMNS]
    rows = []
    for c in [*order, -1] if (run.cluster == -1).any() else order:
        mine = labels[known & (run.cluster == c)].astype(str)
        values, tally = np.unique(mine, return_counts=True)
        per = dict(zip(values, tally))
        majority = [values[np.argmax(tally)], tally.max() / len(mine)] if len(mine) else [None, None]
        rest = len(mine) - sum(per.get(x, 0) for x in shown)
        rows.append([run.cluster_label(c), *majority, *[int(per.get(x, 0)) for x in shown],
                     *([rest] if len(names) > len(shown) else [])])
    extra = ["other"] if len(names) > len(shown) else []
    return html_table("Clusters by label", ["cluster", "majority label", "share", *shown, *extra], rows)


def html_table(heading: str, columns: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            shown = f"{value:,}" if isinstance(value, (int, np.integer)) else f"{value:.4g}"
            return f'<td class="num">{shown}</td>'
        if isinstance(value, list):
            return "<td><ul>" + "".join(f"<li>{html.escape(str(v))}</li>" for v in value) + "</ul></td>"
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(heading)}</h2>\n<table><tr>{head}</tr>\n{body}</table>"
