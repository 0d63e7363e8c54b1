"""A tar-shard stream's epoch length without a pass over its data: `data.num_samples`, open_clip's `sizes.json` /
`__len__` beside the shards, else a scan of the tar headers. No image is decoded before step 0, the counts equal
what a full pass yields on clean shards, and a stream shorter than its count ends its epoch instead of hanging."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import clipdistill  # noqa: F401  (before open_clip_train, which imports torchvision)
from clipdistill.data import loader as loader_mod
from clipdistill.data import make_loader, open_source
from clipdistill.data import sources as sources_mod
from clipdistill.errors import DataError
from clipdistill.manifest import read_manifest, write_manifest
from clipdistill.train import TrainConfig, fit
from clipdistill.train.loop import epoch_length
from clipdistill.train.schedule import lr_factor


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (i * 37 % 256, i * 11 % 256, 90)).save(buf, format="PNG")
    return buf.getvalue()


def write_shards(folder, sizes=(5, 3, 4), bad: frozenset = frozenset()):
    """Shards as webdataset's own TarWriter writes them (`__key__` + one member per extension); sample i's image
    is not an image when i is in `bad`. Returns the brace pattern."""
    import webdataset as wds

    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    for s, n in enumerate(sizes):
        with wds.TarWriter(str(folder / f"shard-{s:05d}.tar")) as sink:
            for _ in range(n):
                sink.write({"__key__": f"{i:08d}", "png": b"not a png" if i in bad else png(i),
                            "txt": f"caption {i}"})
                i += 1
    return str(folder / f"shard-{{00000..{len(sizes) - 1:05d}}}.tar")


def to_tensor(im):
    return torch.from_numpy(np.asarray(im.resize((4, 4)), dtype=np.float32)).permute(2, 0, 1) / 255


def no_tokens(texts):
    return torch.zeros(len(texts), 2, dtype=torch.long)


VIEWS = [(to_tensor, no_tokens)]


@pytest.fixture
def decodes(monkeypatch):
    """Calls of the one image decoder a shard source uses, in this process."""
    calls = [0]
    original = sources_mod.decode_image

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(sources_mod, "decode_image", counted)
    return calls


def open_clip_dataset_size():
    """open_clip_train 3.3.0's own `get_dataset_size` (and the `expand_urls` it calls), taken from the installed
    data.py: importing that module needs pandas, which this toolkit does not install."""
    import ast
    import importlib.util
    import os

    import braceexpand
    import webdataset as wds

    path = importlib.util.find_spec("open_clip_train").submodule_search_locations[0] + "/data.py"
    tree = ast.parse(Path(path).read_text())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("expand_urls", "get_dataset_size")]
    assert len(wanted) == 2
    scope = {"ast": ast, "json": json, "os": os, "braceexpand": braceexpand, "wds": wds}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), path, "exec"), scope)
    return scope["get_dataset_size"]


def test_sizes_json_and_len_read_as_open_clip_train_reads_them(tmp_path):
    get_dataset_size = open_clip_dataset_size()
    pattern = write_shards(tmp_path / "a")
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"shard-00000.tar": 5, "shard-00001.tar": 3,
                                                           "shard-00002.tar": 4, "shard-00003.tar": 9}))
    sizes = open_source(pattern).sizes()
    assert (sizes.total, sizes.origin) == (get_dataset_size(pattern)[0], "sizes.json") == (12, "sizes.json")
    assert [sizes.per_shard[s] for s in sorted(sizes.per_shard)] == [5, 3, 4]
    two = pattern.replace("00002}", "00001}")  # the shards given, not the folder's whole list
    assert open_source(two).sizes().total == get_dataset_size(two)[0] == 8
    (tmp_path / "a" / "sizes.json").write_text(json.dumps({"shard-00000.tar": "5", "shard-00001.tar": 3,
                                                           "shard-00002.tar": 4}))  # int(), as open_clip does
    assert open_source(pattern).sizes().total == get_dataset_size(pattern)[0] == 12

    pattern = write_shards(tmp_path / "b")
    (tmp_path / "b" / "__len__").write_text("12\n")
    sizes = open_source(pattern).sizes()
    assert (sizes.total, sizes.origin, sizes.per_shard) == (get_dataset_size(pattern)[0], "__len__", None)
    sizes = open_source(pattern, num_samples=10).sizes()  # the option wins, as --train-num-samples does
    assert (sizes.total, sizes.origin) == (10, "data.num_samples")


@pytest.mark.parametrize("how", ["header scan", "sizes.json", "data.num_samples"])
def test_counting_decodes_nothing(tmp_path, decodes, how, capsys):
    pattern = write_shards(tmp_path)
    if how == "sizes.json":
        (tmp_path / "sizes.json").write_text(json.dumps({f"shard-{i:05d}.tar": n for i, n in enumerate((5, 3, 4))}))
    src = open_source(pattern, num_samples=12 if how == "data.num_samples" else None)
    batches, epoch = epoch_length(lambda e: make_loader(src, VIEWS, 2, shuffle=True, seed=e, drop_last=True))
    assert decodes[0] == 0 and not src.skips
    assert epoch == {"samples": 12, "from": how, "batches_per_rank": batches} and batches == 12 // 2
    if how == "header scan":  # the progress line of the scan
        assert "progress: count samples (tar headers) 3/3 shards" in capsys.readouterr().out
    assert len(list(make_loader(src, VIEWS, 2, drop_last=True))) == batches and decodes[0] == 12


@pytest.mark.parametrize(("batch", "drop_last", "workers", "world", "kept"), [
    (2, False, 0, 1, None), (3, True, 0, 1, None), (2, True, 0, 2, None), (4, False, 0, 3, None),
    (2, False, 0, 4, None),  # fewer shards than readers: split by sample
    (2, True, 2, 1, None), (3, False, 2, 2, None),  # loader workers batch their own shares
    (2, False, 0, 2, {0, 2, 3, 5, 8, 9, 11}), (2, False, 0, 4, {1, 2, 4, 6, 7, 10}),  # a kept-list
])
def test_counts_equal_a_full_pass_on_clean_shards(tmp_path, batch, drop_last, workers, world, kept):
    pattern = write_shards(tmp_path / "scan")
    declared = write_shards(tmp_path / "declared")
    (tmp_path / "declared" / "sizes.json").write_text(json.dumps({f"shard-{i:05d}.tar": n
                                                                  for i, n in enumerate((5, 3, 4))}))
    names = {i: f"shard-{0 if i < 5 else 1 if i < 8 else 2:05d}/{i:08d}" for i in range(12)}
    keys = [names[i] for i in sorted(kept)] if kept is not None else None
    for spec in (pattern, declared):
        src = open_source(spec)
        for rank in range(world):
            def loader(e, rank=rank, src=src):
                return make_loader(src, VIEWS, batch, num_workers=workers, rank=rank, world_size=world, keys=keys,
                                   drop_last=drop_last)
            counted = loader(0).epoch_count()
            by_sample = len(src.shards) < world * max(1, workers)
            assert counted.origin == ("kept-list" if keys and not by_sample else
                                      "header scan" if spec == pattern else "sizes.json")
            if not (counted.origin == "sizes.json" and keys and by_sample):  # there the kept keys are spread evenly
                assert counted.batches == len(list(loader(0))), (spec, rank, counted)
            assert counted.samples == (len(keys) if keys else 12)


@pytest.mark.parametrize(("world", "num_samples", "origin"), [(1, None, "kept-list"), (4, 12, "data.num_samples")])
def test_a_kept_list_is_counted_per_shard_once_per_loader(tmp_path, monkeypatch, world, num_samples, origin):
    """Whole shards per reader (world 1), or split by sample over a declared count (world 4, 3 shards): the kept
    keys are sorted into shards by one pass over them, however often the loader is counted."""
    calls = []
    original = loader_mod._kept_per_shard

    def counted(*args):
        calls.append(args)
        return original(*args)

    monkeypatch.setattr(loader_mod, "_kept_per_shard", counted)
    src = open_source(write_shards(tmp_path), num_samples=num_samples)
    batches = make_loader(src, VIEWS, 2, world_size=world, keys=["shard-00000/00000000", "shard-00002/00000011"])
    first = batches.epoch_count()
    assert batches.epoch_count() == first and (first.samples, first.origin) == (2, origin)
    assert len(calls) == 1


def test_a_kept_list_of_other_keys_is_refused(tmp_path):
    src = open_source(write_shards(tmp_path))
    for world in (1, 4):  # whole shards per reader; split by sample (the header scan's keys)
        with pytest.raises(DataError, match="none of the 2 requested keys are in these shards"):
            make_loader(src, VIEWS, 2, world_size=world, keys=["other/1", "shard-9/1"]).epoch_count()
    resampled = sources_mod.ShardSource(write_shards(tmp_path / "r"), resampled=True)
    with pytest.raises(DataError, match="none of the 2 requested keys are in these shards"):
        make_loader(resampled, VIEWS, 2, keys=["other/1", "shard-9/1"]).epoch_count()


def test_a_declared_count_split_by_sample_is_spread_evenly(tmp_path):
    pattern = write_shards(tmp_path, sizes=(10,))
    src = open_source(pattern, num_samples=10)
    counts = [make_loader(src, VIEWS, 2, rank=r, world_size=3).epoch_count().batches for r in range(3)]
    passes = [len(list(make_loader(src, VIEWS, 2, rank=r, world_size=3))) for r in range(3)]
    assert counts == passes == [2, 2, 2]  # 4, 3, 3 samples


class Probe:
    """A one-layer task over the loader's batches that notes how many images were decoded by its first step."""

    def __init__(self, decodes):
        torch.manual_seed(0)
        self.lin, self.decodes, self.at_first_step = nn.Linear(3, 1), decodes, None

    def trainable(self):
        return {"lin": self.lin}

    def training_step(self, batch):
        if self.at_first_step is None:
            self.at_first_step = self.decodes[0]
        return {"loss": self.lin(batch.student.image.mean(dim=(2, 3))).pow(2).mean()}


