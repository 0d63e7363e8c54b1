"""Image-text sources that used to go silently wrong, crash or hang: odd image encodings are decoded right,
broken samples are counted skips, unreadable inputs are one-line errors."""

from __future__ import annotations

import io
import json
import random
import tarfile
import time
import warnings

import numpy as np
import pytest
from PIL import Image
from rel_cases import case, param_cases
from rel_helpers import (
    assert_clear_error,
    caption,
    cli,
    png16,
    png_bytes,
    png_header,
    run_main,
    sample_members,
    tiny_distill_config,
    write_pairs,
    write_tar,
)

from clipdistill.data import make_loader, open_source
from clipdistill.errors import DataError

ARCH = "open_clip:cd-student-xs-32"


def loaded(src) -> dict:
    return {s.key: s for s in src}


@case("data", "a 16-bit greyscale PNG (Pillow mode `I;16`) at mid-grey",
      "decoded as mid-grey (value 128, scaled by 255/65535), not clipped to an almost white 255")
def test_16bit_png_keeps_its_grey_level(tmp_path):
    src = open_source(str(write_pairs(tmp_path, rows=[("grey", png16(32768), "a grey square")])))
    image = loaded(src)["grey"].image
    assert image.mode == "RGB" and np.array(image).min() == np.array(image).max() == 128


@case("data", "a JPEG stored sideways with EXIF Orientation 6 (rotate 90 degrees to display)",
      "the image is turned upright as a viewer shows it (its width and height swap)")
def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (60, 30), (230, 20, 20))
    im.paste((20, 20, 230), (30, 0, 60, 30))  # stored: red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    src = open_source(str(write_pairs(tmp_path, rows=[("side", buf.getvalue(), "red above blue")])))
    pixels = np.array(loaded(src)["side"].image)
    assert pixels.shape[:2] == (60, 30)  # (height, width): upright
    assert pixels[3, 15, 0] > 200 and pixels[-4, 15, 2] > 200  # red on top, blue below


@case("data", "PNGs whose headers claim 100 Mpx and 400 Mpx (decompression bombs)",
      "counted skip `too_many_pixels` before any pixel is decoded (limit `max_pixels`, default Pillow's "
      "89,478,485); no Pillow warning or error escapes; the other rows load")
