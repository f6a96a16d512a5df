"""The engine's layout rules, checked on the source with ``ast`` (nothing is imported or run).

- No import cycle among the modules of ``benchmark/`` and ``sample_models/``, counting imports
  inside functions too (a cycle that only a function-local import closes is still a cycle).
- ``benchmark/`` never imports streamlit (pages are the only face that does).
- No function in ``benchmark/`` is longer than :data:`MAX_FUNCTION_LINES` lines.
- No module imports another module's private (``_name``) names: what is shared is public.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "sample_models")
MAX_FUNCTION_LINES = 120


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            out[".".join(parts)] = (path, is_package)
    return out


MODULES = _modules()


def _trees() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), filename=str(path)) for name, (path, _) in MODULES.items()}


TREES = _trees()


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The project modules an import statement loads (the most specific module each name names;
    a parent package is not counted as imported by its children)."""
    found = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            for i in range(len(parts), 0, -1):
                if ".".join(parts[:i]) in MODULES:
                    found.add(".".join(parts[:i]))
                    break
        return found
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    for alias in node.names:
        if f"{prefix}.{alias.name}" in MODULES:
            found.add(f"{prefix}.{alias.name}")
        elif prefix in MODULES:
            found.add(prefix)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its body (functions included)."""
    graph = {}
    for name, tree in TREES.items():
        is_package = MODULES[name][1]
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _imported(name, is_package, node)
        graph[name] = deps - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_walker_sees_relative_and_function_local_imports():
    graph = import_graph()
    assert "benchmark.errors" in graph["benchmark.config"]  # from .errors import ConfigError
    assert "benchmark.models.archs" in graph["sample_models"]  # absolute import
    assert "sample_models" in graph["benchmark"]  # the package registers the built-in samples
    assert "benchmark.jobs" in graph["benchmark.inspection"]  # imported inside a function
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_engine_never_imports_streamlit():
    offenders = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            if any(n == "streamlit" or n.startswith("streamlit.") for n in names):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def _function_lengths():
    for name, tree in TREES.items():
        path = MODULES[name][0].relative_to(ROOT).as_posix()
        if not path.startswith("benchmark/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                yield f"{path}:{node.lineno} {node.name}", node.end_lineno - first + 1


def test_no_function_longer_than_the_limit():
    lengths = dict(_function_lengths())
    assert len(lengths) > 500  # the walk reached the engine's functions
    too_long = {where: n for where, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert too_long == {}


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for name, tree in TREES.items():
        is_package = MODULES[name][1]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not _imported(name, is_package, node):
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                offenders.append(f"{name}:{node.lineno} imports {', '.join(private)}")
    assert offenders == []


@pytest.mark.parametrize("module", ["benchmark.machine", "benchmark.onnx_graph", "benchmark.processes"])
def test_low_level_modules_import_nothing_above_them(module):
    """The probes and helpers that backends, measurements and compressions share stay below them."""
    allowed = {"benchmark.errors"}
    assert import_graph()[module] <= allowed
