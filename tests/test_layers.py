"""The engine's layers point one way: models/trace -> relax -> quantize -> kernels/compile -> measure,
all above the results schema, which the report reads and nothing else of the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import qbuild

PACKAGE = Path(qbuild.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The qbuild modules that ``path`` imports anywhere in it (function-level imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    return {module for module in found if module in modules and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def arrows(graph: dict[str, set[str]], source: str, target: str) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if inside(a, source) and inside(b, target))


def test_no_module_imports_itself_round_a_cycle():
    assert cycles(import_graph()) == []


def test_the_quantizer_never_imports_the_kernels():
    assert arrows(import_graph(), "qbuild.quantize", "qbuild.kernels") == []


def test_the_kernels_never_import_the_quantizer():
    assert arrows(import_graph(), "qbuild.kernels", "qbuild.quantize") == []


def test_the_target_free_passes_import_neither_the_quantizer_nor_the_kernels():
    graph = import_graph()
    assert arrows(graph, "qbuild.relax", "qbuild.quantize") == arrows(graph, "qbuild.relax", "qbuild.kernels") == []


SCHEMA = "qbuild.schema"
REPORT = PACKAGE.parent / "report"


def qbuild_imports(path: Path) -> set[str]:
    """The qbuild modules (or packages) that ``path`` names in its imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return {module for module in found if inside(module, "qbuild")}


def test_the_report_reads_only_the_results_schema():
    engine = {
        (path.relative_to(REPORT).as_posix(), module)
        for path in REPORT.rglob("*.py")
        for module in qbuild_imports(path)
        if not inside(module, SCHEMA) and module != "qbuild.errors"
    }
    assert engine == set()
    assert any(inside(module, SCHEMA) for path in REPORT.rglob("*.py") for module in qbuild_imports(path))


def test_the_results_schema_imports_no_other_engine_module():
    graph = import_graph()
    beyond = {(a, b) for a, b in arrows(graph, SCHEMA, "qbuild") if not inside(b, SCHEMA) and b != "qbuild.errors"}
    assert beyond == set()
    assert SCHEMA in graph
