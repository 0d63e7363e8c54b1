"""Report inputs whose neighbours have moved: the report is still written, the missing part named in it."""

from __future__ import annotations

import json

import numpy as np
from rel_cases import case

from clipdistill.report import build_report


@case("config", "`report` on a balance DIR whose feature store (named in its manifest) was moved or deleted",
      "the report is written with the balance histogram; the gallery is left out with the note `feature store "
      "... not found`")
def test_balance_gallery_without_its_store_is_left_out_with_a_note(tmp_path):
    bal = tmp_path / "bal"
    bal.mkdir()
    (bal / "report.json").write_text(json.dumps({"hist_before": [5, 3], "hist_after": [4, 2], "kept_fraction": 0.6}))
    (bal / "manifest.json").write_text(json.dumps({"stage": "balance", "features": str(tmp_path / "gone"),
                                                   "source": {"spec": "world:nowhere"}, "options": {}}))
    np.save(bal / "kept.npy", np.array([True, False]))
    np.save(bal / "labels.npy", np.array([0, 0], dtype=np.int32))
    md, html, found = build_report([bal], tmp_path / "out")
    text = md.read_text()
    assert found.balance_dirs == {"bal": bal}
    assert "Semantic balance" in text and f"bal: feature store {tmp_path / 'gone'} not found" in text
    assert text.count("![") == 1  # the histogram alone
    assert html.read_text().count("<img ") == 1
