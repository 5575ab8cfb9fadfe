"""The layout's rules, checked: no import cycle among the project's modules, and the data
path (pipeline, engines, teachers, capture) free of the HTTP edge and of FastAPI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "calibration")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level_imports(path: Path) -> set[str]:
    """Modules ``path`` imports at module level, those only for type checking included (a
    cycle of types is a cycle of design all the same)."""
    found: set[str] = set()
    body = ast.parse(path.read_text()).body
    for node in list(body):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body.extend(node.body)
    for node in body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def test_no_import_cycle_among_the_projects_modules() -> None:
    graph = {
        _module_name(p): _top_level_imports(p)
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module]):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_data_path_imports_no_http_edge() -> None:
    probe = (
        "import sys, importlib, pkgutil, gateway.pipeline, gateway.engines, gateway.teachers,"
        " gateway.capture\n"
        "for pkg in (gateway.pipeline, gateway.engines, gateway.teachers, gateway.capture):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        if m.name != 'vllm':\n"
        "            importlib.import_module(f'{pkg.__name__}.{m.name}')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette')"
        " or m.startswith('gateway.api')]\n"
        "print(' '.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
