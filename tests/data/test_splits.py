"""Split manifests: nested low-shot subsets, stratification, shift splits, VQA-CP priors, refusal."""

from collections import Counter

import pytest

import clipdistill  # noqa: F401
from clipdistill.errors import ManifestMismatch, UserError
from clipdistill.splits import (
    load_split,
    low_shot,
    select,
    shift_split,
    subset_size,
    vqa_cp_assign,
    write_split,
)

KEYS = [f"q{i}" for i in range(400)]
STRATA = ["a"] * 200 + ["b"] * 120 + ["c"] * 60 + ["d"] * 20  # 50 / 30 / 15 / 5 %


def test_low_shot_subsets_are_nested_and_stratified():
    fr = (0.01, 0.05, 0.1, 0.25, 1.0)
    out = low_shot(KEYS, STRATA, fr, seeds=(0, 1, 2))
    label = dict(zip(KEYS, STRATA, strict=True))
    for seed, subsets in out.items():
        sets = [set(subsets[f"{f:g}"]) for f in fr]
        assert all(a < b for a, b in zip(sets, sets[1:], strict=False)), seed
        assert [len(s) for s in sets] == [4, 20, 40, 100, 400]
        for f, s in zip(fr, sets, strict=True):
            counts = Counter(label[k] for k in s)
            for stratum, n in Counter(STRATA).items():
                assert abs(counts[stratum] - f * n) <= 1, (seed, f, stratum)
    assert out["seed0"]["0.1"] != out["seed1"]["0.1"]
    assert low_shot(KEYS, STRATA, fr, seeds=(0,)) == {"seed0": out["seed0"]}  # deterministic


def test_subset_size_edges():
    assert subset_size(50, 0.01) == 1 and subset_size(7, 1.0) == 7
    with pytest.raises(UserError):
        subset_size(10, 1.5)


def test_shift_split_keeps_values_on_one_side():
    values = {f"k{i}": ["lsmdc", "movieclips"][i % 2] for i in range(10)}
    s = shift_split(values, test_values=["movieclips"])
    assert s["test_values"] == ["movieclips"] and s["train_values"] == ["lsmdc"]
    assert {values[k] for k in s["test"]} == {"movieclips"} and len(s["train"]) == 5
    movies = {f"k{i}": f"m{i % 5}" for i in range(50)}
    r = shift_split(movies, test_share=0.2, seed=3)
    assert len(r["test_values"]) == 1 and not {movies[k] for k in r["train"]} & set(r["test_values"])
    with pytest.raises(UserError, match="do not occur"):
        shift_split(values, test_values=["youtube"])


def test_vqa_cp_assignment_shifts_answer_priors():
    items = [(f"q{i}", "what color", ["red", "blue"][i % 2]) for i in range(200)]
    side = vqa_cp_assign(items, seed=0, skew=0.8)
    train = Counter(a for k, _, a in items if side[k] == "train")
    test = Counter(a for k, _, a in items if side[k] == "test")
    top_train, top_test = train.most_common(1)[0][0], test.most_common(1)[0][0]
    assert top_train != top_test and train[top_train] == 80 and test[top_test] == 80


def test_split_file_refuses_other_data_naming_the_field(tmp_path):
    path = tmp_path / "lowshot.json"
    write_split(path, kind="lowshot", task="vcr", source={"sha256": "abc"}, params={}, ids={"seed0": {}})
    assert load_split(path, task="vcr", source_sha256="abc")["kind"] == "lowshot"
    with pytest.raises(ManifestMismatch, match="source.sha256"):
        load_split(path, task="vcr", source_sha256="def")
    with pytest.raises(ManifestMismatch, match="task"):
        load_split(path, task="vqa", source_sha256="abc")

    class Ex:
        def __init__(self, key):
            self.key = key

    exs = [Ex("a"), Ex("b"), Ex("c")]
    assert [e.key for e in select(exs, ["c", "a"])] == ["a", "c"]
    with pytest.raises(ManifestMismatch, match="not in the data"):
        select(exs, ["a", "zz"])
