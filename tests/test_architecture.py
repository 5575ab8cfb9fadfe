"""The layout's rules, checked: no import cycle among the project's modules, no import that
climbs a layer (``LAYERS``), and the data path (pipeline, engines, teachers, capture) free
of the HTTP edge and of FastAPI."""

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


# Each folder (or top-level module) and its layer: a module may import its own folder and
# any lower layer, never a higher one. ``gateway.testing`` (the fakes) sits above
# everything: only the CLI and the tests may import it.
LAYERS = {
    # data types, errors, configuration
    "gateway": 0, "gateway.errors": 0, "gateway.answers": 0, "gateway.examples": 0,
    "gateway.tasks": 0, "gateway.settings": 0, "gateway.cores": 0, "gateway.redis_clients": 0,
    "gateway.keys": 0, "gateway.tracing": 0,
    "calibration": 1,  # the math: no I/O
    "gateway.engines": 2, "gateway.teachers": 2, "gateway.capture": 2,  # the parts
    "gateway.limits": 2, "gateway.budgets": 2, "gateway.judges": 2,
    "gateway.pipeline": 3,  # request -> student -> confidence -> accept or escalate
    "gateway.jobs": 4, "gateway.loop": 4, "gateway.training": 4,  # offline work
    "gateway.usage": 4,  # the pipeline's events, counted per day for cost reports
    # the edge: HTTP, process assembly, metrics, commands
    "gateway.api": 5, "gateway.runtime": 5, "gateway.app": 5, "gateway.metrics": 5,
    "gateway.cli": 5, "gateway.simulator": 5,
    "gateway.testing": 6,
}  # fmt: skip
ALLOWED_ABOVE = {("gateway.cli", "gateway.testing")}


def _layer_unit(module: str) -> str:
    parts = module.split(".")
    for n in (2, 1):
        if ".".join(parts[:n]) in LAYERS:
            return ".".join(parts[:n])
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def _all_imports(path: Path) -> set[str]:
    """Every module ``path`` imports, inside functions too (a deferred import still ties)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def climbing_imports(root: Path) -> set[tuple[str, str]]:
    climbs = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(
                ".__init__"
            )
            mine = _layer_unit(module)
            for imported in _all_imports(path):
                theirs = _layer_unit(imported)
                if (
                    theirs != mine
                    and LAYERS[theirs] > LAYERS[mine]
                    and (mine, theirs) not in ALLOWED_ABOVE
                ):
                    climbs.add((module, imported))
    return climbs


def test_no_import_climbs_a_layer() -> None:
    assert climbing_imports(ROOT) == set()


def test_a_planted_climbing_import_is_caught(tmp_path: Path) -> None:
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            copy = tmp_path / path.relative_to(ROOT)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(path.read_text())
    engine = tmp_path / "gateway" / "engines" / "base.py"
    engine.write_text(engine.read_text() + "\nfrom gateway.pipeline.answer import Pipeline\n")
    assert climbing_imports(tmp_path) == {("gateway.engines.base", "gateway.pipeline.answer")}


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
