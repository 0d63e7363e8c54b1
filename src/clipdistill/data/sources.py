"""Image-text sources: webdataset tar shards, CSV/TSV, JSONL, ImageFolder and the embedded world.

Every source yields `Sample(key, image, text)` with a stable key (a CSV row id or key column, a shard name +
member key, an ImageFolder relative path) so later stages can join features, cluster labels and kept-lists
back to samples. Bad data never crashes a run: each skipped sample is counted under a reason.
"""

from __future__ import annotations

import ast
import copy
import csv
import hashlib
import io
import json
import lzma
import random
import tarfile
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps
from pydantic import Field, field_validator

from clipdistill.config import StrictModel
from clipdistill.errors import DataError

IMAGE_EXTS = {"jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "gif", "tif", "tiff"}  # suffixes, lower case, no dot
ImageHook = Callable[[str, Image.Image], Image.Image]  # (sample key, decoded image) -> the image to train on
TEXT_EXTS = {"txt", "text", "caption"}
# Pillow's own MAX_IMAGE_PIXELS (it warns above it and refuses above twice it): larger images are counted
# `too_many_pixels` instead of being decoded in full
MAX_PIXELS = 89_478_485
# open_clip's BPE is super-linear in the length of a word without spaces (a 16k-letter word takes ~5 s, a
# million letters hours); 77 tokens never need more than a few hundred characters of ordinary text
MAX_CAPTION_CHARS = 2000
# counted like skips but the sample is kept
NOT_DROPPED = frozenset({"caption_truncated", "no_hard_negative"})
# binary files saved under a caption name: image magic numbers (their bytes are also not UTF-8 / hold NULs)
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")


class SourceOptions(StrictModel):
    """How an image-text source is read: CSV/JSONL columns, image size limit, caption length cap."""

    image_col: str = Field("image", description="CSV/JSONL column of image paths (relative to the file's folder); "
                           "a file without it but with open_clip's `filepath` column uses that")
    caption_col: str = Field("caption", description="CSV/JSONL column of captions; a file without it but with "
                             "open_clip's `title` column uses that")
    key_col: str = Field("key", description="CSV/JSONL column of sample keys, if present (else row-N)")
    separator: str = Field("auto", description="CSV field separator: "
                           "auto (tab for .tsv/.tab and for a .csv whose header has tabs but no commas, as "
                           "open_clip's default `--csv-separator` tab writes them), tab, or one character")
    max_pixels: int = Field(MAX_PIXELS, ge=1, le=2 * MAX_PIXELS, description="images with more pixels are "
                            "skipped (`too_many_pixels`) without being decoded; Pillow refuses more than "
                            f"{2 * MAX_PIXELS}")
    max_caption_chars: int = Field(MAX_CAPTION_CHARS, ge=1, description="longer captions are cut to this many "
                                   "characters before tokenising (counted `caption_truncated`)")

    @field_validator("separator")
    @classmethod
    def _one_character(cls, v: str) -> str:
        if v not in ("auto", "tab") and (len(v) != 1 or v in "\n\r\""):
            raise ValueError("auto, tab, or one character other than a quote or a line break")
        return v


class TrainSourceOptions(SourceOptions):
    """`SourceOptions` of a training source, plus how many samples a tar-shard stream holds (its epoch length)."""

    num_samples: int | None = Field(None, ge=1, description="samples in the tar shards (open_clip's "
                                    "--train-num-samples); none = open_clip's sizes.json or __len__ beside the "
                                    "shards, else a scan of the tar headers (no image decoded); a CSV/JSONL, "
                                    "imagefolder or world knows its own length and refuses it")


def source_kwargs(opts: StrictModel) -> dict:
    """The `open_source` keyword arguments held by a config that extends `SourceOptions`."""
    return {name: getattr(opts, name) for name in SourceOptions.model_fields}


@dataclass
class Sample:
    key: str
    image: Image.Image
    text: str


class SkipCounter(Counter):
    """Skipped samples per reason (undecodable_image, zero_byte, missing_caption, missing_image, unsafe_path,
    truncated_tar, duplicate_key, ...), and `caption_truncated` (kept samples, not part of `total`)."""

    @property
    def total(self) -> int:
        return sum(n for reason, n in self.items() if reason not in NOT_DROPPED)


def _to_rgb(im: Image.Image) -> Image.Image | None:
    """RGB with 16-bit greyscale scaled to 8 bits (Pillow's convert clips it at 255: an almost white image);
    None for modes whose range is unknown (float, 32-bit integer beyond 16 bits)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            return None
        return Image.fromarray(((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if im.mode == "F":
        return None
    return im.convert("RGB")


def _exif_upright(im: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception:  # a malformed EXIF block: the pixels as stored rather than a dropped sample
        return im


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image | None, str | None]:
    """(RGB image, upright by its EXIF orientation, None) or (None, skip reason). The pixel count is read
    from the header, so an oversized image is refused before its pixels are decoded."""
    if not data:
        return None, "zero_byte"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # `max_pixels` decides below
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    return None, "too_many_pixels"
                rgb = _to_rgb(_exif_upright(im))
                return (rgb, None) if rgb is not None else (None, "unsupported_image_mode")
    except Image.DecompressionBombError:
        return None, "too_many_pixels"
    except (OSError, ValueError, SyntaxError, EOFError, zlib.error):
        return None, "undecodable_image"


def read_image_file(path: Path | None, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image | None, str | None]:
    if path is None:
        return None, "missing_image"
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, "missing_image"
    except OSError:
        return None, "unreadable_image"
    return decode_image(data, max_pixels)


def decode_caption(data: bytes) -> tuple[str | None, str | None]:
    """A caption member's text, or (None, reason): image bytes or other binary saved as `KEY.txt` are not
    a caption."""
    if b"\0" in data or data.startswith(_IMAGE_MAGIC):
        return None, "non_text_caption"
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        return None, "non_text_caption"


def clean_caption(text, max_chars: int) -> tuple[str | None, str | None]:
    """(caption, None | "caption_truncated") or (None, skip reason)."""
    if not isinstance(text, str) or not text.strip():
        return None, "missing_caption"
    if "\0" in text:
        return None, "non_text_caption"
    if len(text) > max_chars:
        return text[:max_chars], "caption_truncated"
    return text, None


class MapSource:
    """A source whose rows (key, image path, caption) are known up front: random access, cheap key lookup.

    Rows found bad when the file was read (`bad`: row -> reason, e.g. not UTF-8) and every repeat of a key
    after its first row (`duplicate_key`) keep their place, so row numbers stay stable, and load as skips.
    """

    kind = "map"

    def __init__(self, name: str, keys: list[str], paths: list[Path | None], texts: list[str | None], *,
                 bad: dict[int, str] | None = None, max_pixels: int = MAX_PIXELS,
                 max_caption_chars: int = MAX_CAPTION_CHARS):
        self.name, self.keys, self.paths, self.texts = name, keys, paths, texts
        self.max_pixels, self.max_caption_chars = max_pixels, max_caption_chars
        self.bad = dict(bad or {})
        first: set[str] = set()
        for i, k in enumerate(keys):
            if i in self.bad:
                continue
            if k in first:  # a second row with this key would be joined to the first one's features
                self.bad[i] = "duplicate_key"
            first.add(k)
        self.skips = SkipCounter()
        self.image_hook: ImageHook | None = None

    def with_image_hook(self, hook: ImageHook) -> MapSource:
        """The same rows and skip counter, each decoded image passed through `hook(key, image)` (a cached
        teacher's stored augmented view replaces the picture). Picklable if the hook is, for loader workers."""
        view = copy.copy(self)
        view.image_hook = hook
        return view

    def __len__(self) -> int:
        return len(self.keys)

    def load(self, i: int) -> tuple[Sample | None, str | None]:
        """(sample, None | "caption_truncated") or (None, reason); does not touch the counter (safe in loader
        workers)."""
        if i in self.bad:
            return None, self.bad[i]
        text, note = clean_caption(self.texts[i], self.max_caption_chars)
        if text is None:
            return None, note
        image, reason = read_image_file(self.paths[i], self.max_pixels)
        if image is None:
            return None, reason
        if self.image_hook is not None:
            image = self.image_hook(self.keys[i], image)
        return Sample(self.keys[i], image, text), note

    def __getitem__(self, i: int) -> Sample | None:
        sample, reason = self.load(i)
        if reason:
            self.skips[reason] += 1
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            if (s := self[i]) is not None:
                yield s

    def fingerprint(self) -> str:
        """A hash of what is read (keys, image file names and sizes, captions), not of how the path was spelt:
        `pairs.csv`, `./pairs.csv` and `/abs/pairs.csv` are one source, so a store made from one is accepted
        for the others."""
        h = hashlib.sha256(Path(self.name).name.encode())
        for k, p, t in zip(self.keys, self.paths, self.texts, strict=True):
            size = p.stat().st_size if p is not None and p.is_file() else -1
            name = p.name if p is not None else ""
            h.update(f"{k}\0{name}\0{size}\0{t}\n".encode())
        return h.hexdigest()


def _separator(path: Path, separator: str) -> str:
    if separator != "auto":
        return "\t" if separator == "tab" else separator
    if path.suffix in (".tsv", ".tab"):
        return "\t"
    with open(path, "rb") as f:
        header = f.readline()
    return "\t" if b"\t" in header and b"," not in header else ","  # open_clip writes tab-separated .csv


def _utf8(value) -> bool:
    try:
        str(value).encode("utf-8")
        return True
    except UnicodeEncodeError:  # a byte that was not UTF-8, kept as a lone surrogate
        return False


def read_rows(path: Path, separator: str = "auto") -> tuple[list[dict | None], dict[int, str], list[str]]:
    """(rows, bad rows -> reason, column names) of a JSONL or of a CSV / TSV with a header line. A bad row
    (not UTF-8, not JSON, JSON but not an object) is None in `rows` so later row numbers do not shift."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    rows: list[dict | None] = []
    bad: dict[int, str] = {}
    if path.suffix == ".jsonl":
        columns: list[str] = []
        with open(path, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    row = json.loads(raw.decode("utf-8-sig" if not rows else "utf-8"))
                    reason = None if isinstance(row, dict) else "not_an_object"
                except UnicodeDecodeError:
                    reason = "not_utf8"
                except json.JSONDecodeError:
                    reason = "not_json"
                if reason:
                    bad[len(rows)] = reason
                    rows.append(None)
                else:
                    columns = columns or list(row)
                    rows.append(row)
        return rows, bad, columns
    # one caption may be longer than csv's default 128 KB field limit (it is cut to max_caption_chars later)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        # strict: an unclosed quote is an error (as in pandas, which open_clip reads CSVs with), not rows merged
        reader = csv.DictReader(f, delimiter=_separator(path, separator), strict=True)
        try:
            for row in reader:
                if all(_utf8(v) for v in row.values()):
                    rows.append(row)
                else:
                    bad[len(rows)] = "not_utf8"
                    rows.append(None)
        except csv.Error as e:
            raise DataError(f"{path}: not a readable CSV after line {reader.line_num} ({e})") from None
        columns = [c for c in reader.fieldnames or [] if c is not None]
    if not all(_utf8(c) for c in columns):
        raise DataError(f"{path}: the header line is not UTF-8 text")
    return rows, bad, columns


def read_table(path: Path) -> list[dict]:
    """Rows of a JSONL, or of a CSV / TSV (.tsv / .tab) with a header line, as dicts; a bad row is an error."""
    rows, bad, _ = read_rows(path)
    if bad:
        n = min(bad)
        raise DataError(f"{path}: row {n + 1} is {bad[n].replace('_', ' ')} ({len(bad)} bad rows)")
    return rows


def open_table(path: str | Path, image_col: str = "image", caption_col: str = "caption", key_col: str = "key",
               *, separator: str = "auto", max_pixels: int = MAX_PIXELS,
               max_caption_chars: int = MAX_CAPTION_CHARS) -> MapSource:
    """CSV/TSV/JSONL of (image path, caption); paths relative to the file's folder. `key_col` if present.
    open_clip's default columns (`filepath`, `title`) stand in for the default names when those are absent."""
    path = Path(path)
    rows, bad, columns = read_rows(path, separator)
    if not rows:
        raise DataError(f"{path}: no rows")
    if len(bad) == len(rows):
        reasons = dict(Counter(bad.values()))
        raise DataError(f"{path}: none of the {len(rows)} rows is readable ({reasons})")
    if image_col == "image" and image_col not in columns and "filepath" in columns:
        image_col = "filepath"
    if caption_col == "caption" and caption_col not in columns and "title" in columns:
        caption_col = "title"
    if image_col not in columns:
        raise DataError(f"{path}: no {image_col!r} column (columns: {', '.join(columns)}); set the image column "
                        "name (image_col / --image-col) or the separator")
    if caption_col not in columns:
        raise DataError(f"{path}: no {caption_col!r} column (columns: {', '.join(columns)}); "
                        "set the caption column name (caption_col / --caption-col)")
    keys, paths, texts = [], [], []
    for i, r in enumerate(rows):
        r = r or {}
        keys.append(str(r[key_col]) if r.get(key_col) is not None else f"row-{i}")
        image = r.get(image_col)
        paths.append(path.parent / image if isinstance(image, str) and image.strip() else None)
        texts.append(r.get(caption_col))
    return MapSource(str(path), keys, paths, texts, bad=bad, max_pixels=max_pixels,
                     max_caption_chars=max_caption_chars)


def open_imagefolder(root: str | Path, template: str = "a photo of a {c}.", **limits) -> MapSource:
    """ImageFolder (DIR/<class>/<image>) with `classnames.txt` if present; the text is the prompted class name."""
    root = Path(root)
    folders = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
    if not folders:
        raise DataError(f"{root}: no class sub-folders (expected DIR/<class>/<images>)")
    names_file = root / "classnames.txt"
    names = [ln.strip() for ln in names_file.read_text().splitlines() if ln.strip()] if names_file.is_file() else []
    if names and len(names) != len(folders):
        raise DataError(f"{names_file}: {len(names)} class names for {len(folders)} class folders")
    keys, paths, texts = [], [], []
    for ci, folder in enumerate(folders):
        cname = names[ci] if names else folder.name.replace("_", " ")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower().lstrip(".") in IMAGE_EXTS:
                keys.append(f"{folder.name}/{p.name}")
                paths.append(p)
                texts.append(template.format(c=cname))
    return MapSource(str(root), keys, paths, texts, **limits)


def open_images(root: str | Path, **limits) -> MapSource:
    """Every image file under DIR (recursively), keyed by its path relative to DIR; the text is that key.

    For stores of images alone (CLIP-TD's cached teacher reads only the image half): a task's images are
    embedded once and every fine-tune cell reads them back by the same relative path.
    """
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower().lstrip(".") in IMAGE_EXTS) \
        if root.is_dir() else []
    if not paths:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTS))}) under this folder")
    keys = [p.relative_to(root).as_posix() for p in paths]
    return MapSource(str(root), keys, paths, list(keys), **limits)


