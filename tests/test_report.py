"""report.html of `icc cluster` and search_report.html of `icc search ... report=true` in a real headless
Chromium (loads without console errors, the map is drawn), and the cluster labelers."""

import shutil
import subprocess

import numpy as np
import pytest
from conftest import run_icc

from icc.corpus.labeler import KeywordLabeler, clean_name, make_labeler
from icc.corpus.report import fit_projection, sample_positions
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


def check_page(page, tmp_path, legend: list[str]) -> None:
    """The page loads without a console message, its legend lists `legend`, and the map is drawn."""
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
    run = load_run(banking_run)
    page = banking_run / "report.html"
    html = page.read_text(encoding="utf-8")
    assert "acc" in html and "silhouette" in html  # the metrics table
    check_page(page, tmp_path, [f"{run.cluster_label(c)} ({run.sizes[c]:,})" for c in range(len(run.sizes))])


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


def test_keywords_set_the_clusters_apart():
    clusters = [
        ["My card payment was declined", "Why was my card declined at the shop?", "card declined again"],
        ["How long does a bank transfer take?", "My transfer has not arrived", "transfer still pending"],
        [],
    ]
    keywords = KeywordLabeler(top_words=2).keywords(clusters)
    assert keywords[0][0] in {"card", "declined"} and keywords[1][0] == "transfer" and keywords[2] == []
    assert KeywordLabeler().names(clusters)[2] is None
    assert KeywordLabeler().names([["the and of"], ["a an"]]) == [None, None]  # only stop words


def test_clean_name_and_make_labeler():
    assert clean_name('\n Name: "Lost phones".\nMore text') == "Lost phones"
    assert clean_name(' "My Card Has Not Arrived Yet"') == "My Card Has Not Arrived Yet"
    assert clean_name("   ") is None
    assert make_labeler("none") is None
    with pytest.raises(ICCError, match="unknown labeler"):
        make_labeler("topics")
    with pytest.raises(ICCError, match="bad parameters"):
        make_labeler("keywords", words=3)
