"""Image-text sources and the loader: readers, bad samples counted per reason, order, views, sharding."""

from __future__ import annotations

import io
import json
import random
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.data import ShardSource, make_loader, open_source
from clipdistill.errors import DataError


def png(color=(200, 10, 10), size=(8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def table_dir(tmp_path):
    for i in range(10):
        (tmp_path / f"im{i}.png").write_bytes(png((i * 20, 0, 0)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    rows = [(f"im{i}.png", f"a red square number {i}") for i in range(10)]
    rows += [("bad.png", "broken"), ("empty.png", "empty"), ("im0.png", ""), ("nope.png", "missing file")]
    with open(tmp_path / "pairs.csv", "w") as f:
        f.write("filepath,title\n" + "".join(f"{a},{b}\n" for a, b in rows))
    with open(tmp_path / "pairs.jsonl", "w") as f:
        f.writelines(json.dumps({"image": a, "caption": b}) + "\n" for a, b in rows)
    return tmp_path


def views():
    def small(im):
        return torch.from_numpy(np.array(im.resize((2, 2)))).permute(2, 0, 1).float()

    def big(im):
        return torch.from_numpy(np.array(im.resize((4, 4)))).permute(2, 0, 1).float()

    def tok(texts):
        return torch.tensor([[len(t.split()), len(t)] for t in texts])

    return {"": (small, tok), "teacher_": (big, tok)}


def test_csv_columns_and_skip_reasons(table_dir):
    src = open_source(str(table_dir / "pairs.csv"), image_col="filepath", caption_col="title")
    got = [s.key for s in src]
    assert got == [f"row-{i}" for i in range(10)]
    assert dict(src.skips) == {"undecodable_image": 1, "zero_byte": 1, "missing_caption": 1, "missing_image": 1}
    with pytest.raises(DataError, match="no 'picture' column"):
        open_source(str(table_dir / "pairs.csv"), image_col="picture")
    with pytest.raises(DataError, match="no 'text' column"):
        open_source(str(table_dir / "pairs.csv"), caption_col="text")


def test_jsonl_matches_csv(table_dir):
    a = open_source(str(table_dir / "pairs.jsonl"))
    b = open_source(str(table_dir / "pairs.csv"), image_col="filepath", caption_col="title")
    assert [(s.key, s.text) for s in a] == [(s.key, s.text) for s in b]


def test_imagefolder_with_classnames(tmp_path):
    for cls in ("cat_a", "dog_b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(png())
    (tmp_path / "classnames.txt").write_text("tabby cat\nbig dog\n")
    src = open_source(f"imagefolder:{tmp_path}")
    assert [(s.key, s.text) for s in src] == [("cat_a/x.png", "a photo of a tabby cat."),
                                              ("dog_b/x.png", "a photo of a big dog.")]


def test_images_folder_keys_are_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.png").write_bytes(png())
    (tmp_path / "0.jpg").write_bytes(b"garbage")  # undecodable: counted, not fatal
    (tmp_path / "notes.txt").write_text("not an image")
    src = open_source(f"images:{tmp_path}")
    assert src.keys == ["0.jpg", "a/1.png"]
    assert [(s.key, s.text) for s in src] == [("a/1.png", "a/1.png")] and src.skips == {"undecodable_image": 1}
    with pytest.raises(DataError, match="no image files"):
        open_source(f"images:{tmp_path / 'a' / 'missing'}")


def write_shards(folder):
    with tarfile.open(folder / "s-0.tar", "w") as tar:
        for i in range(4):
            add(tar, f"k{i}.png", png((i, 0, 0)))
            add(tar, f"k{i}.txt", f"caption {i}".encode())
        add(tar, "z0.png", b"")  # zero byte
        add(tar, "z0.txt", b"zero")
        add(tar, "z1.jpg", b"garbage")  # undecodable
        add(tar, "z1.txt", b"garbage")
        add(tar, "z2.png", png())  # no caption
        add(tar, "../evil.txt", b"escape")
        add(tar, "/abs.png", png())
    full = folder / "s-1.tar"
    with tarfile.open(full, "w") as tar:
        for i in range(6):
            add(tar, f"m{i}.png", png((0, i, 0), size=(64, 64)))
            add(tar, f"m{i}.txt", f"other {i}".encode())
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])  # truncated mid-archive
    return str(folder / "s-{0..1}.tar")


def test_shards_count_every_bad_member(tmp_path):
    pattern = write_shards(tmp_path)
    src = open_source(pattern)
    assert isinstance(src, ShardSource)
    keys = [s.key for s in src]
    assert keys[:4] == ["s-0/k0", "s-0/k1", "s-0/k2", "s-0/k3"]
    assert all(k.startswith("s-1/m") for k in keys[4:]) and 0 < len(keys[4:]) < 6
    assert src.skips["zero_byte"] == 1 and src.skips["undecodable_image"] == 1
    assert src.skips["missing_caption"] == 1 and src.skips["unsafe_path"] == 2 and src.skips["truncated_tar"] == 1


def test_counting_a_stream_does_not_count_its_skips(tmp_path):
    """The training loop sizes a stream's epoch by a counting pass; the skip counts (the run manifest's
    `skipped_reads`) must hold one epoch's drops, not two."""
    src = open_source(write_shards(tmp_path))
    batches = make_loader(src, views(), 2)
    n = batches.count()
    assert n == len(list(batches)) > 0
    assert src.skips["zero_byte"] == 1 and src.skips["unsafe_path"] == 2


def test_a_resumed_stream_counts_only_the_drops_after_the_resume_point(tmp_path):
    """A resumed run's `skipped_reads` counts from the resume on: the skip-ahead over samples the killed run
    already consumed does not count their drops again."""
    src = open_source(write_shards(tmp_path))
    keys = [k for b in make_loader(src, views(), 2, start_step=3) for k in b["key"]]
    assert keys[0] == "s-1/m2"  # 6 samples skipped: all of s-0 (and its 5 drops) and m0, m1
    assert dict(src.skips) == {"truncated_tar": 1}
    fresh = open_source(write_shards(tmp_path))
    list(make_loader(fresh, views(), 2))
    assert sum(fresh.skips.values()) == 6


def test_missing_shard_and_unknown_source(tmp_path):
    with pytest.raises(DataError, match="shards not found"):
        open_source(str(tmp_path / "x-{0..3}.tar"))
    with pytest.raises(DataError, match="cannot tell"):
        open_source(str(tmp_path / "data.parquet"))


def test_loader_views_order_resume_and_rank_split(table_dir):
    src = open_source(str(table_dir / "pairs.jsonl"))
    full = list(make_loader(src, views(), 3, shuffle=True, seed=7))
    assert full[0]["image"].shape[1:] == (3, 2, 2) and full[0]["teacher_image"].shape[1:] == (3, 4, 4)
    keys = [k for b in full for k in b["key"]]
    assert sorted(keys) == sorted(f"row-{i}" for i in range(10))
    again = [k for b in make_loader(src, views(), 3, shuffle=True, seed=7) for k in b["key"]]
    assert again == keys
    resumed = [k for b in make_loader(src, views(), 3, shuffle=True, seed=7, start_step=2) for k in b["key"]]
    # batch boundaries are over indices (skipped samples leave a batch short), so compare to the index order
    r0 = [k for b in make_loader(src, views(), 4, shuffle=True, seed=3, rank=0, world_size=2) for k in b["key"]]
    r1 = [k for b in make_loader(src, views(), 4, shuffle=True, seed=3, rank=1, world_size=2) for k in b["key"]]
    assert not set(r0) & set(r1)
    assert set(resumed) < set(keys) and resumed == [k for b in full[2:] for k in b["key"]]
    kept = [k for b in make_loader(src, views(), 4, keys={"row-1", "row-5"}) for k in b["key"]]
    assert kept == ["row-1", "row-5"]
    assert src.skips["zero_byte"] >= 1


def test_loader_with_workers_matches_single_process(table_dir):
    src = open_source(str(table_dir / "pairs.jsonl"))
    a = list(make_loader(src, views(), 4, shuffle=True, seed=1))
    b = list(make_loader(src, views(), 4, shuffle=True, seed=1, num_workers=2))
    assert [x["key"] for x in a] == [x["key"] for x in b]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))


def _jitter(x: torch.Tensor) -> torch.Tensor:  # a user transform drawing from python's and numpy's RNGs
    return x // 2 + random.randint(0, 20) + int(np.random.randint(0, 20))


def test_augmentation_follows_the_sample_not_the_reader(table_dir):
    """A random crop (torch RNG) and jitter (python and numpy RNGs) drawn per (seed, key): the same with 0 or 2
    workers, after a resume, on either rank of 2, and the caller's RNGs are not consumed; another seed (epoch)
    draws other crops."""
    from torchvision.transforms import v2 as T

    crop = T.Compose([T.PILToTensor(), T.RandomResizedCrop(4, scale=(0.2, 1.0), antialias=True), _jitter])
    aug = {"": (crop, views()[""][1])}
    for i in range(10):  # a gradient, so that different crops give different pixels
        grid = np.add.outer(np.arange(16), np.arange(16) * (i + 2)).astype(np.uint8) * 7
        Image.fromarray(np.stack([grid] * 3, axis=-1)).save(table_dir / f"im{i}.png")
    src = open_source(str(table_dir / "pairs.jsonl"))

    def images(**kw) -> dict[str, torch.Tensor]:
        batches = make_loader(src, aug, 3, shuffle=True, **kw)
        return {k: im for b in batches for k, im in zip(b["key"], b["image"], strict=True)}

    def draw() -> tuple:
        return torch.rand(3).tolist(), random.random(), np.random.rand()

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    ref = images(seed=5)
    drawn = draw()
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert drawn == draw()  # reading the data drew nothing from the caller's streams
    for other in (images(seed=5, num_workers=2), images(seed=5, start_step=2),
                  images(seed=5, rank=0, world_size=2) | images(seed=5, rank=1, world_size=2)):
        assert other and all(torch.equal(im, ref[k]) for k, im in other.items())
    assert any(not torch.equal(im, ref[k]) for k, im in images(seed=6).items())  # the crops really are random


def test_every_sample_dropped_is_an_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"xx")
    (tmp_path / "p.csv").write_text("image,caption\nbad.png,a\nbad.png,b\n")
    src = open_source(str(tmp_path / "p.csv"), key_col="none")
    with pytest.raises(DataError, match="every sample was dropped"):
        list(make_loader(src, views(), 2))


def test_stream_loader_and_inspect_cli(tmp_path):
    pattern = write_shards(tmp_path)
    src = open_source(pattern)
    keys = [k for b in make_loader(src, views(), 3) for k in b["key"]]
    assert keys[:4] == ["s-0/k0", "s-0/k1", "s-0/k2", "s-0/k3"]
    assert src.skips["truncated_tar"] == 1
    out = CliRunner().invoke(app, ["data", "inspect", pattern])
    assert out.exit_code == 0, out.output
    assert "unsafe_path" in out.output and "truncated_tar" in out.output