def expand_shards(pattern: str) -> list[Path]:
    from braceexpand import UnbalancedBracesError, braceexpand

    try:
        paths = [Path(p) for p in braceexpand(pattern)]
    except UnbalancedBracesError:
        raise DataError(f"unbalanced braces in the shard pattern {pattern!r}: write ranges as "
                        "shards/{00000..00009}.tar") from None
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{len(missing)} of {len(paths)} shards not found, e.g. {missing[0]}")
    seen: dict[Path, Path] = {}
    for p in paths:
        if (real := p.resolve()) in seen:
            raise DataError(f"the shard pattern {pattern!r} lists {p} more than once: its samples would be "
                            "read twice under the same keys")
        seen[real] = p
    return paths


SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def shard_names(paths: list[Path]) -> dict[Path, str]:
    """The key prefix of each shard: its file name without the tar suffix, or its path below the shards'
    common folder where two shards share a name (a/00000.tar, b/00000.tar), so keys never collide."""
    def strip(name: str) -> str:
        return next((name[: -len(x)] for x in SHARD_SUFFIXES if name.endswith(x)), name)

    names = {p: strip(p.name) for p in paths}
    if len(set(names.values())) == len(names):
        return names
    parts = [p.resolve().parts for p in paths]
    common = 0
    while all(len(q) > common + 1 and q[common] == parts[0][common] for q in parts):
        common += 1
    names = {p: strip("/".join(q[common:])) for p, q in zip(paths, parts, strict=True)}
    if len(set(names.values())) < len(names):
        dup = next(n for n, c in Counter(names.values()).items() if c > 1)
        raise DataError(f"two shards give the same sample-key prefix {dup!r} (e.g. x.tar and x.tgz): rename one")
    return names


