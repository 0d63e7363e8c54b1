"""Models by their public names, read offline from Hugging Face cache folders laid out by hand.

The layouts are what huggingface_hub writes (`models--ORG--NAME/{refs/main, blobs/SHA, snapshots/REV/FILE ->
../../blobs/SHA}`) with open_clip 3.3.0's file names; the models are tiny random ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from clipdistill.errors import UnsafeCheckpointError, UserError
from clipdistill.zoo import load_model
from test_zoo import write_hf_clip_folder

ARCH = "cd-student-xs-32"
REV = "a" * 40


def hub_file(cache: Path, repo_id: str, filename: str, source: Path) -> Path:
    """Put `source` into `cache` the way huggingface_hub does: a blob named by its hash, linked from the
    snapshot of the revision `refs/main` points at."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    data = source.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / REV / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    return link


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty HF cache that every lookup uses, offline."""
    root = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(root))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root / "hub"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(3)
    return load_model(f"open_clip:{ARCH}")


def inputs(m):
    torch.manual_seed(1)
    return torch.randn(2, 3, m.image_size, m.image_size), m.tokenizer(["a red square", "two dogs"])


def same_embeddings(a, b) -> bool:
    images, ids = inputs(a)
    with torch.no_grad():
        return torch.equal(a.encode_image(images), b.encode_image(images)) and torch.equal(
            a.encode_text(ids), b.encode_text(ids))


@pytest.fixture
def tag(monkeypatch):
    """A pretrained tag of our tiny arch in open_clip's own registry, laid out like open_clip's entries
    (`hf_hub="ORG/NAME/"`: default file open_clip_pytorch_model.bin, its .safetensors twin preferred)."""
    from open_clip import pretrained

    cfg = dict(url="", hf_hub="tiny-org/tiny-clip/", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
               interpolation="bicubic", resize_mode="shortest")
    monkeypatch.setitem(pretrained._PRETRAINED, ARCH, {"tiny_tag": cfg})
    return "tiny-org/tiny-clip"


@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_open_clip_tag_loads_from_cache(tiny, cache, tag, tmp_path, filename):
    src = tmp_path / filename
    state = {k: v.contiguous() for k, v in tiny.inner.state_dict().items()}
    save_file(state, str(src)) if filename.endswith(".safetensors") else torch.save(state, src)
    hub_file(cache, tag, filename, src)
    m = load_model(f"open_clip:{ARCH}@tiny_tag")
    assert same_embeddings(tiny, m) and m.weights_hash() == tiny.weights_hash()
    assert m.image_mean == (0.5, 0.5, 0.5) and m.image_std == (0.25, 0.25, 0.25)  # the tag's preprocessing
    assert m.load_warnings == []


def test_tag_bin_with_pickled_code_never_runs(tiny, cache, tag, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.bin"
    torch.save({"visual.proj": torch.zeros(1), "x": Evil()}, src)
    hub_file(cache, tag, "open_clip_pytorch_model.bin", src)
    with pytest.raises(UnsafeCheckpointError, match="Nothing from it was executed"):
        load_model(f"open_clip:{ARCH}@tiny_tag")
    assert not marker.exists()


def test_quickgelu_mismatch_is_warned_and_recorded(tiny, cache, tag, tmp_path):
    from open_clip import pretrained

    pretrained._PRETRAINED[ARCH]["tiny_tag"]["quick_gelu"] = True  # as open_clip marks its `openai` tags
    src = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.inner.state_dict().items()}, str(src))
    hub_file(cache, tag, "open_clip_model.safetensors", src)
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        m = load_model(f"open_clip:{ARCH}@tiny_tag")
    assert "was trained with quick_gelu=True" in m.describe()["load_warnings"][0]


def test_real_tag_not_cached_names_folder_and_command(cache):
    """open_clip's registry resolves the public name; offline and not cached: one error saying what to do."""
    with pytest.raises(UserError) as e:
        load_model("open_clip:ViT-B-32@laion2b_s34b_b79k")
    msg = str(e.value)
    assert str(cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K") in msg
    assert "clipdistill models download open_clip:ViT-B-32@laion2b_s34b_b79k" in msg and "\n" not in msg
    with pytest.raises(UserError, match="Did you mean: laion2b_s34b_b79k"):
        load_model("open_clip:ViT-B-32@laion2b_s34b_b97k")


def test_open_clip_hf_hub_repo_matches_open_clip(tiny, cache, tmp_path, monkeypatch):
    repo = "tiny-org/tiny-openclip"
    src = tmp_path / "src"
    src.mkdir()
    save_file({k: v.contiguous() for k, v in tiny.inner.state_dict().items()}, str(src / "w.safetensors"))
    pp = {"mean": [0.4, 0.4, 0.4], "std": [0.3, 0.3, 0.3], "interpolation": "bicubic", "resize_mode": "shortest"}
    (src / "c.json").write_text(json.dumps({"model_cfg": tiny.arch_config, "preprocess_cfg": pp}))
    hub_file(cache, repo, "open_clip_model.safetensors", src / "w.safetensors")
    hub_file(cache, repo, "open_clip_config.json", src / "c.json")
    ours = load_model(f"open_clip:hf-hub:{repo}")
    assert same_embeddings(tiny, ours) and ours.image_mean == (0.4, 0.4, 0.4)
    # open_clip itself reads the same cache folder to the same model
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ref = open_clip.create_model(f"hf-hub:{repo}", cache_dir=str(cache)).eval()
    images, ids = inputs(tiny)
    with torch.no_grad():
        assert torch.equal(ref.encode_image(images), ours.encode_image(images))
        assert torch.equal(ref.encode_text(ids), ours.encode_text(ids))


def test_hf_repo_from_cache_and_local_folder_wins(cache, tmp_path, monkeypatch):
    folder = write_hf_clip_folder(tmp_path / "made")
    repo = "tiny-org/tiny-hf"
    for f in folder.iterdir():
        hub_file(cache, repo, f.name, f)
    local = load_model(f"hf:{folder}")
    cached = load_model(f"hf:{repo}")
    pixels, ids = torch.randn(2, 3, 32, 32), local.tokenizer(["a cat", "two dogs"])
    with torch.no_grad():
        assert torch.equal(local.encode_image(pixels), cached.encode_image(pixels))
        assert torch.equal(local.encode_text(ids), cached.encode_text(ids))
    # a relative folder spelt like a repo id is read as the folder, not looked up in the cache
    monkeypatch.chdir(tmp_path)
    shutil.copytree(write_hf_clip_folder(tmp_path / "other", seed=5), tmp_path / "tiny-org" / "tiny-hf")
    mine = load_model(f"hf:{repo}")
    with torch.no_grad():
        assert not torch.equal(mine.encode_image(pixels), cached.encode_image(pixels))



def test_quickgelu_warning_reaches_the_embed_manifest(tiny, cache, tag, tmp_path):
    """A teacher whose tag disagrees with its architecture on QuickGELU: `embed` still runs (as open_clip
    does) and its manifest.json says so."""
    from open_clip import pretrained
    from PIL import Image

    from clipdistill.cli import main

    pretrained._PRETRAINED[ARCH]["tiny_tag"]["quick_gelu"] = True
    src = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny.inner.state_dict().items()}, str(src))
    hub_file(cache, tag, "open_clip_model.safetensors", src)
    rows = ["key,image,caption"]
    for i, color in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)]):
        Image.new("RGB", (40, 40), color).save(tmp_path / f"{i}.png")
        rows.append(f"k{i},{tmp_path / f'{i}.png'},a square")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    argv = ["clipdistill", "embed", "--teacher", f"open_clip:{ARCH}@tiny_tag", "--data", str(tmp_path / "pairs.csv"),
            "--out", str(tmp_path / "feats")]
    with pytest.warns(UserWarning, match="QuickGELU mismatch"), pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", argv)
        try:
            main()
        except SystemExit as e:
            assert e.code in (0, None)
    manifest = json.loads((tmp_path / "feats" / "manifest.json").read_text())
    assert "QuickGELU mismatch" in manifest["teacher_load_warnings"][0]


