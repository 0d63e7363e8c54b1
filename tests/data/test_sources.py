"""Image-text sources and the loader: readers, bad samples counted per reason, order, views, sharding."""

from __future__ import annotations

import io
import json
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipdistill.cli import app
from clipdistill.data import ShardSource, make_loader, open_source
from clipdistill.errors import DataError

sys.path.insert(0, str(Path(__file__).parents[1] / "reliability"))  # the shared image builders
from rel_helpers import png16, png_header  # noqa: E402


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

    return [(small, tok), (big, tok)]  # the student's view, then a teacher's


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
    """The training loop sizes a stream's epoch from the tar headers; the skip counts (the run manifest's
    `skipped_reads`) must hold one epoch's drops, not two."""
    src = open_source(write_shards(tmp_path))
    batches = make_loader(src, views(), 2)
    n = batches.count()
    assert not src.skips
    assert n >= len(list(batches)) > 0  # the undecodable image is counted from its header, dropped when read
    assert src.skips["zero_byte"] == 1 and src.skips["unsafe_path"] == 2


def test_a_resumed_stream_counts_only_the_drops_after_the_resume_point(tmp_path):
    """A resumed run's `skipped_reads` counts from the resume on: the skip-ahead over samples the killed run
    already consumed does not count their drops again."""
    src = open_source(write_shards(tmp_path))
    keys = [k for b in make_loader(src, views(), 2, start_step=3) for k in b.keys]
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
    assert full[0].student.image.shape[1:] == (3, 2, 2) and full[0].views[1].image.shape[1:] == (3, 4, 4)
    keys = [k for b in full for k in b.keys]
    assert sorted(keys) == sorted(f"row-{i}" for i in range(10))
    again = [k for b in make_loader(src, views(), 3, shuffle=True, seed=7) for k in b.keys]
    assert again == keys
    resumed = [k for b in make_loader(src, views(), 3, shuffle=True, seed=7, start_step=2) for k in b.keys]
    # batch boundaries are over indices (skipped samples leave a batch short), so compare to the index order
    r0 = [k for b in make_loader(src, views(), 4, shuffle=True, seed=3, rank=0, world_size=2) for k in b.keys]
    r1 = [k for b in make_loader(src, views(), 4, shuffle=True, seed=3, rank=1, world_size=2) for k in b.keys]
    assert not set(r0) & set(r1)
    assert set(resumed) < set(keys) and resumed == [k for b in full[2:] for k in b.keys]
    kept = [k for b in make_loader(src, views(), 4, keys={"row-1", "row-5"}) for k in b.keys]
    assert kept == ["row-1", "row-5"]
    assert src.skips["zero_byte"] >= 1


def test_loader_with_workers_matches_single_process(table_dir):
    src = open_source(str(table_dir / "pairs.jsonl"))
    a = list(make_loader(src, views(), 4, shuffle=True, seed=1))
    b = list(make_loader(src, views(), 4, shuffle=True, seed=1, num_workers=2))
    assert [x.keys for x in a] == [x.keys for x in b]
    assert all(torch.equal(x.student.image, y.student.image) for x, y in zip(a, b, strict=True))


def _jitter(x: torch.Tensor) -> torch.Tensor:  # a user transform drawing from python's and numpy's RNGs
    return x // 2 + random.randint(0, 20) + int(np.random.randint(0, 20))


def test_augmentation_follows_the_sample_not_the_reader(table_dir):
    """A random crop (torch RNG) and jitter (python and numpy RNGs) drawn per (seed, key): the same with 0 or 2
    workers, after a resume, on either rank of 2, and the caller's RNGs are not consumed; another seed (epoch)
    draws other crops."""
    from torchvision.transforms import v2 as T

    crop = T.Compose([T.PILToTensor(), T.RandomResizedCrop(4, scale=(0.2, 1.0), antialias=True), _jitter])
    aug = [(crop, views()[0][1])]
    for i in range(10):  # a gradient, so that different crops give different pixels
        grid = np.add.outer(np.arange(16), np.arange(16) * (i + 2)).astype(np.uint8) * 7
        Image.fromarray(np.stack([grid] * 3, axis=-1)).save(table_dir / f"im{i}.png")
    src = open_source(str(table_dir / "pairs.jsonl"))

    def images(**kw) -> dict[str, torch.Tensor]:
        batches = make_loader(src, aug, 3, shuffle=True, **kw)
        return {k: im for b in batches for k, im in zip(b.keys, b.student.image, strict=True)}

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
    keys = [k for b in make_loader(src, views(), 3) for k in b.keys]
    assert keys[:4] == ["s-0/k0", "s-0/k1", "s-0/k2", "s-0/k3"]
    assert src.skips["truncated_tar"] == 1
    out = CliRunner().invoke(app, ["data", "inspect", pattern])
    assert out.exit_code == 0, out.output
    assert "unsafe_path" in out.output and "truncated_tar" in out.output


