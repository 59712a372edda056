"""The shape of the code base: small modules and functions, no import cycles, layers that stay
layered. Read from the source with ``ast``, so it costs no imports."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("retrieval", "indexers")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _run_time_imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements under ``node`` that run (at the top or inside a function;
    ``if TYPE_CHECKING:`` blocks are for type checkers only)."""
    for child in ast.iter_child_nodes(node):
        if _type_checking_block(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _run_time_imports(child)


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of this code base that ``module`` imports at run time (at the top or inside a
    function; ``if TYPE_CHECKING:`` blocks are for type checkers only)."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in _run_time_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
            continue
        prefix = base[:len(base) - node.level + 1] if node.level else []
        target = ".".join([*prefix, *(node.module or "").split(".")]).strip(".")
        for alias in node.names:  # a submodule, else a name from the module
            sub = f"{target}.{alias.name}"
            found.add(sub if sub in known else target)
    return {m for m in found if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 50  # the walk found the code base
    assert _cycles(graph) == []


def test_a_cycle_would_be_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_indexers_never_imports_retrieval() -> None:
    for module, imported in _graph().items():
        if module.startswith("indexers"):
            assert not any(m.startswith("retrieval") for m in imported), module


def test_modules_and_functions_are_small() -> None:
    big = []
    for module, path in _modules().items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            big.append(f"{module}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{module}.{node.name}: {length} lines")
    assert big == []


def test_test_functions_are_small() -> None:
    """A test over the limit usually holds a helper or several scenarios: name them, or make
    them tests of their own."""
    long = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node.name.startswith("test_")):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}::{node.name}: {length} lines")
    assert long == []


# Only storage speaks SQL: a new catalog backend touches retrieval/storage/ alone. The one
# exception is the text-embedding cache, a cache file of the encoders (text -> vector, keyed by
# model) beside the home's other caches, not part of any catalog.
SQL_PACKAGES = {"sqlalchemy", "sqlite3"}
SQL_ALLOWED = {"retrieval.encoders.text_cache": {"sqlite3"}}


def _external_imports(source: str) -> set[str]:
    """Top-level packages a module imports by absolute name at run time (at the top or inside
    a function; ``if TYPE_CHECKING:`` blocks are for type checkers only)."""
    found: set[str] = set()
    for node in _run_time_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif not node.level and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_storage_imports_sql() -> None:
    speaking = []
    for module, path in _modules().items():
        if module == "retrieval.storage" or module.startswith("retrieval.storage."):
            continue
        sql = _external_imports(path.read_text(encoding="utf-8")) & SQL_PACKAGES
        if sql - SQL_ALLOWED.get(module, set()):
            speaking.append(f"{module}: {', '.join(sorted(sql))}")
    assert speaking == []
    storage = [m for m, p in _modules().items() if m.startswith("retrieval.storage.")
               and _external_imports(p.read_text(encoding="utf-8")) & SQL_PACKAGES]
    assert len(storage) > 5  # the walk sees storage's own imports


def test_an_sql_import_would_be_found() -> None:
    source = '''
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from sqlalchemy import Engine
def f():
    import sqlite3.dbapi2
    from sqlalchemy.exc import DBAPIError
    from .storage import Catalog
'''
    assert _external_imports(source) & SQL_PACKAGES == {"sqlite3", "sqlalchemy"}
    assert _external_imports("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                             "    import sqlalchemy\n") & SQL_PACKAGES == set()