def test_oversized_images_are_skipped_undecoded(tmp_path):
    rows = [("ok", png_bytes(0), caption(0)), ("big", png_header(10_000, 10_000), caption(1)),
            ("bomb", png_header(20_000, 20_000), caption(2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t0 = time.perf_counter()
        src = open_source(str(write_pairs(tmp_path, rows=rows)))
        assert list(loaded(src)) == ["ok"]
        assert time.perf_counter() - t0 < 10
    assert dict(src.skips) == {"too_many_pixels": 2}
    small = open_source(str(tmp_path / "pairs.csv"), max_pixels=64 * 64 - 1)
    assert not list(small) and dict(small.skips) == {"too_many_pixels": 3}


@case("data", "a key repeated inside a tar shard (later in the shard, and as a second `KEY.png` in a row), "
      "and a key column repeated in a CSV",
      "each repeat is a counted skip `duplicate_key` and the first occurrence is kept; `embed` stores every "
      "key once, so the cached-teacher join cannot send two samples to one row")
def test_duplicate_keys_are_dropped_everywhere(tmp_path):
    from clipdistill.features.embed import EmbedOptions, embed_features
    from clipdistill.features.store import FeatureStore

    members = [*sample_members(range(3)), ("000001.png", png_bytes(5)), ("000001.txt", b"a later copy"),
               ("000002.png", png_bytes(6)), ("000002.txt", b"and another")]
    write_tar(tmp_path / "s-00000.tar", members)
    src = open_source(str(tmp_path / "s-00000.tar"))
    assert [(k, s.text) for k, s in loaded(src).items()] == [(f"s-00000/{i:06d}", caption(i)) for i in range(3)]
    assert dict(src.skips) == {"duplicate_key": 2}
    store = FeatureStore(embed_features(EmbedOptions(teacher=ARCH, data=str(tmp_path / "s-00000.tar"),
                                                     batch_size=4, device="cpu"), tmp_path / "feats"))
    assert store.keys == [f"s-00000/{i:06d}" for i in range(3)]
    assert store.manifest["skips"] == {"duplicate_key": 2} and store.manifest["counts"]["skipped"] == 2
    table = write_pairs(tmp_path / "csv", rows=[("a", png_bytes(0), "first"), ("b", png_bytes(1), "b"),
                                                ("a", png_bytes(2), "second")])
    src = open_source(str(table))
    assert [(k, s.text) for k, s in loaded(src).items()] == [("a", "first"), ("b", "b")]
    assert dict(src.skips) == {"duplicate_key": 1}


@case("data", "a shard whose `KEY.txt` holds PNG bytes (and one holding Latin-1 text)",
      "counted skip `non_text_caption`; the image bytes never become a caption")
def test_binary_caption_is_not_a_caption(tmp_path):
    write_tar(tmp_path / "s.tar", [*sample_members(range(2)), ("000005.png", png_bytes(5)),
                                   ("000005.txt", png_bytes(6)), ("000006.png", png_bytes(6)),
                                   ("000006.txt", "caf\u00e9".encode("latin-1"))])
    src = open_source(str(tmp_path / "s.tar"))
    assert list(loaded(src)) == ["s/000000", "s/000001"] and dict(src.skips) == {"non_text_caption": 2}


@case("data", "shard members that are hard links, members under a folder with a dot (`v1.2/0001.jpg`), and "
      "`.gif` / `.webp` / `.tiff` / `.JPG` images",
      "all read, keyed as webdataset keys them (up to the first dot of the file name); a link to a member "
      "the archive does not hold is counted `broken_link`")
def test_links_dotted_folders_and_more_formats(tmp_path):
    def encoded(fmt: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (16, 16), (40, 180, 40)).save(buf, format=fmt)
        return buf.getvalue()

    path = write_tar(tmp_path / "s.tar", [("v1.2/0001.jpg", encoded("JPEG")), ("v1.2/0001.txt", b"dotted"),
                                          ("0002.gif", encoded("GIF")), ("0002.txt", b"gif"),
                                          ("0003.webp", encoded("WEBP")), ("0003.txt", b"webp"),
                                          ("0004.tiff", encoded("TIFF")), ("0004.txt", b"tiff"),
                                          ("0005.JPG", encoded("JPEG")), ("0005.txt", b"upper-case")])
    with tarfile.open(path, "a") as tar:
        for name, target in (("0006.jpg", "0005.JPG"), ("0006.txt", "0005.txt"), ("0007.jpg", "gone.jpg")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.LNKTYPE, target
            tar.addfile(info)
        tar.addfile(tarfile.TarInfo("0007.txt"), io.BytesIO(b""))
    src = open_source(str(path))
    got = {k: s.text for k, s in loaded(src).items()}
    assert got == {"s/v1.2/0001": "dotted", "s/0002": "gif", "s/0003": "webp", "s/0004": "tiff",
                   "s/0005": "upper-case", "s/0006": "upper-case"}
    assert dict(src.skips) == {"broken_link": 1}


@case("data", "`.tar.gz` and `.tgz` shards, one of them cut short",
      "read like `.tar` shards (keys `SHARD/KEY`); the cut one is counted `truncated_tar` and the next shard "
      "is read")
def test_gzip_shards_are_read(tmp_path):
    for name in ("s-0.tar.gz", "s-1.tar.gz", "t.tgz"):
        with tarfile.open(tmp_path / name, "w:gz") as tar:
            for member, data in sample_members(range(3)):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert len(loaded(open_source(str(tmp_path / "t.tgz")))) == 3
    cut = tmp_path / "s-0.tar.gz"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    src = open_source(str(tmp_path / "s-{0..1}.tar.gz"))
    keys = list(loaded(src))
    assert keys[-3:] == ["s-1/000000", "s-1/000001", "s-1/000002"] and len(keys) < 6
    assert src.skips["truncated_tar"] == 1


@case("data", "a tar-shard source in which every image is broken, given to `distill`",
      "`error: ... every sample was dropped ({'undecodable_image': 4})`, not `fewer than accum_steps` "
      "(exit 2, no traceback)")
def test_all_dropped_stream_names_the_reasons(tmp_path):
    import yaml

    write_tar(tmp_path / "s.tar", [m for i in range(4) for m in ((f"{i:06d}.png", b"not a png"),
                                                                  (f"{i:06d}.txt", caption(i).encode()))])
    cfg = {"student": {"model": ARCH}, "data": {"source": str(tmp_path / "s.tar"), "batch_size": 2},
           "train": {"epochs": 1, "progress": False, "tensorboard": False, "device": "cpu"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code, out = run_main("distill", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"))
    assert code == 2 and "every sample was dropped ({'undecodable_image': 4})" in out, out
    assert "accum_steps" not in out and "Traceback" not in out


@case("data", "a caption of a million letters without a space (open_clip's BPE is super-linear in a word's "
      "length: hours)",
      "cut to `max_caption_chars` (default 2000) before tokenising and counted `caption_truncated`; the "
      "batch is tokenised in well under a second's work per sample")
def test_huge_caption_does_not_hang_the_tokenizer(tmp_path):
    from clipdistill.zoo import load_model

    word = "".join(random.Random(0).choice("abcdefghijklmnopqrstuvwxyz") for _ in range(1_000_000))
    write_tar(tmp_path / "s.tar", [("0.png", png_bytes(0)), ("0.txt", word.encode()),
                                   ("1.png", png_bytes(1)), ("1.txt", caption(1).encode())])
    model = load_model(ARCH)
    src = open_source(str(tmp_path / "s.tar"))
    t0 = time.perf_counter()
    batch, = list(make_loader(src, [(model.eval_transform, model.tokenizer)], 2))  # a stream counts at its end
    assert time.perf_counter() - t0 < 60
    assert batch.captions[0] == word[:2000] and batch.student.text.shape[0] == 2
    assert dict(src.skips) == {"caption_truncated": 1} and src.skips.total == 0
    from clipdistill.features.embed import EmbedOptions, embed_features
    from clipdistill.features.store import FeatureStore

    table = write_pairs(tmp_path / "csv", rows=[("long", png_bytes(0), word), ("short", png_bytes(1), caption(1))])
    for i, data in enumerate((tmp_path / "s.tar", table)):  # the store's manifest counts it, as a kept sample
        store = FeatureStore(embed_features(EmbedOptions(teacher=ARCH, data=str(data), device="cpu"),
                                            tmp_path / f"feats{i}"))
        assert len(store) == 2 and store.manifest["skips"] == {"caption_truncated": 1}
        assert store.manifest["counts"]["skipped"] == 0


BAD_ROWS = param_cases("data", "test_bad_sources.py::test_bad_table_row_is_a_counted_skip", [
    ("csv-not-utf8", "a CSV row with a Latin-1 byte (not UTF-8)", "counted skip `not_utf8`; the other rows load",
     ("pairs.csv", b"a.png,caf\xe9\n", "not_utf8")),
    ("jsonl-not-utf8", "a JSONL line with a Latin-1 byte", "counted skip `not_utf8`",
     ("pairs.jsonl", b'{"image": "a.png", "caption": "caf\xe9"}\n', "not_utf8")),
    ("jsonl-not-object", "a JSONL line that is valid JSON but not an object (`[1, 2]`)",
     "counted skip `not_an_object`", ("pairs.jsonl", b"[1, 2]\n", "not_an_object")),
    ("jsonl-not-json", "a JSONL line cut in the middle", "counted skip `not_json`",
     ("pairs.jsonl", b'{"image": "a.png", "capt\n', "not_json")),
])


@pytest.mark.parametrize("bad", BAD_ROWS)
def test_bad_table_row_is_a_counted_skip(tmp_path, bad):
    name, line, reason = bad
    (tmp_path / "a.png").write_bytes(png_bytes(0))
    if name.endswith(".csv"):
        good = [b"a.png,first\n", b"a.png,last\n"]
        data = b"image,caption\n" + good[0] + line + good[1]
    else:
        good = [json.dumps({"image": "a.png", "caption": c}).encode() + b"\n" for c in ("first", "last")]
        data = good[0] + line + good[1]
    (tmp_path / name).write_bytes(data)
    src = open_source(str(tmp_path / name))
    assert [(k, s.text) for k, s in loaded(src).items()] == [("row-0", "first"), ("row-2", "last")]
    assert dict(src.skips) == {reason: 1}


@case("data", "a CSV caption field of 300 KB (over Python csv's 128 KB field limit)",
      "the row loads, its caption cut to `max_caption_chars` (counted `caption_truncated`), instead of "
      "`field larger than field limit`")
def test_csv_field_over_128kb(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(0))
    long = "word " * 60_000
    (tmp_path / "p.csv").write_text(f"image,caption\na.png,{long}\na.png,short\n")
    src = open_source(str(tmp_path / "p.csv"))
    assert [s.text for s in src] == [long[:2000], "short"] and dict(src.skips) == {"caption_truncated": 1}


@case("data", "a shard pattern with an unbalanced brace (`shards/{00000..00003.tar`)",
      "`error: unbalanced braces in the shard pattern ...` (exit 2, no traceback)")
def test_unbalanced_brace_pattern(tmp_path):
    with pytest.raises(DataError, match="unbalanced braces"):
        open_source(str(tmp_path / "shards/{00000..00003.tar"))
    assert_clear_error(cli("data", "inspect", str(tmp_path / "shards/{00000..00003.tar"), timeout=60),
                       "unbalanced braces")


@case("data", "an open_clip training CSV (`filepath` and `title` columns, tab-separated: open_clip_train's defaults) "
      "given to `data inspect`, `embed` and `distill` without column options; another CSV with its own column "
      "names",
      "the open_clip CSV is read as is; other names are set with `--image-col` / `--caption-col` (embed, data "
      "inspect) or `data.image_col` / `data.caption_col` (distill); `balance --data` opens the source with the "
      "store's own options")
def test_open_clip_csv_and_column_options(tmp_path):
    from clipdistill.features.embed import EmbedOptions, embed_features
    from clipdistill.features.store import FeatureStore

    for i in range(8):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
    (tmp_path / "train.csv").write_text("filepath\ttitle\n" + "".join(f"{i}.png\t{caption(i)}, {i}\n"
                                                                     for i in range(8)))
    (tmp_path / "own.csv").write_text("pic,words\n" + "".join(f"{i}.png,{caption(i)}\n" for i in range(8)))
    inspect = cli("data", "inspect", str(tmp_path / "train.csv"), timeout=120)
    assert inspect.returncode == 0 and "samples read" in inspect.stdout and " 8 " in inspect.stdout, inspect.stdout
    assert [s.text for s in open_source(str(tmp_path / "train.csv"))][:1] == [f"{caption(0)}, 0"]
    code, out = run_main("embed", "--teacher", ARCH, "--data", str(tmp_path / "own.csv"), "--out",
                         str(tmp_path / "feats"), "--device", "cpu", "--image-col", "pic", "--caption-col", "words")
    assert code == 0 and len(FeatureStore(tmp_path / "feats")) == 8, out
    code, out = run_main("balance", "--features", str(tmp_path / "feats"), "--out", str(tmp_path / "bal"),
                         "--clusters", "2", "--device", "cpu", "--data", str(tmp_path / "own.csv"))
    assert code == 0, out  # --data is opened with the store's columns to check its fingerprint
    store = embed_features(EmbedOptions(teacher=ARCH, data=str(tmp_path / "train.csv"), device="cpu"),
                           tmp_path / "feats2")
    assert len(FeatureStore(store)) == 8
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"student: {{model: '{ARCH}'}}\ndata: {{source: '{tmp_path / 'own.csv'}', batch_size: 4}}\n"
                   "train: {steps: 1, progress: false, tensorboard: false, device: cpu}\n")
    code, out = run_main("distill", str(cfg), "--out", str(tmp_path / "run"), "--set", "data.image_col=pic",
                         "--set", "data.caption_col=words")
    assert code == 0, out
    code, out = run_main("distill", str(cfg), "--out", str(tmp_path / "run2"))
    assert code == 2 and "no 'image' column" in out


@case("data", "a CSV with an unclosed quote in a caption",
      "`error: ... not a readable CSV after line N (unexpected end of data)` (exit 2, no traceback), instead of "
      "the rest of the file read as one caption")
def test_unclosed_quote_is_a_clear_error(tmp_path):
    (tmp_path / "p.csv").write_text('image,caption\na.png,fine\na.png,"unclosed\na.png,swallowed\n')
    assert_clear_error(cli("data", "inspect", str(tmp_path / "p.csv"), timeout=60), "not a readable CSV",
                       "unexpected end of data")


@case("data", "a feature store / balance output made from `pairs.csv` given to a run that names the same data as "
      "`/abs/dir/pairs.csv` (or `./pairs.csv`, `world:w` vs `world:/abs/w/`)",
      "accepted: the source fingerprint hashes what is read, not how its path is spelt; other data is still refused")
def test_same_data_spelt_as_another_path_has_one_fingerprint(tmp_path, monkeypatch):
    from clipdistill.errors import ManifestMismatch
    from clipdistill.manifest import read_checked, write_manifest

    write_pairs(tmp_path / "d", n=4)
    (tmp_path / "d" / "img").rename(tmp_path / "d" / "images")  # the layout world:DIR reads (DIR/pairs.csv)
    monkeypatch.chdir(tmp_path)
    csv_text = (tmp_path / "d" / "pairs.csv").read_text().replace("img/", "images/")
    (tmp_path / "d" / "pairs.csv").write_text(csv_text)
    spellings = ["d/pairs.csv", "./d/pairs.csv", str(tmp_path / "d" / "pairs.csv"), "d/../d/pairs.csv",
                 "world:d", f"world:{tmp_path / 'd'}/"]
    prints = {open_source(s).fingerprint() for s in spellings}
    assert len(prints) == 1, prints
    write_manifest(tmp_path / "store", "embed", source={"fingerprint": prints.pop()})
    for s in spellings:
        read_checked(tmp_path / "store", "embed", "feature store", fingerprint=open_source(s).fingerprint())
    (tmp_path / "d" / "pairs.csv").write_text(csv_text + "k9,images/k0.png,one more row\n")
    with pytest.raises(ManifestMismatch, match="source.fingerprint"):
        read_checked(tmp_path / "store", "embed", "feature store", fingerprint=open_source("d/pairs.csv").fingerprint())


@case("data", "`distill` with hard negatives (`data.hard_negatives=swap`, loss `negclip`) on captions of which half "
      "name no phrase of `data.attributes`",
      "those pairs train without a negative (their column is left out of the softmax) and are counted "
      "`no_hard_negative` in the run manifest's `skipped_reads` (kept, not dropped)")
def test_captions_naming_no_attribute_train_without_a_negative(tmp_path):
    rows = [(f"k{i}", png_bytes(i), caption(i) if i % 2 else "a picture of something") for i in range(16)]
    cfg = tiny_distill_config(tmp_path / "c.yaml", str(write_pairs(tmp_path / "d", rows=rows)))
    code, out = run_main("distill", cfg, "--out", str(tmp_path / "run"), "--set", "data.hard_negatives=swap",
                         "--set", "loss={negclip: {}}", "--set", "data.attributes={colour: [red, green, blue, yellow]}")
    assert code == 0, out
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["skipped_reads"] == {"no_hard_negative": 8}  # 2 batches of 8 over the 16 rows, one epoch