# -- decoding: bit depth, orientation, size limit --------------------------------------------------------

def test_16bit_png_is_scaled_not_clipped():
    from clipdistill.data.sources import decode_image

    assert Image.open(io.BytesIO(png16(32768))).mode == "I;16"
    for value, expected in ((0, 0), (32768, 128), (65535, 255), (257 * 77, 77)):
        im, reason = decode_image(png16(value))
        assert reason is None and im.mode == "RGB"
        assert np.array(im).min() == np.array(im).max() == expected


def test_exif_orientation_is_applied():
    from clipdistill.data.sources import decode_image

    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out, reason = decode_image(buf.getvalue())
    assert reason is None and out.size == (20, 40)
    top, bottom = np.array(out)[2, 10], np.array(out)[-3, 10]
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top after the turn


def test_pixel_limit_refuses_before_decoding():
    import warnings

    from clipdistill.data.sources import decode_image

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape either
        assert decode_image(png_header(10_000, 10_000)) == (None, "too_many_pixels")  # 100 Mpx: Pillow warns
        assert decode_image(png_header(20_000, 20_000)) == (None, "too_many_pixels")  # 400 Mpx: Pillow raises
        assert decode_image(png(size=(16, 16)), max_pixels=255) == (None, "too_many_pixels")
        assert decode_image(png(size=(16, 16)), max_pixels=256)[1] is None


def test_more_image_formats_in_shards(tmp_path):
    formats = {"0.gif": "GIF", "1.webp": "WEBP", "2.bmp": "BMP", "3.tiff": "TIFF", "4.JPG": "JPEG", "5.tif": "TIFF",
               "6.JPEG": "JPEG"}
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, fmt in formats.items():
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (0, 200, 0)).save(buf, format=fmt)
            add(tar, name, buf.getvalue())
            add(tar, name.split(".")[0] + ".txt", b"green")
    src = open_source(str(tmp_path / "s.tar"))
    assert [s.key for s in src] == [f"s/{i}" for i in range(7)] and not src.skips


# -- shard layout: keys, links, compression, duplicates ------------------------------------------------------