def train(tmp_path, src, decodes, **cfg):
    run = tmp_path / "run"
    write_manifest(run, "test")
    task = Probe(decodes)
    cfg = TrainConfig(**{"lr": 0.01, "progress": False, "tensorboard": False, "device": "cpu", "save_every": 100,
                         "log_every": 1, **cfg})
    fit(task, lambda e, start_step=0: make_loader(src, VIEWS, 2, shuffle=True, seed=e, start_step=start_step,
                                                  drop_last=True), cfg, run)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return task, read_manifest(run)["schedule"], metrics


@pytest.mark.parametrize("how", ["header scan", "sizes.json", "data.num_samples"])
def test_a_shard_run_decodes_no_image_before_step_0(tmp_path, decodes, how, capsys):
    pattern = write_shards(tmp_path / "shards")
    if how == "sizes.json":
        (tmp_path / "shards" / "sizes.json").write_text(json.dumps({f"shard-{i:05d}.tar": n
                                                                    for i, n in enumerate((5, 3, 4))}))
    src = open_source(pattern, num_samples=12 if how == "data.num_samples" else None)
    task, schedule, metrics = train(tmp_path, src, decodes, epochs=2)
    assert task.at_first_step == 2  # the first batch's two images, nothing before
    assert schedule["epoch"] == {"samples": 12, "from": how, "batches_per_rank": 6} and schedule["total_steps"] == 12
    assert "short_epoch" not in schedule and [m["epoch"] for m in metrics] == [0] * 6 + [1] * 6
    assert f"data: 12 samples (from {how}): 6 batches an epoch, 12 optimizer steps" in capsys.readouterr().out


