"""The shape of the import graph. grimp reads every import of `tailor` that can run, at module
level and inside functions alike, and no module may reach itself through others: import-linter's
contracts (pyproject.toml, run by `lint-imports` in bin/test) keep the layers apart, and this
keeps the whole module graph acyclic, which none of its contract types checks across packages.
Imports under TYPE_CHECKING count too (they never run, but a pair of modules naming each other's
types is still two modules that know each other). Also the method registry, which fills itself so
that methods/base.py never imports its package."""

from __future__ import annotations

from typing import ClassVar

import grimp
import pytest


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.find_modules_directly_imported_by(nxt)))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
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


def _describe(graph, group: list[str]) -> str:
    inside = set(group)
    lines = []
    for m in group:
        for n in sorted(graph.find_modules_directly_imported_by(m) & inside):
            at = ", ".join(str(d["line_number"]) for d in graph.get_import_details(importer=m, imported=n))
            lines.append(f"  {m} -> {n} (line {at})")
    return "\n".join(lines)


def test_no_module_of_tailor_imports_itself_through_others():
    graph = grimp.build_graph("tailor", cache_dir=None)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, g) for g in found)


def test_the_cycle_finder_finds_every_cycle_and_only_cycles():
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d"), ("p.e", "p.f"), ("p.f", "p.e"),
                 ("p.g", "p.a")]:
        graph.add_import(importer=a, imported=b)
    assert sorted(cycles(graph)) == [["p.a", "p.b", "p.c"], ["p.e", "p.f"]]


def test_method_classes_register_themselves_and_a_name_is_taken_once():
    from tailor.methods import METHODS
    from tailor.methods.base import Method, method_class
    from tailor.methods.finetune import LoRA
    assert method_class("lora") is LoRA and METHODS["lora"] is LoRA
    with pytest.raises(TypeError, match=r"^method 'lora' is defined twice: tailor\.methods\.finetune\.LoRA and "):
        class Another(Method):
            method: ClassVar[str] = "lora"

    class Variant(LoRA):   # keeps its parent's method: not a method of its own
        r: int = 4

    assert METHODS["lora"] is LoRA and Variant not in METHODS.values()