def test_models_download_online_prefers_safetensors_then_loads_offline(tiny, cache, tag, tmp_path, monkeypatch):
    """`models download` with the Hub reachable (simulated: hf_hub_download replaced by a cache writer) takes
    open_clip's preferred file, falls back to the .bin name when the repo has no safetensors twin, and the
    model then loads offline from what it cached."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    from clipdistill.zoo import download_model

    src = tmp_path / "w.bin"
    torch.save({k: v.contiguous() for k, v in tiny.inner.state_dict().items()}, src)
    asked = []

    def fake_download(repo_id, filename, cache_dir=None, **kw):
        asked.append(filename)
        if filename != "open_clip_pytorch_model.bin":  # this repo only has the pickle-format file
            raise EntryNotFoundError(f"{repo_id} has no {filename}")
        return str(hub_file(Path(cache_dir), repo_id, filename, src))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")  # huggingface_hub honours either
    paths = download_model(f"open_clip:{ARCH}@tiny_tag")
    assert asked == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert paths[0].name == "open_clip_pytorch_model.bin" and str(cache) in str(paths[0])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_embeddings(tiny, load_model(f"open_clip:{ARCH}@tiny_tag"))


def test_canonical_spec_makes_local_paths_absolute_and_keeps_names(tmp_path, monkeypatch):
    from clipdistill.zoo.spec import canonical_spec, same_model_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "t").mkdir(parents=True)
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "arch.json").write_text("{}")
    assert canonical_spec("run:runs/t") == f"run:{tmp_path / 'runs' / 't'}"
    assert same_model_spec("run:./runs/t/", f"run:{tmp_path}/runs/t")
    got = canonical_spec("open_clip:arch.json@w.safetensors")
    assert got == f"open_clip:{tmp_path}/arch.json@{tmp_path}/w.safetensors"
    for named in ("open_clip:ViT-B-32@laion2b_s34b_b79k", "open_clip:hf-hub:timm/ViT-B-16-SigLIP",
                  "hf:openai/clip-vit-base-patch32", "open_clip:ViT-B-32", "not a spec"):
        assert canonical_spec(named) == named
    assert not same_model_spec("run:runs/t", "run:runs/other")