def test_a_stream_shorter_than_its_count_ends_its_epoch_and_keeps_the_schedule(tmp_path, decodes):
    """Shard 1's three images are found undecodable only when read: the header scan counted 12 samples (6
    batches of 2, drop_last), a pass gives 5 batches. Each epoch ends where the data ends; the run still takes
    its 12 planned steps, its schedule the one planned for 12."""
    src = open_source(write_shards(tmp_path / "shards", bad=frozenset({5, 6, 7})))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, schedule, metrics = train(tmp_path, src, decodes, epochs=2, warmup_steps=2)
    assert schedule["total_steps"] == 12 and schedule["epoch"]["from"] == "header scan"
    assert schedule["short_epoch"] == {"epoch": 0, "steps": 5, "counted_steps": 6}
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert [m["epoch"] for m in metrics] == [0] * 5 + [1] * 5 + [2] * 2  # a third pass for the planned steps
    assert [m["lr"] for m in metrics] == pytest.approx([0.01 * lr_factor(s, 12, 2, 0.0) for s in range(12)])
    assert [w for w in caught if "epoch 0 ended after 5 of the 6 steps counted from header scan" in str(w.message)]
    assert src.skips["undecodable_image"] == 6  # 3 a pass; the third pass stops before shard 1


def test_a_count_far_above_the_data_is_said(tmp_path, decodes):
    src = open_source(write_shards(tmp_path / "shards"), num_samples=20)  # 12 in the shards
    with pytest.warns(UserWarning, match=r"epoch 0 ended after 6 of the 10 steps counted from data.num_samples "
                                         r"\(20 samples\)"):
        _, schedule, metrics = train(tmp_path, src, decodes, epochs=1)
    assert schedule["short_epoch"] == {"epoch": 0, "steps": 6, "counted_steps": 10}
    assert [m["epoch"] for m in metrics] == [0] * 6 + [1] * 4


