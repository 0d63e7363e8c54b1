"""Bad settings from the environment: refused before any stage runs, with a message naming the variable."""

from __future__ import annotations

import pytest
from rel_cases import case
from rel_helpers import assert_clear_error, cli


@case("config", "`CLIPDISTILL_PROGRESS_SECONDS` that is not a number of seconds >= 0 (`soon`, `-5`)",
      "`error: CLIPDISTILL_PROGRESS_SECONDS='soon': expected a number of seconds >= 0` (exit 2) before the "
      "command writes anything")
@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_bad_progress_interval_is_refused_before_writing(tmp_path, monkeypatch, value):
    monkeypatch.setenv("CLIPDISTILL_PROGRESS_SECONDS", value)
    proc = cli("world", "--out", str(tmp_path / "w"), "--size", "tiny")
    assert_clear_error(proc, "CLIPDISTILL_PROGRESS_SECONDS", repr(value), "expected a number of seconds >= 0")
    assert not (tmp_path / "w").exists()
