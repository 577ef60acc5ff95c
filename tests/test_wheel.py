"""`icc` installed from its wheel, as a user gets it: not from this checkout.

The wheel must carry the Hydra configs (icc/conf, package data) and `icc.config.CONFIG_DIR` must find
them inside the installed package. The old layout fails here: with the configs in conf/ at the
repository root, found at files("icc")/".."/"conf", the wheel holds no configs and site-packages has
no conf/ next to icc/, so `icc cluster --cfg job` ends with Hydra's "Primary config directory not
found" (only an editable install, whose icc/ is this checkout's, finds ../conf).

Nothing is downloaded: the wheel is built with the setuptools of this venv from a copy of the sources
(so the build leaves no build/ in the checkout), installed without dependencies into a fresh venv,
and that venv imports the dependencies from this venv's site-packages through a .pth path line (a
path line does not run the .pth files there, so this venv's editable icc stays out of it). The run
joins the session's Ray cluster: its driver, which composes the config, is the wheel's icc; the
cluster's workers run this venv's Python.
"""

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

TOPICS = {
    "weather": ["rain is expected in {} tomorrow", "a cold front brings snow to {}", "sunny skies over {} all week",
                "storm warnings issued for {}"],
    "football": ["{} won the cup final on penalties", "the striker scored twice for {}", "{} signed a new goalkeeper",
                 "the coach of {} was sacked after the defeat"],
    "cooking": ["bake the bread from {} for forty minutes", "a spicy soup recipe from {}",
                "grill the fish the way cooks in {} do", "the best pasta sauce in {} needs fresh basil"],
}
PLACES = ["Lisbon", "Oslo", "Madrid", "Vienna", "Dublin"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with icc installed from a wheel built here; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    for name in ("icc", "pipelines"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", base / "dist",
                    source], check=True, capture_output=True)
    wheel = next((base / "dist").glob("icc-*.whl"))

    fresh = base / "venv"
    venv.create(fresh, with_pip=False)
    python = fresh / "bin" / "python"
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   check=True, capture_output=True, text=True).stdout.strip()
    Path(site_packages, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
                   check=True, capture_output=True)
    return fresh / "bin"


def run_installed(bin_dir, *args, cwd):
    return subprocess.run([bin_dir / args[0], *map(str, args[1:])], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_the_wheel_holds_icc_and_its_configs(installed, tmp_path):
    result = run_installed(installed, "python", "-c", "import icc, pipelines; from icc.config import CONFIG_DIR; "
                                                      "print(icc.__file__, pipelines.__file__, CONFIG_DIR)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert all(path.startswith(str(installed.parent)) for path in result.stdout.split())  # not this checkout

    result = run_installed(installed, "icc", "cluster", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "name: kmeans" in result.stdout and "model: all-MiniLM-L6-v2" in result.stdout


def test_the_installed_icc_clusters_a_corpus(installed, ray_address, tmp_path):
    texts = [template.format(place) for templates in TOPICS.values() for template in templates for place in PLACES]
    corpus = tmp_path / "corpus.csv"  # 60 rows, 20 a topic
    pyarrow.csv.write_csv(pa.table({"text": texts}), corpus)
    out = tmp_path / "run"
    result = run_installed(installed, "icc", "cluster", "data=file", f"data.path={corpus}", "clusterer.k=3",
                           "labeler=none", "report.enabled=false", f"ray.address={ray_address}",
                           "ray.progress_bars=false", f"output.dir={out}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assignments = pq.read_table(out / "assignments.parquet")
    assert assignments["id"].to_pylist() == list(range(len(texts)))  # one row per input row, in order
    assert set(assignments["cluster"].to_pylist()) == {0, 1, 2}
