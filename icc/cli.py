"""The `icc` command: `icc <pipeline> [hydra overrides]`, e.g. `icc cluster clusterer.k=12`."""

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

import pipelines


def available() -> dict[str, str]:
    """{pipeline name: first line of its docstring} for every module in `pipelines/`, read from the
    source, so that `icc --help` does not import torch and Ray."""
    found = {}
    for module in pkgutil.iter_modules(pipelines.__path__):
        source = Path(module.module_finder.path, f"{module.name}.py").read_text()
        doc = (ast.get_docstring(ast.parse(source)) or "").strip()
        found[module.name] = doc.splitlines()[0] if doc else ""
    return found


def main() -> None:
    names = available()
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: icc <pipeline> [key=value ...] [--cfg job] [--help]\n\npipelines:")
        for name, summary in names.items():
            print(f"  {name:<12} {summary}")
        print("\n`icc <pipeline> --help` lists its config groups; `--cfg job` prints the resolved config.")
        return
    name = sys.argv[1]
    if name not in names:
        print(f"icc: error: unknown pipeline '{name}' (choose from {', '.join(names)})", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"icc {name}", *sys.argv[2:]]
    importlib.import_module(f"pipelines.{name}").main()
