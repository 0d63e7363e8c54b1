import csv
import hashlib
import json
import re
import tarfile
from collections import Counter

import pytest
from PIL import Image
from text_only import snli_ve_text_only, vcr_text_only, vqa_text_only

from clipdistill.data.tasks import open_task
from clipdistill.errors import UserError
from clipdistill.evaluation.datasets import open_imagefolder, open_retrieval
from clipdistill.world import build_world
from clipdistill.world.build import write_extra_test


def _tree_hash(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_pairs_csv_shards_and_groundtruth_agree(tiny_world):
    rows = list(csv.DictReader(open(tiny_world / "pairs.csv")))
    assert len(rows) == 300 and list(rows[0]) == ["key", "image", "caption", "style"]
    assert rows[0]["key"] == "p000000" and {r["style"] for r in rows} == {"flat", "sketch"}
    with tarfile.open(tiny_world / "pairs" / "shard-00000.tar") as tar:
        names = tar.getnames()
        assert names[:2] == ["p000000.png", "p000000.txt"]
        assert tar.extractfile("p000000.txt").read().decode() == rows[0]["caption"]
        assert tar.extractfile("p000000.png").read() == (tiny_world / rows[0]["image"]).read_bytes()
    assert len(names) == 600
    truth = json.loads((tiny_world / "pairs_groundtruth.json").read_text())
    assert set(truth) == {r["key"] for r in rows}
    sizes = Counter(t["group"] for t in truth.values())
    planted = [k for k, t in truth.items() if t["planted_duplicate"]]
    assert planted and all(sizes[truth[k]["group"]] > 1 for k in planted)
    assert all(t["singleton"] == (sizes[t["group"]] == 1) for t in truth.values())
    with Image.open(tiny_world / rows[0]["image"]) as im:
        assert im.size == (64, 64)


def test_classify_and_retrieval_sets_open_with_the_eval_readers(tiny_world):
    shape = open_imagefolder(tiny_world / "classify" / "shape" / "test")
    assert len(shape.classnames) == 8 and len(shape) == 32 and all("{c}" in t for t in shape.templates)
    assert len(open_imagefolder(tiny_world / "classify" / "color" / "test_style")) == 40
    ret = open_retrieval(tiny_world / "retrieval" / "test.jsonl")
    assert len(ret.images) == 40 and all(len(c) >= 2 for c in ret.captions)


def test_task_files_read_back_without_skips(tiny_world):
    tasks = tiny_world / "tasks"
    for kind, splits in (("vqa", ["train", "val", "shift_style", "heldout", "cp_train", "cp_test"]),
                         ("snli_ve", ["train", "dev", "test", "shift_style", "heldout"]), ("vcr", ["train", "val"])):
        for split in splits:
            data = open_task(kind, tasks / kind, split)
            assert data.skips.total == 0 and len(data.examples) >= 60, (kind, split)
            assert all(ex.image.is_file() for ex in data.examples)
    vcr = open_task("vcr", tasks / "vcr", "train")
    assert {m["source"] for m in vcr.meta.values()} == {"lsmdc", "movieclips"}
    assert all(len(ex.choices) == 4 and len(ex.rationales) == 4 for ex in vcr.examples)
    cp = [open_task("vqa", tasks / "vqa", s).meta for s in ("cp_train", "cp_test")]
    both = [open_task("vqa", tasks / "vqa", s).meta for s in ("train", "val")]
    assert sorted(cp[0] | cp[1]) == sorted(both[0] | both[1]) and not set(cp[0]) & set(cp[1])


def test_heldout_combinations_only_in_heldout_files(tiny_world):
    doc = json.loads((tiny_world / "world.json").read_text())
    combos = doc["heldout_combos"]
    assert len(combos) == 6
    pattern = re.compile("|".join(f"{c.split()[0]} (?:striped |dotted )?{c.split()[1]}" for c in combos))
    assert not pattern.search((tiny_world / "pairs.csv").read_text())
    assert not pattern.search((tiny_world / "retrieval" / "test.jsonl").read_text())
    assert len(pattern.findall((tiny_world / "retrieval" / "test_heldout.jsonl").read_text())) >= 40


def test_text_alone_stays_near_chance_or_prior():
    acc, prior = vqa_text_only(1200)
    assert acc <= prior + 0.03
    assert snli_ve_text_only(1200) < 0.40  # chance 1/3
    q_a, qa_r = vcr_text_only(2000)
    assert q_a < 0.31 and qa_r < 0.31  # chance 1/4


def test_same_seed_same_bytes_other_seed_differs(tiny_world, tmp_path):
    build_world(tmp_path / "again", "tiny", seed=0)
    assert _tree_hash(tmp_path / "again") == _tree_hash(tiny_world)
    other = tmp_path / "other"
    build_world(other, "tiny", seed=1)
    assert (other / "pairs.csv").read_bytes() != (tiny_world / "pairs.csv").read_bytes()


def test_dup_rate_plants_more_copies_and_changes_only_the_pairs(tiny_world, tmp_path):
    dup = tmp_path / "dup"
    doc = build_world(dup, "tiny", seed=0, dup_rate=0.6)
    assert doc["dup_rate"] == 0.6

    def groups(root):
        return len({t["group"] for t in json.loads((root / "pairs_groundtruth.json").read_text()).values()})

    assert groups(dup) < 0.8 * groups(tiny_world)  # the pairs hold fewer distinct scenes
    for rel in ("classify", "retrieval", "tasks"):  # their streams do not depend on the pairs'
        assert _tree_hash(dup / rel) == _tree_hash(tiny_world / rel)
    with pytest.raises(UserError, match="between 0 and 1"):
        build_world(tmp_path / "bad", "tiny", dup_rate=1.5)


def test_refuses_non_empty_folder_and_unknown_size(tiny_world, tmp_path):
    with pytest.raises(UserError, match="not empty"):
        build_world(tiny_world, "tiny")
    with pytest.raises(UserError, match="unknown world size"):
        build_world(tmp_path / "x", "huge")


def test_extra_test_sets_are_new_images_of_the_same_classes(tiny_world, tmp_path):
    assert write_extra_test(tiny_world, tmp_path / "x", per_class=6) == {"shape": 48, "color": 60}
    for name in ("shape", "color"):
        extra = open_imagefolder(tmp_path / "x" / name)
        own = open_imagefolder(tiny_world / "classify" / name / "test")
        assert extra.classnames == own.classnames and extra.templates == own.templates
        assert sorted(set(extra.labels)) == list(range(len(own.classnames)))
        own_bytes = {p.read_bytes() for p in (tiny_world / "classify" / name / "test").rglob("*.png")}
        assert not own_bytes & {p.read_bytes() for p in (tmp_path / "x" / name).rglob("*.png")}
    write_extra_test(tiny_world, tmp_path / "again", per_class=6)
    assert _tree_hash(tmp_path / "again") == _tree_hash(tmp_path / "x")
    with pytest.raises(UserError, match="not empty"):
        write_extra_test(tiny_world, tmp_path / "x", per_class=6)
    with pytest.raises(UserError, match="no world.json"):
        write_extra_test(tmp_path, tmp_path / "y", per_class=6)
    with pytest.raises(UserError, match="at least 1"):
        write_extra_test(tiny_world, tmp_path / "z", per_class=0)
