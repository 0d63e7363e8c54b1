"""The package's layers (docs/ARCHITECTURE.md, "Layers"): a module may import only from the layers below its own.

Every `import` and `from ... import` in src/clipdistill counts, wherever it stands (module level, inside a
function, under TYPE_CHECKING): a lazy import still makes the importer depend on the imported code, and
hiding a cycle in a function body is how layers quietly erode. Within the entry-point layer the modules may
import each other: `demo` drives the `cli` app in-process, and `cli` registers the `commands` modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import clipdistill

PACKAGE = Path(clipdistill.__file__).parent

# Lowest first. A unit is a top-level module or subpackage of clipdistill.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"__init__", "_tv_compat", "errors"}),
    ("infrastructure", {"config", "progress", "safeload", "manifest"}),
    ("splits", {"splits"}),
    ("data", {"data", "world"}),
    ("models", {"zoo"}),
    ("losses", {"losses"}),
    ("run folders", {"runfolder"}),
    ("training loop", {"train"}),
    ("stages", {"features", "evaluation", "export"}),
    ("tasks and reports", {"distill", "td", "report", "vlpretrain"}),
    ("entry points", {"commands", "cli", "demo", "__main__"}),
]
PEERS_MAY_IMPORT_EACH_OTHER = {"entry points"}

# TEMPORARY: upward imports that exist today and are being removed. Each entry names its edge and why it is
# tolerated; test_temporary_allowances_are_still_needed fails once the edge is gone, so the entry goes too.
TEMPORARY_ALLOWED: dict[tuple[str, str], str] = {
}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_edges(package: Path = PACKAGE) -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) -> the files (relative to the package) where that import is written."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(package.rglob("*.py")):
        name = _module_name(path, package)
        is_pkg = path.name == "__init__.py"
        src = _unit(name)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the importing module's package
                    base = name.split(".")[: len(name.split(".")) - node.level + int(is_pkg)]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
            else:
                continue
            for t in targets:
                if t != "clipdistill" and not t.startswith("clipdistill."):
                    continue
                dst = _unit(t)
                if dst != src:
                    edges.setdefault((src, dst), []).append(str(path.relative_to(package)))
    return edges


def violations(edges: dict[tuple[str, str], list[str]], allowed: dict[tuple[str, str], str]) -> list[str]:
    level = {u: i for i, (_, units) in enumerate(LAYERS) for u in units}
    out = []
    for (src, dst), files in sorted(edges.items()):
        ls, ld = level[src], level[dst]
        if ld < ls or (ld == ls and LAYERS[ls][0] in PEERS_MAY_IMPORT_EACH_OTHER) or (src, dst) in allowed:
            continue
        where = sorted(set(files))
        out.append(f"{src} (layer {LAYERS[ls][0]!r}) imports {dst} (layer {LAYERS[ld][0]!r}) in {where}")
    return out


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py") or (p.is_dir() and (p / "__init__.py").is_file())}
    placed = set().union(*(u for _, u in LAYERS))
    assert units - placed == set(), "place these modules in LAYERS (and docs/ARCHITECTURE.md)"
    assert placed - units == set(), "LAYERS names modules that no longer exist"


def test_imports_only_go_down_the_layers():
    assert violations(import_edges(), TEMPORARY_ALLOWED) == []


def test_temporary_allowances_are_still_needed():
    edges = import_edges()
    assert [e for e in TEMPORARY_ALLOWED if e not in edges] == [], "drop the allowance: the import is gone"


def test_an_upward_import_is_caught(tmp_path):
    # the checker itself: a data module importing td (a task, three layers up) is reported with its file,
    # a td module importing data is not
    pkg = tmp_path / "clipdistill"
    files = {"__init__.py": "", "data/__init__.py": "", "data/tasks.py": "from clipdistill.td.examples import X\n",
             "td/__init__.py": "", "td/examples.py": "from ..data import tasks\n"}
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    edges = import_edges(pkg)
    assert set(edges) == {("data", "td"), ("td", "data")}
    assert violations(edges, {}) == [
        "data (layer 'data') imports td (layer 'tasks and reports') in ['data/tasks.py']"
    ]
