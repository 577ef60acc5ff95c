"""report.html of `icc cluster` and search_report.html of `icc search ... report=true` in a real headless
Chromium (loads without console errors, the map is drawn), and what the page shows."""

import importlib.util
import re
import shutil
import subprocess
from html import escape

import numpy as np
import pytest
from conftest import run_icc

from icc.corpus.report import check_projection, fit_projection, sample_positions, shown_metrics
from icc.corpus.rundir import load_run
from icc.errors import ICCError

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install -y chromium")


def chromium(page, tmp_path, *action) -> subprocess.CompletedProcess:
    """Open `page` from disk in headless Chromium (software WebGL), console messages logged to stderr."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--enable-unsafe-swiftshader", "--enable-logging=stderr", "--v=0",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1100", "--virtual-time-budget=15000",
         *action, page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )


def check_page(page, tmp_path, legend: list[str]) -> str:
    """The page loads without a console message, its legend lists `legend`, and the map is drawn;
    returns the DOM that Chromium built."""
    from PIL import Image

    assert 'src="http' not in page.read_text(encoding="utf-8")  # self-contained: nothing fetched
    dom = chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    # Software WebGL reports its own performance notes ("GL Driver Message") on the console: not the page's.
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line and "GL Driver Message" not in line]
    assert console == []
    assert "main-svg" in dom.stdout  # plotly drew its figure
    for entry in legend:
        assert f">{entry}<" in dom.stdout.replace("&amp;", "&")
    shot = tmp_path / "shot.png"
    result = chromium(page, tmp_path, f"--screenshot={shot}")
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # Markers are saturated colours; white page, grey plot background, text and axes are not.
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 60
    colours = {tuple(p) for p in pixels[saturated][::7].tolist()}
    assert saturated.sum() > 1500 and len(colours) > 20, (saturated.sum(), len(colours))
    return dom.stdout


def test_cluster_names_from_the_corpus_are_escaped_in_the_report(banking_run, tmp_path):
    """LLM names come from the corpus: a name that is markup shows as text, never runs (before: raw in the page)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from icc.corpus.report import write_report

    run_dir = tmp_path / "run"
    shutil.copytree(banking_run, run_dir)
    clusters = pq.read_table(run_dir / "clusters.parquet")
    names = ["<img src=x onerror=alert(1)>"] * clusters.num_rows
    clusters = clusters.set_column(clusters.schema.get_field_index("name"), "name", pa.array(names, pa.string()))
    pq.write_table(clusters, run_dir / "clusters.parquet")
    page = write_report(load_run(run_dir), tmp_path / "report.html")
    html = page.read_text(encoding="utf-8")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


@needs_chromium
def test_cluster_report_in_headless_chromium(banking_run, tmp_path):
    """The page of a labeler=llm run: names on the map as well as in the legend, each cluster's keywords
    and central texts, the cluster-by-label table and a short metrics table (before: only names and
    sizes in a table, every metrics.json key)."""
    run = load_run(banking_run)
    page = banking_run / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "<h2>Metrics</h2>" in html and ">silhouette<" in html and ">acc<" in html
    assert "driver_peak_rss_mib" not in html and "reject_reasons" not in html  # curated, not every key
    assert "<h2>Clusters by label</h2>" in html and ">card_arrival<" in html  # banking77's labels
    for c in range(len(run.sizes)):
        assert html.count(escape(" ".join(run.central_texts[c][0].split())[:40])) >= 1
        assert escape(", ".join(run.representation[c])) in html
    dom = check_page(page, tmp_path, [f"{run.cluster_label(c)} ({run.sizes[c]:,})" for c in range(len(run.sizes))])
    on_map = re.findall(r'class="annotation-text"[^>]*>([^<]*)<', dom)
    assert sorted(int(text.split()[0]) for text in on_map) == list(range(len(run.sizes)))  # "<c> <name>" each


def test_llm_names_of_the_run_are_short_whole_names_or_keywords(banking_run):
    """labeler=llm on the banking sample: every cluster is named, by the LLM in 2-5 words or, where
    its answer was empty or too long, by its keywords, as name_source records."""
    import pyarrow.parquet as pq

    clusters = pq.read_table(banking_run / "clusters.parquet").to_pylist()
    for cluster in clusters:
        assert cluster["representation"] and cluster["name"]
        if cluster["name_source"] == "llm":
            assert 1 <= len(cluster["name"].split()) <= 5 and "\n" not in cluster["name"]
        else:
            assert cluster["name_source"] == "keywords"
            assert cluster["name"] == ", ".join(cluster["representation"][:3])


def test_metrics_table_of_a_resumed_run_has_no_zero_rate():
    metrics = {"rows": 10, "embedded": 10, "k": 2, "acc": 0.9, "driver_peak_rss_mib": 900.0,
               "seconds": {"embed": 1.0, "cluster": 2.0}, "rows_embedded_this_run": 0, "texts_per_s": 0.0}
    assert shown_metrics(metrics) == [["rows", 10], ["embedded", 10], ["k", 2], ["acc", 0.9], ["seconds", 3.0]]
    assert shown_metrics({**metrics, "rows_embedded_this_run": 10, "texts_per_s": 5.0})[-1] == ["texts_per_s (embed)", 5.0]


def test_auto_projection_is_umap_where_installed():
    has_umap = importlib.util.find_spec("umap") is not None
    assert check_projection("auto") == ("umap" if has_umap else "pca")
    if not has_umap:
        with pytest.raises(ICCError, match="icc\\[umap\\]"):
            check_projection("umap")


@needs_chromium
def test_search_report_marks_the_query_and_its_results(banking_run, tmp_path):
    page = tmp_path / "search.html"
    result = run_icc("search", f"run={banking_run}", "query=I lost my phone", "top_k=5", "report=true",
                     f"report_path={page}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(page) in result.stderr
    check_page(page, tmp_path, ["query", "results (5)"])


def test_sample_keeps_the_results_and_the_bound():
    positions = sample_positions(100_000, 20_000, seed=0, keep=[3, 99_999])
    assert len(positions) <= 20_002 and {3, 99_999} <= set(positions.tolist())
    assert np.all(np.diff(positions) > 0)
    assert len(sample_positions(50, 20_000)) == 50
    with pytest.raises(ICCError, match="max_points"):
        sample_positions(10, 0)


def test_unknown_projection_is_a_user_error():
    with pytest.raises(ICCError, match="unknown report projection"):
        fit_projection(np.zeros((3, 4), np.float32), "tsne")