def test_header_scan_pairs_members_as_the_source_does(tmp_path):
    """Zero-byte images, captions missing or empty, repeated keys, links to absent members and a truncated tail
    are not counted; a member that is not an image but is named like one is (found only when decoded)."""
    import tarfile

    def add(tar, name, data=b"", link=None):
        info = tarfile.TarInfo(name)
        if link is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link
        else:
            info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if link is None else None)

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "a.png", png(0)), add(tar, "a.txt", b"ok")
        add(tar, "b.png", b""), add(tar, "b.txt", b"zero-byte image")
        add(tar, "c.png", png(1))  # no caption
        add(tar, "d.png", png(2)), add(tar, "d.txt", b"")  # empty caption
        add(tar, "a.png", png(3)), add(tar, "a.txt", b"the same key again")
        add(tar, "e.jpg", b"garbage"), add(tar, "e.txt", b"undecodable")
        add(tar, "f.png", link="a.png"), add(tar, "f.txt", b"a linked image")
        add(tar, "g.png", link="nowhere.png"), add(tar, "g.txt", b"broken link")
        add(tar, "../h.png", png(4)), add(tar, "../h.txt", b"unsafe")
    src = open_source(str(path))
    assert src.scan_shard(path) == ["a", "e", "f"]
    assert [s.key for s in src] == ["s/a", "s/f"] and src.skips["undecodable_image"] == 1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])  # cut inside the archive
    cut = open_source(str(path))
    read = [s.key.split("/", 1)[1] for s in cut]
    assert cut.skips["truncated_tar"] == 1 and [k for k in cut.scan_shard(path) if k != "e"] == read


