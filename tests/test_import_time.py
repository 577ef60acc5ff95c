"""The driver of `icc cluster` loads no model libraries: torch and transformers are imported by
the processes that load a model (`icc.models.device`, `embedder`, `llm`), not at module level."""

import subprocess
import sys

from conftest import ROOT

# Imports the pipeline and runs the checks its driver makes before Ray starts (the embedder's
# settings and their resolved precision, a dtype), then prints which model libraries that loaded.
DRIVER = """
import sys
import pipelines.cluster
from icc.corpus.embed_stage import check_embed_settings, resolve_embedder
from icc.models.device import check_dtype
from icc.models.llm import check_causal_lm
check_embed_settings(resolve_embedder({"model": "all-MiniLM-L6-v2", "precision": "auto"}, {}), {"actors": 1}, 1000)
check_dtype("float16")
check_causal_lm("all-MiniLM-L6-v2")
print(sorted(name for name in ("torch", "transformers") if name in sys.modules))
"""


def test_cluster_driver_imports_no_torch():
    result = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
