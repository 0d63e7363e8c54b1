"""Render the README "Reliability" table from the suite's own `@case` rows.

    python tests/reliability/table.py            # print the table
    python tests/reliability/table.py --write    # refresh it in README.md and docs/reliability.md

`test_table.py` fails when either file holds another table than this renders, so the documented cases are
exactly the ones the tests run.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).parent
DOCS = [HERE.parents[1] / "README.md", HERE.parents[1] / "docs" / "reliability.md"]
BEGIN, END = "<!-- reliability-table:begin -->", "<!-- reliability-table:end -->"


def collect() -> list:
    """Import every test module (their decorators fill the registry); rows in group order, then file order."""
    for p in (str(HERE), str(HERE.parent / "train")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from rel_cases import GROUPS, REGISTRY

    import clipdistill  # noqa: F401  (torchvision shim before the test modules import open_clip)

    for path in sorted(HERE.glob("test_*.py")):
        importlib.import_module(path.stem)
    unique = list({c.test: c for c in REGISTRY}.values())
    order = list(GROUPS)
    return sorted(unique, key=lambda c: order.index(c.group))


def render(cases: list) -> str:
    from rel_cases import GROUPS

    lines = ["| | fault or bad input | what clipdistill does | test |", "| --- | --- | --- | --- |"]
    for c in cases:
        cell = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines.append(f"| {GROUPS[c.group]} | {cell(c.fault)} | {cell(c.expected)} | `{c.test}` |")
    return "\n".join(lines) + "\n"


def documented(doc: Path) -> str:
    text = doc.read_text()
    return text[text.index(BEGIN) + len(BEGIN):text.index(END)].strip("\n") + "\n"


def write() -> None:
    table = render(collect())
    for doc in DOCS:
        text = doc.read_text()
        head, tail = text[:text.index(BEGIN) + len(BEGIN)], text[text.index(END):]
        doc.write_text(f"{head}\n{table}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
        print("wrote " + ", ".join(map(str, DOCS)))
    else:
        print(render(collect()), end="")