def unsafe_member(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts


def member_key(name: str) -> tuple[str, str] | None:
    """(key, extension) as webdataset splits a member name: the key runs to the first dot of the *file name*
    (`a.b/0001.seg.png` -> (`a.b/0001`, `seg.png`)); a name without one is no part of a sample."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _has_end_marker(tar: tarfile.TarFile) -> bool:
    """A complete tar ends with zero blocks; tarfile stops quietly at EOF on a file cut at a header."""
    tar.fileobj.seek(tar.offset)
    block = tar.fileobj.read(512)
    return len(block) == 512 and not block.strip(b"\0")


SIZES_FILE, LEN_FILE = "sizes.json", "__len__"  # what open_clip_train's get_dataset_size reads beside the shards
# the fewest bytes one sample takes in an uncompressed tar: two members (image, caption), each a 512-byte header
# and at least one 512-byte data block
MIN_SAMPLE_BYTES = 2048


@dataclass(frozen=True)
class ShardSizes:
    """How many samples a tar-shard source holds, and what said so (`origin`): `data.num_samples`, `sizes.json`,
    `__len__`, or `header scan`. `per_shard`: each shard's count where it is known (sizes.json, the scan);
    `keys`: each shard's sample keys in reading order (the scan alone)."""

    total: int
    origin: str
    per_shard: dict[Path, int] | None = None
    keys: dict[Path, list[str]] | None = None


def _declared_sizes(shards: list[Path]) -> ShardSizes | None:
    """The count open_clip_train (3.3.0, `data.get_dataset_size`) reads from the first shard's folder:
    `sizes.json` ({shard file name: count}, summed over the shards given), else `__len__` (one Python literal,
    the folder's total, taken as it is); None when neither exists."""
    folder = shards[0].parent
    sizes_path, len_path = folder / SIZES_FILE, folder / LEN_FILE
    if sizes_path.is_file():
        try:
            sizes = json.loads(sizes_path.read_text())
        except OSError as e:
            raise DataError(f"{sizes_path}: cannot be read ({e.strerror or e})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{sizes_path}: not JSON ({e})") from None
        if not isinstance(sizes, dict):
            raise DataError(f"{sizes_path}: expected an object {{shard file name: sample count}}")
        per_shard = {}
        for shard in shards:
            if shard.name not in sizes:
                raise DataError(f"{sizes_path} has no count for {shard.name} (one entry per shard file name, as "
                                "open_clip reads it): add it, remove the file, or set data.num_samples")
            per_shard[shard] = _count(sizes[shard.name], f"{sizes_path}[{shard.name!r}]")
        return ShardSizes(sum(per_shard.values()), SIZES_FILE, per_shard)
    if len_path.is_file():
        try:
            value = ast.literal_eval(len_path.read_text().strip())  # a literal only, as open_clip reads it
        except OSError as e:
            raise DataError(f"{len_path}: cannot be read ({e.strerror or e})") from None
        except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError):
            raise DataError(f"{len_path}: expected one integer (the sample count), as open_clip reads it") from None
        return ShardSizes(_count(value, str(len_path)), LEN_FILE)
    return None


