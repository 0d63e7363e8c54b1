"""Bad data: every broken sample is a counted skip (the rest still flows); data with nothing usable is a clear
error, never a hang or a traceback."""

from __future__ import annotations

import tarfile

import pytest
from rel_cases import case, param_cases
from rel_helpers import assert_clear_error, caption, cli, png_bytes, sample_members, write_pairs, write_tar

from clipdistill.data import make_loader, open_source
from clipdistill.errors import DataError

GOOD = [(f"g{i}", png_bytes(i), caption(i)) for i in range(6)]
BAD_ROWS = param_cases("data", "test_bad_data.py::test_bad_csv_row_is_a_counted_skip", [
    ("corrupt-image", "a PNG whose bytes are cut after the header", "counted skip `undecodable_image`; "
     "the other rows load", (png_bytes(7)[:40], caption(7), "undecodable_image")),
    ("zero-byte", "a zero-byte image file", "counted skip `zero_byte`", (b"", caption(7), "zero_byte")),
    ("non-image", "a text file named `.png`", "counted skip `undecodable_image`",
     (b"just some text, not pixels\n", caption(7), "undecodable_image")),
    ("no-caption", "an empty caption", "counted skip `missing_caption`", (png_bytes(7), "  ", "missing_caption")),
    ("missing-file", "a row whose image file does not exist", "counted skip `missing_image`",
     (None, caption(7), "missing_image")),
])


@pytest.mark.parametrize("bad", BAD_ROWS)
def test_bad_csv_row_is_a_counted_skip(tmp_path, bad):
    data, text, reason = bad
    src = open_source(str(write_pairs(tmp_path, rows=[*GOOD[:3], ("bad", data, text), *GOOD[3:]])))
    assert [s.key for s in src] == [k for k, _, _ in GOOD]
    assert dict(src.skips) == {reason: 1}


def shard_members(kind: str) -> list[tuple[str, bytes]]:
    members = sample_members(range(2))
    if kind == "absolute":
        return [*members, ("/tmp/evil.png", png_bytes(9)), ("/tmp/evil.txt", b"evil")]
    return [*members, ("../evil.png", png_bytes(9)), ("../evil.txt", b"evil")]


BAD_TARS = param_cases("data", "test_bad_data.py::test_bad_tar_shard_is_counted", [
    ("truncated-tar", "a tar shard cut off in the middle of a member", "the samples before the cut load; "
     "counted `truncated_tar`; the next shard is read", ("truncated", {"truncated_tar": 1}, 2)),
    ("empty-tar", "a zero-byte tar shard", "counted `truncated_tar`; the next shard is read",
     ("empty", {"truncated_tar": 1}, 0)),
    ("absolute-member", "tar members with absolute paths (`/tmp/evil.png`)", "counted `unsafe_path`; "
     "nothing is read from or written to that path", ("absolute", {"unsafe_path": 2}, 2)),
    ("dotdot-member", "tar members with `..` paths", "counted `unsafe_path`",
     ("dotdot", {"unsafe_path": 2}, 2)),
])


@pytest.mark.parametrize("bad", BAD_TARS)
def test_bad_tar_shard_is_counted(tmp_path, bad):
    kind, skips, kept_from_bad = bad
    write_tar(tmp_path / "s-00001.tar", sample_members(range(10, 13)))  # a good shard after the bad one
    path = tmp_path / "s-00000.tar"
    if kind == "truncated":
        write_tar(path, sample_members(range(3)))
        with tarfile.open(path) as tar:
            cut = tar.getmember("000002.png").offset_data + 10
        path.write_bytes(path.read_bytes()[:cut])  # 2 whole samples, then the 3rd image cut short
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        write_tar(path, shard_members(kind))
    src = open_source(str(tmp_path / "s-{00000..00001}.tar"))
    keys = [s.key for s in src]
    assert len(keys) == kept_from_bad + 3 and keys[-3:] == ["s-00001/000010", "s-00001/000011", "s-00001/000012"]
    assert dict(src.skips) == skips
    assert not (tmp_path.parent / "evil.png").exists()


@case("data", "a CSV with a header and no rows (an empty dataset)",
      "`error: ... no rows` from `data inspect` and `distill` (exit 2, no traceback)")
def test_empty_dataset_is_refused(tmp_path):
    empty = write_pairs(tmp_path, rows=[])
    with pytest.raises(DataError, match="no rows"):
        open_source(str(empty))
    assert_clear_error(cli("data", "inspect", str(empty), timeout=60), "no rows")


@case("data", "a dataset in which every image is broken",
      "the loader stops with `every sample was dropped` and the per-reason counts, instead of training on "
      "nothing or waiting forever")
def test_all_samples_bad_is_refused(tmp_path):
    src = open_source(str(write_pairs(tmp_path, rows=[(f"b{i}", b"", caption(i)) for i in range(5)])))
    ident = (lambda im: im, lambda t: t)
    with pytest.raises(DataError, match=r"every sample was dropped.*zero_byte': 5"):
        list(make_loader(src, [ident], 2))
