"""The documented reliability table is the one the suite renders (no drift between docs and tests)."""

from rel_cases import GROUPS
from table import collect, documented, render


def test_docs_table_matches_the_suite():
    cases = collect()
    assert {c.group for c in cases} == set(GROUPS)  # every group has at least one proven case
    assert len({c.fault for c in cases}) == len(cases)  # one row per fault
    assert documented() == render(cases), "docs/reliability.md is stale: run python tests/reliability/table.py --write"
