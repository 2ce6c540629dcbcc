"""Which of the project's source files a step runs, read from the imports, so that no list of
code dependencies is kept by hand (one such list missed ``features/`` for training).

A step is a function in ``flows/steps.py``: its files are that module, ``flows/config.py``,
every project module the function imports (in its body, as the steps do, or at the top of
the module, for names it uses), those reached through the module-level helpers it calls, and
everything those modules import in turn, at any depth.
"""
from __future__ import annotations

import ast
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "serving", "flows")


def module_file(name: str) -> Path | None:
    """The file of a project module (``models.train`` -> models/train.py), None if not one."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def _imported(node: ast.AST) -> list[tuple[str, str | None]]:
    """``(module, name bound)`` of an import statement; a ``from`` import of a submodule is
    the submodule."""
    if isinstance(node, ast.Import):
        return [(alias.name, (alias.asname or alias.name).split(".")[0]) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        out = []
        for alias in node.names:
            sub = f"{node.module}.{alias.name}"
            out.append((sub if module_file(sub) else node.module, alias.asname or alias.name))
        return out
    return []


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


@cache
def module_imports(path: Path) -> frozenset[Path]:
    """Project files that ``path`` imports anywhere in it (top level or inside functions)."""
    found = set()
    for node in ast.walk(_tree(path)):
        for module, _ in _imported(node):
            target = module_file(module)
            if target is not None and target != path:
                found.add(target)
    return frozenset(found)


def closure(files: Iterable[Path]) -> set[Path]:
    """``files`` and every project file they import, at any depth."""
    seen: set[Path] = set()
    todo = list(files)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_imports(path) - seen)
    return seen


def function_files(function: Callable) -> set[Path]:
    """The project files ``function`` (defined at the top of a project module) runs."""
    path = Path(function.__code__.co_filename).resolve()
    tree = _tree(path)
    functions = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    top_imports = {bound: module for node in tree.body for module, bound in _imported(node)}
    direct: set[Path] = {path}
    todo, visited = [function.__name__], set()
    while todo:
        name = todo.pop()
        if name in visited or name not in functions:
            continue
        visited.add(name)
        for node in ast.walk(functions[name]):
            for module, _ in _imported(node):
                if (target := module_file(module)) is not None:
                    direct.add(target)
            if isinstance(node, ast.Name):
                if node.id in functions:
                    todo.append(node.id)
                elif node.id in top_imports and (target := module_file(top_imports[node.id])) is not None:
                    direct.add(target)
    # The step's own module is read function by function above, not followed whole.
    return closure(direct - {path}) | {path}


def relative(paths: Iterable[Path]) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in paths)
