"""The package's import graph has no cycles (the layer contract in pyproject.toml,
checked by import-linter in scripts/test.sh, says which way imports point; this says
that no group of modules imports itself round, within a layer too)."""

from __future__ import annotations

import grimp

# The native module has no Python source: its importers appear to import the package
# `tocsin` itself (whose __init__ re-exports the engine), which is not a real edge.
NATIVE_IMPORTERS = {
    "tocsin.schedules",
    "tocsin.figures",
    "tocsin.engine",
    "tocsin.store.sql.checks",
}


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def edges(module: str) -> list[str]:
        out = sorted(graph.find_modules_directly_imported_by(module))
        if module in NATIVE_IMPORTERS:
            out = [m for m in out if m != "tocsin"]
        return out

    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges(child))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    group.append(m)
                    if m == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("a", "a.b", "a.c", "a.d"):
        graph.add_module(m)
    graph.add_import(importer="a.b", imported="a.c")
    graph.add_import(importer="a.c", imported="a.b")
    graph.add_import(importer="a.d", imported="a.b")
    assert cycles(graph) == [["a.b", "a.c"]]


def test_no_module_of_tocsin_imports_itself_round() -> None:
    assert cycles(grimp.build_graph("tocsin", cache_dir=None)) == []
