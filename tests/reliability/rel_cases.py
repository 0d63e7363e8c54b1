"""The reliability cases: one row of the README table per test. A test declares its row with `@case(...)`;
`table.py` renders the rows of the tests that exist, so the table cannot list a case no test runs."""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = {
    "kill": "Killed runs",
    "stop": "Preemption and stop signals",
    "folder": "Run folders (reuse, concurrent writers, unwritable output)",
    "disk": "Failing disk writes",
    "data": "Bad data",
    "config": "Bad configs and inputs from elsewhere",
    "ckpt": "Bad checkpoints",
    "train": "Training faults",
}


@dataclass(frozen=True)
class Case:
    group: str
    fault: str  # what the suite does to the toolkit
    expected: str  # what the toolkit does, as the test asserts it
    test: str = ""  # module::function, filled in by `case`


REGISTRY: list[Case] = []


def case(group: str, fault: str, expected: str):
    """Register the decorated test as the proof of one table row."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")

    def mark(fn):
        REGISTRY.append(Case(group, fault, expected, f"{fn.__module__}.py::{fn.__name__}"))
        return fn

    return mark


def param_cases(group: str, test: str, rows: list[tuple[str, str, str, object]]) -> list:
    """Rows (id, fault, expected, payload) of a parametrised test: registered for the table and returned as
    `pytest.param(payload, id=id)`."""
    import pytest

    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}")
    REGISTRY.extend(Case(group, fault, expected, f"{test}[{id_}]") for id_, fault, expected, _ in rows)
    return [pytest.param(payload, id=id_) for id_, _, _, payload in rows]