def test_keys_split_at_the_first_dot_of_the_file_name(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add(tar, "v1.2/0001.jpg", png())
        add(tar, "v1.2/0001.txt", b"in a dotted folder")
        add(tar, "v1.2/0002.seg.png", png())  # webdataset: key v1.2/0002, extension seg.png (not an image)
        add(tar, "v1.2/0002.txt", b"only a mask")
    src = open_source(str(tmp_path / "s.tar"))
    assert [(s.key, s.text) for s in src] == [("s/v1.2/0001", "in a dotted folder")]
    assert dict(src.skips) == {"missing_image": 1}


def link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def test_hard_links_are_resolved_and_broken_links_counted(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add(tar, "k0.png", png((9, 9, 9)))
        add(tar, "k0.txt", b"original")
        link(tar, "k1.png", "k0.png", tarfile.LNKTYPE)  # what `tar --hard-dereference`-less packers write
        link(tar, "k1.txt", "k0.txt", tarfile.SYMTYPE)
        link(tar, "k2.png", "nowhere.png", tarfile.LNKTYPE)
        add(tar, "k2.txt", b"linked")
        link(tar, "k3.png", "../../etc/x", tarfile.SYMTYPE)  # resolved inside the archive only
        add(tar, "k3.txt", b"linked")
    src = open_source(str(tmp_path / "s.tar"))
    got = {s.key: (s.text, np.array(s.image)[0, 0].tolist()) for s in src}
    assert got == {"s/k0": ("original", [9, 9, 9]), "s/k1": ("original", [9, 9, 9])}
    assert dict(src.skips) == {"broken_link": 2}


@pytest.mark.parametrize("suffix,mode", [(".tar.gz", "w:gz"), (".tgz", "w:gz"), (".tar.xz", "w:xz")])
def test_compressed_shards_are_read(tmp_path, suffix, mode):
    for s in range(2):
        with tarfile.open(tmp_path / f"s-{s}{suffix}", mode) as tar:
            for i in range(3):
                add(tar, f"k{i}.png", png((i, s, 0)))
                add(tar, f"k{i}.txt", f"caption {s} {i}".encode())
    src = open_source(str(tmp_path / f"s-{{0..1}}{suffix}"))
    assert [s.key for s in src] == [f"s-{s}/k{i}" for s in range(2) for i in range(3)] and not src.skips
    cut = tmp_path / f"s-1{suffix}"
    cut.write_bytes(cut.read_bytes()[:-40])
    src = open_source(str(tmp_path / f"s-{{0..1}}{suffix}"))
    assert [s.key for s in src][:3] == ["s-0/k0", "s-0/k1", "s-0/k2"] and src.skips["truncated_tar"] == 1


def test_duplicate_keys_keep_the_first(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i, text in ((0, b"first"), (1, b"one"), (0, b"again, later")):  # a key that comes back
            add(tar, f"k{i}.png", png())
            add(tar, f"k{i}.txt", text)
        add(tar, "k2.png", png())
        add(tar, "k2.txt", b"two")
        add(tar, "k2.png", png())  # the same member name twice in a row: a second sample under one key
        add(tar, "k2.txt", b"two again")
    src = open_source(str(tmp_path / "s.tar"))
    assert [(s.key, s.text) for s in src] == [("s/k0", "first"), ("s/k1", "one"), ("s/k2", "two")]
    assert dict(src.skips) == {"duplicate_key": 2}
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "p.csv").write_text("key,image,caption\nx,a.png,first\ny,a.png,other\nx,a.png,second\n")
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"key": k, "image": "a.png", "caption": c}) + "\n"
                                              for k, c in (("x", "first"), ("y", "other"), ("x", "second"))))
    for name in ("p.csv", "p.jsonl"):
        table = open_source(str(tmp_path / name))
        assert [(s.key, s.text) for s in table] == [("x", "first"), ("y", "other")]
        assert dict(table.skips) == {"duplicate_key": 1} and len(table) == 3
        batches = list(make_loader(open_source(str(tmp_path / name)), views(), 4))
        assert [k for b in batches for k in b.keys] == ["x", "y"]


