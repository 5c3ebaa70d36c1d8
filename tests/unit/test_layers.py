"""The shape of the code: layers point down, no import cycles.

Read from the import graph (grimp) and the files, so a change that breaks the shape fails here
with the offending modules named.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("allot", "models", "tasks")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)


def edges(graph: grimp.ImportGraph) -> dict[str, set[str]]:
    return {
        module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules
    }


def cycles(nodes: Iterable[str], imports: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(imports.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back(graph: grimp.ImportGraph) -> None:
    # every strongly connected component of the module graph is a single module
    assert cycles(graph.modules, edges(graph)) == []


def test_no_subpackage_imports_itself_back(graph: grimp.ImportGraph) -> None:
    # inside every package, each child subpackage taken whole (allot.zk, allot.planner, ...) and
    # each child module form no cycle: a room never needs a room that needs it
    imports = edges(graph)
    found: dict[str, list[list[str]]] = {}
    for package in sorted(m for m in graph.modules if graph.find_children(m)):
        depth = package.count(".") + 2

        def unit(module: str, depth: int = depth) -> str:
            return ".".join(module.split(".")[:depth])

        units: dict[str, set[str]] = {}
        for module, targets in imports.items():
            if module.startswith(package + "."):
                units.setdefault(unit(module), set()).update(
                    unit(t)
                    for t in targets
                    if t.startswith(package + ".") and unit(t) != unit(module)
                )
        if loops := cycles(units, units):
            found[package] = loops
    assert found == {}


def test_production_code_never_imports_the_testing_package(graph: grimp.ImportGraph) -> None:
    # allot.testing (servers from the Debian jars, process helpers) is left out of the image
    importers = {
        module: sorted(t for t in targets if t.split(".")[:2] == ["allot", "testing"])
        for module, targets in edges(graph).items()
        if module.split(".")[:2] != ["allot", "testing"]
    }
    assert {module: t for module, t in importers.items() if t} == {}


def test_no_top_level_package_imports_itself_back(graph: grimp.ImportGraph) -> None:
    # models <- allot <- tasks: a cycle among them (models importing allot.errors while allot
    # imports models) makes the layers meaningless
    packages: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for module, targets in edges(graph).items():
        source = module.split(".")[0]
        packages[source] |= {t.split(".")[0] for t in targets} - {source}
    assert cycles(packages, packages) == []


@pytest.mark.parametrize(
    ("lower", "upper"), [("models", "allot"), ("models", "tasks"), ("allot", "tasks")]
)
def test_layers_point_down(graph: grimp.ImportGraph, lower: str, upper: str) -> None:
    chains = graph.find_shortest_chains(importer=lower, imported=upper)
    assert chains == set(), f"{lower} must not import {upper}: {sorted(chains)}"
