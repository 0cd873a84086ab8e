"""The package has no import circles, counting imports inside functions too.

A lazy import still couples two modules both ways; a circle means neither can be read,
tested or moved without the other (the tuning/config circle this test was written for).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in [*(REPO / "dask_pipeline").rglob("*.py"), *(REPO / "graphs").glob("*.py")]:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[0] == "graphs":  # installed as dask_pipeline.graphs
            parts = ["dask_pipeline", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    def owner(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    edges: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("dask_pipeline"):
                    continue
                # `from package import submodule` is an import of the submodule.
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets = subs or [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("dask_pipeline")]
            else:
                continue
            for target in targets:
                target = owner(target)
                if target != module and target != "dask_pipeline":
                    edges[module].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_circles():
    edges = _imports(_modules())
    cycles = _cycles(edges)
    described = ["; ".join(f"{m} -> {', '.join(sorted(edges[m] & set(c)))}" for m in c) for c in cycles]
    assert not cycles, "import circles:\n" + "\n".join(described)


def test_the_check_sees_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_every_package_is_installed():
    """pyproject lists packages one by one: a subpackage missing there is absent from a
    non-editable install (a wheel, a worker image) while every editable test passes."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    present = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dask_pipeline").rglob("__init__.py")}
    present.add("dask_pipeline.graphs")
    assert present <= listed, f"packages missing from pyproject.toml: {sorted(present - listed)}"
