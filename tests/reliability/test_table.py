"""The documented reliability table is the one the suite renders (no drift between docs and tests)."""

import pytest
from rel_cases import GROUPS
from table import DOCS, collect, documented, render


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_table_matches_the_suite(doc):
    cases = collect()
    assert {c.group for c in cases} == set(GROUPS)  # every group has at least one proven case
    assert len({c.fault for c in cases}) == len(cases)  # one row per fault
    assert documented(doc) == render(cases), f"{doc.name} is stale: run python tests/reliability/table.py --write"