def test_gzip_shards_are_scanned(tmp_path):
    import gzip

    pattern = write_shards(tmp_path, sizes=(4, 2))
    for i in range(2):
        plain = tmp_path / f"shard-{i:05d}.tar"
        (tmp_path / f"shard-{i:05d}.tar.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    src = open_source(pattern.replace(".tar", ".tar.gz"))
    assert src.sizes().total == 6 and src.sizes().origin == "header scan"
    src = open_source(pattern.replace(".tar", ".tar.gz"), num_samples=100_000)  # compressed: no bytes bound
    assert src.sizes().total == 100_000


def test_bad_counts_are_clear_errors(tmp_path):
    pattern = write_shards(tmp_path)
    with pytest.raises(DataError, match=r"data.num_samples says 1000 samples in 3 shards, but \d+ at most fit"):
        open_source(pattern, num_samples=1000).sizes()
    with pytest.raises(DataError, match="gives 0 samples"):
        open_source(pattern, num_samples=0).sizes()
    (tmp_path / "sizes.json").write_text(json.dumps({"shard-00000.tar": 5, "shard-00001.tar": 3}))
    with pytest.raises(DataError, match="sizes.json has no count for shard-00002.tar"):
        open_source(pattern).sizes()
    (tmp_path / "sizes.json").write_text(json.dumps({"shard-00000.tar": 0, "shard-00001.tar": 0,
                                                     "shard-00002.tar": 0}))
    with pytest.raises(DataError, match="sizes.json gives 0 samples"):
        open_source(pattern).sizes()
    (tmp_path / "sizes.json").write_text(json.dumps({"shard-00000.tar": 5000, "shard-00001.tar": 3,
                                                     "shard-00002.tar": 4}))
    with pytest.raises(DataError, match=r"sizes.json says 5000 samples in shard-00000.tar, but \d+ at most fit"):
        open_source(pattern).sizes()
    for text, needle in (("[5, 3]", "expected an object"), ("{", "not JSON"),
                         ('{"shard-00000.tar": "five"}', "'five' is not a sample count")):
        (tmp_path / "sizes.json").write_text(text)
        with pytest.raises(DataError, match=needle):
            open_source(pattern).sizes()
    (tmp_path / "sizes.json").unlink()
    (tmp_path / "__len__").write_text("__import__('os')")  # a literal only: never evaluated as code
    with pytest.raises(DataError, match="expected one integer"):
        open_source(pattern).sizes()
    (tmp_path / "__len__").unlink()
    with pytest.raises(DataError, match="knows its own length"):
        (tmp_path / "p.csv").write_text("image,caption\n")
        open_source(str(tmp_path / "p.csv"), num_samples=10)
    only_text = tmp_path / "t" / "x.tar"
    only_text.parent.mkdir()
    import tarfile

    with tarfile.open(only_text, "w") as tar:
        info = tarfile.TarInfo("k.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="no member pairs an image with a caption"):
        open_source(str(only_text)).sizes()


def test_a_resampled_stream_splits_its_count_over_the_readers(tmp_path):
    pattern = write_shards(tmp_path)
    src = sources_mod.ShardSource(pattern, resampled=True, num_samples=12)
    assert [make_loader(src, VIEWS, 2, rank=r, world_size=2).epoch_count().batches for r in range(2)] == [3, 3]


def test_counting_starts_no_loader_worker(tmp_path, monkeypatch):
    from torch.utils.data import DataLoader

    def no_pass(self):
        raise AssertionError("the count iterated the DataLoader")

    src = open_source(write_shards(tmp_path))
    monkeypatch.setattr(DataLoader, "__iter__", no_pass)
    assert epoch_length(lambda e: make_loader(src, VIEWS, 2, num_workers=2))[0] == 5 + 2  # readers of 9 and 3


def test_num_samples_is_a_typed_option_of_both_training_configs():
    from pydantic import ValidationError

    from clipdistill.distill.config import DataConfig as DistillData
    from clipdistill.vlpretrain.config import DataConfig as PretrainData

    for cls in (DistillData, PretrainData):
        assert cls(source="s/{0..1}.tar", num_samples=5).num_samples == 5
        assert cls(source="s/{0..1}.tar").num_samples is None
        for bad in (0, -3, "many", 2.5):
            with pytest.raises(ValidationError):
                cls(source="s/{0..1}.tar", num_samples=bad)