def _count(value, where: str) -> int:
    # open_clip applies int(): a count written as a string ("1000") or a whole float reads too
    try:
        n = int(value) if not isinstance(value, bool) and float(value) == int(value) else None
    except (TypeError, ValueError, OverflowError):
        n = None
    if n is None or n < 0:
        raise DataError(f"{where}: {value!r} is not a sample count")
    return n


class ShardSource:
    """webdataset-layout tar shards (`KEY.jpg` + `KEY.txt` members; .tar, or gzip/bz2/xz-compressed), read as
    a stream.

    Read with `tarfile` rather than webdataset's pipeline so each kind of bad member is counted, not raised:
    a truncated tar ends that shard (counted) and the next shard is read. Sample keys are `SHARD/KEY`; a key
    seen again in the same shard is a counted `duplicate_key` (the first is kept).
    """

    kind = "stream"

    def __init__(self, pattern: str, resampled: bool = False, seed: int = 0, *, max_pixels: int = MAX_PIXELS,
                 max_caption_chars: int = MAX_CAPTION_CHARS, num_samples: int | None = None):
        self.pattern, self.shards, self.resampled, self.seed = pattern, expand_shards(pattern), resampled, seed
        self.names = shard_names(self.shards)
        self.max_pixels, self.max_caption_chars = max_pixels, max_caption_chars
        self.num_samples = num_samples
        self.skips = SkipCounter()
        self.image_hook: ImageHook | None = None
        self._sizes: ShardSizes | None = None

    def with_image_hook(self, hook: ImageHook) -> ShardSource:
        """The same shards and skip counter, each decoded image passed through `hook(key, image)`."""
        view = copy.copy(self)
        view.image_hook = hook
        return view

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.shards:
            h.update(f"{p.name}\0{p.stat().st_size}\n".encode())
        return h.hexdigest()

    def shard_order(self, epoch: int = 0) -> Iterator[Path]:
        if not self.resampled:
            yield from self.shards
            return
        rng = random.Random(self.seed * 100003 + epoch)
        while True:  # infinite resampled stream (webdataset's `resampled=True` semantics)
            yield rng.choice(self.shards)

    def iter_shard(self, path: Path, counter: Counter) -> Iterator[Sample]:
        name = self.names.get(path) or shard_names([path])[path]
        seen: set[str] = set()
        for key, parts in self._groups(path, counter):
            yield from self._emit(name, key, parts, counter, seen)

    def _groups(self, path: Path, counter: Counter, read: bool = True) -> Iterator[tuple[str, dict]]:
        """One shard's members grouped by key as webdataset groups them: (key, {ext: data bytes}), or with
        `read=False` (ext: member size) from the headers alone; None for a link to a member the archive does
        not hold. A truncated shard counts `truncated_tar` and ends without the group in flight."""
        group_key, parts = None, {}
        try:
            size = path.stat().st_size
            with open(path, "rb") as f:
                compressed = f.read(6).startswith(_COMPRESSED)
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    if not (member.isfile() or member.islnk() or member.issym()):
                        continue
                    if unsafe_member(member.name):
                        counter["unsafe_path"] += 1
                        continue
                    split = member_key(member.name)
                    if split is None:
                        continue
                    key, ext = split
                    # a new key (or a repeated extension: another sample under the same key) proves the
                    # previous sample complete
                    if key != group_key or ext in parts:
                        if group_key is not None:
                            yield group_key, parts
                        group_key, parts = key, {}
                    if not compressed and member.offset_data + member.size > size:
                        raise EOFError("member runs past the end of the file")
                    if not read and member.isfile():
                        parts[ext] = member.size
                        continue
                    try:  # a link reads the archive's own earlier member, never the file system
                        data = tar.extractfile(member)
                    except KeyError:  # a link to a member the archive does not hold (before this one)
                        data = None
                    if data is None or read:
                        parts[ext] = data.read() if data is not None else None
                    else:  # a link whose target is there: its size, by seeking to its end without reading it
                        parts[ext] = data.seek(0, io.SEEK_END)
                if compressed:  # read to the stream's end: a cut or corrupt stream fails its own checks there
                    while tar.fileobj.read(1 << 16):
                        pass
                elif not _has_end_marker(tar):
                    raise EOFError("no end-of-archive marker")
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError):
            counter["truncated_tar"] += 1
            return  # the group in flight may be incomplete: dropped with the shard's tail
        if group_key is not None:
            yield group_key, parts

    def scan_shard(self, path: Path) -> list[str]:
        """The keys of the samples `iter_shard` pairs in this shard (a key with an image and a caption member,
        neither empty; a repeated key once), in reading order, from the tar headers alone: no member's data is
        read, no image decoded. On clean shards it is what a pass yields; an image or caption found bad only
        when decoded is counted here and dropped (a counted skip) there."""
        keys, seen = [], set()
        for key, parts in self._groups(path, Counter(), read=False):
            if key in seen:
                continue
            seen.add(key)
            if any(v is None for v in parts.values()):
                continue
            image = next((parts[e] for e in parts if e in IMAGE_EXTS), None)
            text = next((parts[e] for e in parts if e in TEXT_EXTS), None)
            if image and text:  # neither missing nor zero bytes
                keys.append(key)
        return keys

    def sizes(self, *, progress: bool = True) -> ShardSizes:
        """How many samples the shards hold: `num_samples` if given, else open_clip's `sizes.json` / `__len__`
        beside the shards, else a scan of the tar headers (with a progress line). Read once, then kept.
        A count of 0, or one the shards' bytes cannot hold, is an error."""
        if self._sizes is None:
            sizes = (ShardSizes(self.num_samples, "data.num_samples") if self.num_samples is not None
                     else _declared_sizes(self.shards))
            if sizes is None:
                sizes = self._scan(progress)
            self._check(sizes)
            self._sizes = sizes
        return self._sizes

    def _scan(self, progress: bool) -> ShardSizes:
        from clipdistill.progress import StageProgress

        keys: dict[Path, list[str]] = {}
        with StageProgress("count samples (tar headers)", len(self.shards), unit="shards", enabled=progress) as bar:
            for shard in self.shards:
                keys[shard] = self.scan_shard(shard)
                bar.advance(samples=len(keys[shard]))
        per_shard = {shard: len(k) for shard, k in keys.items()}
        return ShardSizes(sum(per_shard.values()), "header scan", per_shard, keys)

    def _check(self, sizes: ShardSizes) -> None:
        if sizes.total == 0:
            what = ("no member pairs an image with a caption" if sizes.origin == "header scan"
                    else f"{sizes.origin} gives 0 samples")
            raise DataError(f"{self.pattern}: {what}: nothing to train on")
        if sizes.origin == "header scan":
            return
        # an impossible count: more samples than the bytes of the uncompressed shards can hold
        plain = {}
        for shard in self.shards:
            with open(shard, "rb") as f:
                if f.read(6).startswith(_COMPRESSED):
                    return  # compressed bytes bound nothing
            plain[shard] = shard.stat().st_size
        where = sizes.per_shard or {None: sizes.total}
        for shard, n in where.items():
            room = (plain[shard] if shard is not None else sum(plain.values())) // MIN_SAMPLE_BYTES
            if n > room:
                what = shard.name if shard is not None else f"{len(self.shards)} shards"
                raise DataError(f"{sizes.origin} says {n} samples in {what}, but {room} at most fit in those "
                                f"bytes ({MIN_SAMPLE_BYTES} a sample at least): fix the count (data.num_samples, "
                                "or sizes.json / __len__ beside the shards)")

    def _emit(self, shard: str, key: str | None, parts: dict, counter: Counter, seen: set) -> Iterator[Sample]:
        if key is None:
            return
        if key in seen:
            counter["duplicate_key"] += 1
            return
        seen.add(key)
        if any(v is None for v in parts.values()):
            counter["broken_link"] += 1
            return
        img = next((parts[e] for e in parts if e in IMAGE_EXTS), None)
        txt = next((parts[e] for e in parts if e in TEXT_EXTS), None)
        if img is None:
            counter["missing_image"] += 1
            return
        if txt is None or not txt.strip():
            counter["missing_caption"] += 1
            return
        text, reason = decode_caption(txt)
        if text is not None:
            text, reason = clean_caption(text.strip(), self.max_caption_chars)
        if text is None:
            counter[reason] += 1
            return
        image, bad = decode_image(img, self.max_pixels)
        if image is None:
            counter[bad] += 1
            return
        if reason:
            counter[reason] += 1
        if self.image_hook is not None:
            image = self.image_hook(f"{shard}/{key}", image)
        yield Sample(f"{shard}/{key}", image, text)

    def __iter__(self) -> Iterator[Sample]:
        for shard in self.shard_order():
            yield from self.iter_shard(shard, self.skips)


