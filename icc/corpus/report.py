"""The run's interactive map: one self-contained HTML page (plotly.js inlined, opens from disk).

A 2-D projection (PCA, or UMAP when umap-learn is installed) of a sample of the embedded rows,
coloured by cluster, the text on hover, a legend of cluster names and sizes, a table of the
clusters and the run's metrics. With a search, the query is an X and its results are ringed.
"""

import html
import importlib.util
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pyarrow.parquet as pq

from icc.checks import check_positive_int
from icc.corpus.rundir import HIERARCHY, ClusterRun
from icc.errors import ICCError
from icc.files import write_atomic

PROJECTIONS = ("pca", "umap")
HOVER_CHARS = 300
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


def check_projection(method: str) -> None:
    """ICCError unless `method` is a projection that can run here."""
    if method not in PROJECTIONS:
        raise ICCError(f"unknown report projection '{method}' (choose from {', '.join(PROJECTIONS)})")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise ICCError("report.projection=umap needs umap-learn (pip install umap-learn)")


def check_report(max_points: int, projection: str) -> None:
    """ICCError for a `write_report` setting of the wrong type or value."""
    check_positive_int(max_points, "report.max_points")
    check_projection(projection)


def fit_projection(vectors: np.ndarray, method: str = "pca", seed: int = 0):
    """A 2-D projection fitted on (n, dim) vectors, with `transform` for new ones (the query)."""
    check_projection(method)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, metric="cosine", random_state=seed).fit(vectors)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit(vectors)


def sample_positions(n: int, max_points: int, seed: int = 0, keep=()) -> np.ndarray:
    """Sorted positions of at most `max_points` of n rows drawn at random, plus those in `keep`."""
    check_positive_int(max_points, "report.max_points")
    chosen = np.random.default_rng(seed).choice(n, min(n, max_points), replace=False)
    return np.union1d(chosen, np.asarray(keep, dtype=np.int64))


def write_report(run: ClusterRun, path, max_points: int = 20000, projection: str = "pca", seed: int = 0,
                 query: str | None = None, query_vector: np.ndarray | None = None, hits: list[dict] = ()) -> Path:
    """Write the map of `run` to `path`; with `query` and its `query_vector` (dim,), also mark the
    query and ring its `hits` (result dicts of `icc.search.Searcher.search`)."""
    hit_positions = run.positions([h["row"] for h in hits])
    positions = sample_positions(len(run.rows), max_points, seed, keep=hit_positions)
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
    axis = {"showticklabels": False, "zeroline": False}
    fig.update_layout(
        height=760, margin={"l": 20, "r": 20, "t": 30, "b": 20}, legend={"itemsizing": "constant"},
        xaxis={**axis, "title": f"{projection.upper()} 1"}, yaxis={**axis, "title": f"{projection.upper()} 2"},
        title=f"{len(positions):,} of {len(run.rows):,} texts, {len(run.sizes)} clusters",
    )
    title = f"icc: {'search' if searched else 'clusters'} in {run.dir.name}"
    summary = f"Query: <b>{html.escape(query)}</b>" if searched else f"Run: {html.escape(str(run.dir))}"
    sections = [_table("Results", ["rank", "score", "cluster", "name", "text"], [[h[key] for key in ("rank", "score", "cluster", "name", "text")] for h in hits])] if searched else []
    order = np.argsort(-run.sizes, kind="stable")
    sections.append(_table("Clusters", ["cluster", "size", "name"], [[c, run.sizes[c], run.names[c]] for c in order]))
    sections.append(hierarchy_section(run))
    sections.append(_table("Metrics", ["metric", "value"], list(_flatten(run.metrics))))
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


def _flatten(metrics: dict, prefix: str = ""):
    """(name, value) rows of a nested metrics dict, nested keys joined with dots."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield [f"{prefix}{key}", value]


def _table(heading: str, columns: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            shown = f"{value:,}" if isinstance(value, (int, np.integer)) else f"{value:.4g}"
            return f'<td class="num">{shown}</td>'
        return f"<td>{html.escape('' if value is None else str(value))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<h2>{html.escape(heading)}</h2>\n<table><tr>{head}</tr>\n{body}</table>"
