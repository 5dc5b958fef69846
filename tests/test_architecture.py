"""The package's shape, enforced: layers import only downwards, and no module grows past a size limit.

docs/architecture.md explains the layers. A module's layer is decided by the longest matching
prefix in :data:`LAYERS`; an import of a module in a *higher* layer fails this test, and so does an
import between two different packages of the same layer (perception and leaf are siblings and must
not know each other). Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: Layer rank of each module prefix (the longest matching prefix wins).
LAYERS: dict[str, int] = {
    # 0 core: no knowledge of IQA beyond images and files
    "iqalens.errors": 0,
    "iqalens.registry": 0,
    "iqalens.version": 0,
    "iqalens.files": 0,
    "iqalens.images": 0,
    "iqalens.configs": 0,
    "iqalens.names": 0,
    "iqalens.runs": 0,
    "iqalens.results": 0,
    "iqalens.plots": 0,
    "iqalens.samples": 0,
    "iqalens.training": 0,
    "iqalens.ray_executor": 0,
    # 1 measures: pure numbers on arrays (correlations, mappings, NR/FR quality measures)
    "iqalens.evaluation": 1,
    # 2 distortions and the distortion -> class table
    "iqalens.distortions": 2,
    "iqalens.taxonomy": 2,
    # 3 datasets: manifests, importers, benchmarks
    "iqalens.datasets": 3,
    # 4 models: every model family, Hugging Face loading included
    "iqalens.models": 4,
    # 5 the two applications (siblings: neither imports the other)
    "iqalens.perception": 5,
    "iqalens.leaf": 5,
    # 6 fine-tuning, which runs the perception diagnostics before and after
    "iqalens.align": 6,
    # 7 the report reads what the layers below wrote
    "iqalens.report": 7,
    # 8 the faces: the CLI, its commands, the demo, the package's public API
    "iqalens.commands": 8,
    "iqalens.cli": 8,
    "iqalens.demo": 8,
    "iqalens.api": 8,
    "iqalens": 8,
}

#: Upward imports that still exist, as (importer, imported) pairs. The test fails when one disappears
#: too, so that this list only ever shrinks; the goal is empty.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

#: Modules still over :data:`MAX_LINES`; like the list above, it may only shrink.
KNOWN_OVERSIZED: set[str] = set()

#: Layers whose packages are siblings that must not import each other.
SIBLINGS_APART = {5}

MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "iqalens").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer_of(module: str) -> tuple[int, str]:
    """(rank, prefix) of ``module``."""
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best], best


def _package(module: str) -> str:
    return layer_of(module)[1]


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "iqalens"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "iqalens":
                continue
            if target == "iqalens":  # `from iqalens import x` names a submodule or the package face
                found |= {f"iqalens.{a.name}" for a in node.names}
            else:
                found.add(target)
    return found


def upward_imports() -> set[tuple[str, str]]:
    """Every (importer, imported) pair that points to a higher layer or a sibling package."""
    bad = set()
    modules = _modules()
    for module, path in modules.items():
        rank, pkg = layer_of(module)
        for target in _imports(path, module):
            t_rank, t_pkg = layer_of(target)
            if t_rank > rank or (t_rank == rank and t_pkg != pkg and rank in SIBLINGS_APART):
                bad.add((module, target))
    return bad


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        assert layer_of(module)[1] != "iqalens" or module in ("iqalens", "iqalens.api"), (
            f"{module} has no layer in tests/test_architecture.py LAYERS (and docs/architecture.md)"
        )


def test_imports_point_downwards() -> None:
    found = upward_imports()
    new = sorted(found - KNOWN_VIOLATIONS)
    gone = sorted(KNOWN_VIOLATIONS - found)
    assert not new, "imports from a higher layer or a sibling package:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )
    assert not gone, "fixed, remove from KNOWN_VIOLATIONS: " + ", ".join(f"{a} -> {b}" for a, b in gone)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "mod.py"
    module.write_text("def f():\n    from iqalens.report import build\n")
    (target,) = _imports(module, "iqalens.models.mod")
    assert layer_of(target)[0] > layer_of("iqalens.models.mod")[0]
    rel = tmp_path / "sub.py"
    rel.write_text("from ..leaf import scoring\n")
    assert _imports(rel, "iqalens.perception.sub") == {"iqalens.leaf"}


def test_module_size() -> None:
    sizes = {m: p.read_text(encoding="utf-8").count("\n") for m, p in _modules().items()}
    over = {m for m, n in sizes.items() if n > MAX_LINES}
    new = sorted(over - KNOWN_OVERSIZED)
    assert not new, "over the size limit, split by concern: " + ", ".join(f"{m} ({sizes[m]})" for m in new)
    fixed = sorted(KNOWN_OVERSIZED - over)
    assert not fixed, "now within the limit, remove from KNOWN_OVERSIZED: " + ", ".join(fixed)


#: Import cycles (strongly connected groups of modules) that still exist; may only shrink.
KNOWN_CYCLES: set[frozenset[str]] = set()


def import_cycles() -> set[frozenset[str]]:
    """Groups of modules that import each other, directly or through others (Tarjan's SCCs)."""
    modules = _modules()
    graph = {m: {t for t in _imports(p, m) if t in modules and t != m} for m, p in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.add(frozenset(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles() -> None:
    found = import_cycles()
    new = [sorted(c) for c in found - KNOWN_CYCLES]
    assert not new, f"modules importing each other (move the shared part down, or register): {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES - found]
    assert not gone, f"fixed, remove from KNOWN_CYCLES: {gone}"


#: The label-budget experiment, and the modules allowed to import it besides its own: its command.
#: Product code (calibration, scoring, the other commands) never does; what the experiment shares
#: with it lives in leaf.features, leaf.targets and leaf.head.
EXPERIMENT = "iqalens.leaf.label_budget"
EXPERIMENT_USERS = {"iqalens.commands.budget"}


def _imports_experiment(path: Path, module: str) -> bool:
    inside = {t for t in _imports(path, module) if t == EXPERIMENT or t.startswith(EXPERIMENT + ".")}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    by_name = any(  # `from iqalens.leaf import label_budget`
        isinstance(node, ast.ImportFrom)
        and node.module == "iqalens.leaf"
        and any(a.name == "label_budget" for a in node.names)
        for node in ast.walk(tree)
    )
    return bool(inside) or by_name


def test_product_code_never_imports_the_label_budget_experiment() -> None:
    bad = sorted(
        m
        for m, p in _modules().items()
        if not (m == EXPERIMENT or m.startswith(EXPERIMENT + "."))
        and m not in EXPERIMENT_USERS
        and _imports_experiment(p, m)
    )
    assert not bad, "product code imports the label-budget experiment: " + ", ".join(bad)
    assert {m for m in EXPERIMENT_USERS if _imports_experiment(_modules()[m], m)} == EXPERIMENT_USERS
