"""The package's shape, as issue 13 asked for it (docs/architecture.md): small
modules and functions, no private name used across modules, no import cycle,
and llama.cpp reached only through swgguf.runtime. Read from the source with
ast, so a regression fails here before a reviewer has to spot it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "swgguf"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
# modules swgguf itself must not use (their shims are gone; the names stay so that
# nobody brings them back without this test noticing)
COMPATIBILITY_MODULES = {"swgguf.sidecar", "swgguf.quantize", "swgguf.models"}
TEST_SUPPORT = {"swgguf.synthetic"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _imports(module: str) -> set[str]:
    """The swgguf modules ``module`` imports, at any level (function-level imports count):
    ``from pkg import submodule`` is an import of the submodule."""
    out = set()
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            subs = {f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in MODULES}
            names_only = len(subs) < len(node.names)
            out |= subs | ({source} if names_only and source in MODULES else set())
    out.discard(module)
    return out


def test_modules_and_functions_are_small():
    long_modules = {name: n for name, path in MODULES.items()
                    if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    long_functions = {f"{name}.{node.name}": node.end_lineno - node.lineno + 1
                      for name, tree in TREES.items() for node in ast.walk(tree)
                      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES}
    assert long_modules == {} and long_functions == {}


def test_no_private_name_crosses_modules():
    found = []
    for name, tree in TREES.items():
        aliases = {}  # local name -> swgguf module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(name, node)
                for a in node.names:
                    if source.startswith("swgguf") and a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{name}: from {source} import {a.name}")
                    if f"{source}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{source}.{a.name}"
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name}: {aliases[node.value.id]}.{node.attr}")
    assert found == []


def test_no_import_cycles():
    graph = {m: _imports(m) for m in MODULES}
    cycles = []

    def visit(m: str, path: list[str], done: set[str]) -> None:
        for dep in sorted(graph[m]):
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep], done)
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [m], done)
    assert cycles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_llama_cpp_only_through_the_runtime(module):
    """Only swgguf.runtime imports llama_cpp or reads the environment; nothing in swgguf
    imports the test-support module or the compatibility names."""
    uses = _imports(module)
    for node in ast.walk(TREES[module]):
        if isinstance(node, ast.Import):
            uses |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            uses.add(node.module or "")
        elif isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
            uses.add("os.environ")
    if not module.startswith("swgguf.runtime"):
        assert not {u for u in uses if u.split(".")[0] == "llama_cpp" or u == "os.environ"}
    if module not in COMPATIBILITY_MODULES | TEST_SUPPORT:
        assert not uses & (COMPATIBILITY_MODULES | TEST_SUPPORT)