def open_source(spec: str, *, image_col: str = "image", caption_col: str = "caption", key_col: str = "key",
                separator: str = "auto", max_pixels: int = MAX_PIXELS, max_caption_chars: int = MAX_CAPTION_CHARS,
                resampled: bool = False, seed: int = 0, num_samples: int | None = None) -> MapSource | ShardSource:
    """`world:DIR` | `imagefolder:DIR` | `images:DIR` | `*.csv` / `*.tsv` / `*.jsonl` |
    tar shards (.tar / .tar.gz / .tgz, brace patterns allowed). Keyword arguments: `SourceOptions`;
    `num_samples`: a tar-shard stream's sample count (`TrainSourceOptions`), refused for any other source."""
    limits = dict(max_pixels=max_pixels, max_caption_chars=max_caption_chars)
    is_stream = ".tar" in spec or spec.endswith(".tgz") or ".tgz}" in spec
    by_row = spec.startswith(("world:", "imagefolder:", "images:")) or spec.endswith((".csv", ".tsv", ".tab", ".jsonl"))
    if num_samples is not None and (by_row or not is_stream):
        raise DataError(f"data.num_samples={num_samples} counts the samples of tar shards; {spec} knows its own "
                        "length: drop data.num_samples")
    if spec.startswith("world:"):
        root = Path(spec[len("world:"):])
        if not (root / "pairs.csv").is_file():
            raise DataError(f"{root} is not a clipdistill world (no pairs.csv); build one with `clipdistill world`")
        return open_table(root / "pairs.csv", **limits)
    if spec.startswith("imagefolder:"):
        return open_imagefolder(spec[len("imagefolder:"):], **limits)
    if spec.startswith("images:"):
        return open_images(spec[len("images:"):], **limits)
    if spec.endswith((".csv", ".tsv", ".tab", ".jsonl")):
        return open_table(spec, image_col, caption_col, key_col, separator=separator, **limits)
    if is_stream:
        return ShardSource(spec, resampled=resampled, seed=seed, num_samples=num_samples, **limits)
    raise DataError(f"cannot tell what kind of source {spec!r} is: use world:DIR, imagefolder:DIR, images:DIR, "
                    "a .csv/.tsv/.jsonl file, or .tar shards such as shards/{00000..00009}.tar")


def _absolute(path: str) -> str:
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def canonical_source_spec(spec: str) -> str:
    """`spec` with its local paths absolute, so that two spellings of one source (`pairs.csv`, `./pairs.csv` and
    `/abs/pairs.csv`; `world:w` and `world:/abs/w/`) compare equal where a plan recorded it as spelt. A shard
    pattern becomes the absolute paths of the shards it names, in order. What does not exist is kept as written
    (opening it reports the error)."""
    kind, colon, rest = spec.partition(":")
    if colon and kind in ("world", "imagefolder", "images"):
        return f"{kind}:{_absolute(rest)}"
    if spec.endswith((".csv", ".tsv", ".tab", ".jsonl")):  # the order in which open_source tells kinds apart
        return _absolute(spec)
    if ".tar" in spec or spec.endswith(".tgz") or ".tgz}" in spec:
        try:
            return "\n".join(str(p.resolve()) for p in expand_shards(spec))
        except DataError:
            return spec
    return spec


def same_source_spec(a: str, b: str) -> bool:
    return canonical_source_spec(a) == canonical_source_spec(b)