def test_shard_names_never_collide(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        with tarfile.open(tmp_path / folder / "00000.tar", "w") as tar:
            add(tar, "k.png", png())
            add(tar, "k.txt", folder.encode())
    src = open_source(str(tmp_path / "{a,b}/00000.tar"))
    assert [(s.key, s.text) for s in src] == [("a/00000/k", "a"), ("b/00000/k", "b")]
    with pytest.raises(DataError, match="more than once"):
        open_source(str(tmp_path / "a/{00000,00000}.tar"))


def test_binary_caption_members_are_not_captions(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i, text in enumerate((png(), b"caf\xe9 latin-1", b"nul\0inside", "caf\u00e9 ok".encode())):
            add(tar, f"k{i}.jpg", png())
            add(tar, f"k{i}.txt", text)
    src = open_source(str(tmp_path / "s.tar"))
    assert [(s.key, s.text) for s in src] == [("s/k3", "caf\u00e9 ok")]
    assert dict(src.skips) == {"non_text_caption": 3}


# -- captions and tables ---------------------------------------------------------------------------------

def test_long_captions_are_cut_before_tokenising(tmp_path):
    import time

    from open_clip.tokenizer import SimpleTokenizer  # clipdistill is imported first, at the top

    word = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        add(tar, "k.png", png())
        add(tar, "k.txt", word.encode())
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "p.csv").write_text(f"image,caption\na.png,{word}\na.png,short\n")  # a field far over 128 KB
    for spec in ("s.tar", "p.csv"):
        src = open_source(str(tmp_path / spec))
        first = next(iter(src))
        assert first.text == word[:2000] and src.skips["caption_truncated"] == 1 and src.skips.total == 0
        t0 = time.perf_counter()
        SimpleTokenizer()([first.text])
        assert time.perf_counter() - t0 < 30  # the whole million letters would take hours
    src = open_source(str(tmp_path / "p.csv"), max_caption_chars=10)
    batches = list(make_loader(src, views(), 2, num_workers=1))  # the count crosses from the worker
    assert batches[0].captions == [word[:10], "short"] and dict(src.skips) == {"caption_truncated": 1}


def test_bad_table_rows_are_counted(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "p.csv").write_bytes(b"image,caption\na.png,good\na.png,caf\xe9 latin-1\na.png,also good\n")
    src = open_source(str(tmp_path / "p.csv"))
    assert [(s.key, s.text) for s in src] == [("row-0", "good"), ("row-2", "also good")]
    assert dict(src.skips) == {"not_utf8": 1}
    lines = [b'{"image": "a.png", "caption": "good"}', b'[1, 2]', b'"a string"', b'{"image": "a.png", "cap',
             b'{"image": "a.png", "caption": "caf\xe9"}', b'{"image": "a.png", "caption": "last"}']
    (tmp_path / "p.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    src = open_source(str(tmp_path / "p.jsonl"))
    assert [(s.key, s.text) for s in src] == [("row-0", "good"), ("row-5", "last")]
    assert dict(src.skips) == {"not_an_object": 2, "not_json": 1, "not_utf8": 1}
    (tmp_path / "all.jsonl").write_bytes(b"[1]\n\xff\n")
    with pytest.raises(DataError, match="none of the 2 rows is readable"):
        open_source(str(tmp_path / "all.jsonl"))


def test_open_clip_style_csv_is_read_by_default(tmp_path):
    """open_clip_train's defaults: --csv-img-key filepath --csv-caption-key title --csv-separator '\\t'."""
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "train.csv").write_text("filepath\ttitle\na.png\ta red, square thing\na.png\tanother\n")
    src = open_source(str(tmp_path / "train.csv"))
    assert [s.text for s in src] == ["a red, square thing", "another"]
    (tmp_path / "comma.csv").write_text("filepath,title\na.png,a red square\n")
    assert [s.text for s in open_source(str(tmp_path / "comma.csv"))] == ["a red square"]
    (tmp_path / "pipe.csv").write_text("img|cap\na.png|piped\n")
    piped = open_source(str(tmp_path / "pipe.csv"), image_col="img", caption_col="cap", separator="|")
    assert [s.text for s in piped] == ["piped"]


def test_unbalanced_brace_pattern_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="unbalanced braces"):
        open_source(str(tmp_path / "shards/{00000..00003.tar"))


def test_a_stream_with_every_sample_dropped_says_so(tmp_path):
    from clipdistill.train.loop import epoch_length

    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i in range(3):
            add(tar, f"k{i}.png", b"not an image")
            add(tar, f"k{i}.txt", b"caption")
    src = open_source(str(tmp_path / "s.tar"))
    for drop_last in (False, True):  # the skip records sit in a short last batch, which drop_last drops
        # the epoch is sized from the tar headers, which cannot tell a bad image: the pass itself refuses
        assert epoch_length(lambda epoch: make_loader(src, views(), 2, drop_last=drop_last))[0] == 2 - drop_last  # noqa: B023
        with pytest.raises(DataError, match=r"every sample was dropped \({'undecodable_image': 3}\)"):
            list(make_loader(src, views(), 2, drop_last=drop_last))
        src.skips.clear()


def test_stream_drop_last_drops_samples_but_counts_skips(tmp_path):
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i in range(5):
            add(tar, f"k{i}.png", png() if i != 2 else b"")
            add(tar, f"k{i}.txt", b"caption")
    src = open_source(str(tmp_path / "s.tar"))
    batches = make_loader(src, views(), 2, drop_last=True)
    assert batches.count() == 2
    assert [b.keys for b in batches] == [["s/k0", "s/k1"], ["s/k3", "s/k4"]] and dict(src.skips) == {"zero_byte": 1}


def test_separator_option_is_checked():
    from pydantic import ValidationError

    from clipdistill.data.sources import SourceOptions

    assert SourceOptions(separator="tab").separator == "tab" and SourceOptions(separator="|").separator == "|"
    for bad in (";;", "\n", '"', ""):
        with pytest.raises(ValidationError, match="one character other than a quote"):
            SourceOptions(separator=bad)


def test_unclosed_quote_in_a_csv_is_an_error(tmp_path):
    (tmp_path / "p.csv").write_text('image,caption\na.png,a "quoted" word\na.png,"unclosed\na.png,swallowed\n')
    with pytest.raises(DataError, match=r"p.csv: not a readable CSV after line 2 \(unexpected end of data\)"):
        open_source(str(tmp_path / "p.csv"))
