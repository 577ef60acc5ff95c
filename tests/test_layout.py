"""The house's rules, read from the imports: estimators know nothing of corpora, models nothing of
Ray, and no pipeline imports another (each is a recipe over the library)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file (function-level imports too)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("folder, forbidden", [
    ("icc/cluster", ("icc.corpus", "icc.data", "icc.bench", "icc.incontext", "icc.finetune", "pipelines")),
    ("icc/models", ("ray", "icc.corpus", "icc.cluster", "pipelines")),
    ("icc", ("pipelines",)),
])
def test_a_folder_imports_nothing_from_above_it(folder, forbidden):
    found = {f"{path.relative_to(ROOT)}: {module}" for path in files(folder) for module in imported_modules(path)
             if module.split(".")[0] in forbidden or module.startswith(tuple(f"{f}." for f in forbidden))
             or module in forbidden}
    found = {line for line in found if not line.startswith("icc/cli.py")}  # the CLI lists the pipelines
    assert not found


def test_no_pipeline_imports_another():
    for path in files("pipelines"):
        assert not {m for m in imported_modules(path) if m.startswith("pipelines")}, path


def test_every_config_opens_with_how_to_launch_it():
    for config in sorted((ROOT / "icc" / "conf").glob("*.yaml")):
        head = config.read_text().split("defaults:")[0]
        assert f"icc {config.stem}" in head and f"python -m pipelines.{config.stem}" in head, config.name
