"""Public model names: open_clip pretrained tags and Hugging Face repos, read from the Hugging Face cache.

`open_clip:ARCH@TAG` follows open_clip 3.3.0's `pretrained.download_pretrained`: the tag's `hf_hub` entry is
`ORG/NAME/` (file `open_clip_pytorch_model.bin`) or `ORG/NAME/FILE`, and a `.safetensors` twin of a `.bin` /
`.pth` file is preferred when the repo has one. `open_clip:hf-hub:ORG/NAME` is open_clip's `hf-hub:` schema
(`open_clip_config.json` + weights); `hf:ORG/NAME` is a transformers `CLIPModel` repo. Files are looked up in
the cache huggingface_hub uses (`HF_HUB_CACHE`, else `HF_HOME/hub`, read when called so tests and users can
point it elsewhere); with `HF_HUB_OFFLINE=1` nothing is downloaded and a missing file is one error that names
the folder to fill and the `clipdistill models download SPEC` command that fills it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from clipdistill.errors import UserError

# open_clip's constants (HF_WEIGHTS_NAME, HF_SAFE_WEIGHTS_NAME, HF_CONFIG_NAME)
OPEN_CLIP_BIN, OPEN_CLIP_SAFE, OPEN_CLIP_CONFIG = (
    "open_clip_pytorch_model.bin", "open_clip_model.safetensors", "open_clip_config.json")
# what a transformers CLIPModel / SiglipModel repo may hold (spiece.model: SigLIP's sentencepiece vocabulary);
# .bin files are only ever read with weights_only=True
HF_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
            "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin", "tokenizer.json",
            "tokenizer_config.json", "vocab.json", "merges.txt", "spiece.model",
            "special_tokens_map.json", "preprocessor_config.json")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_cache_dir() -> Path:
    """The folder huggingface_hub caches repos in, resolved from the environment now (its constants are
    read once at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def offline_var() -> str | None:
    """The variable that puts huggingface_hub offline (it reads both), or None."""
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return v
    return None


def offline() -> bool:
    return offline_var() is not None


def repo_folder(repo_id: str) -> Path:
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


@dataclass(frozen=True)
class HubSource:
    """Where a named model's files live on the Hub: one repo and the files to read, in order of preference."""

    spec: str
    repo_id: str
    weights: tuple[str, ...] = ()  # the first one the repo has is used
    extra: tuple[str, ...] = field(default=())  # also needed (configs)

    def not_cached(self, missing: str, cause: str = "") -> UserError:
        why = f"{offline_var()} is set" if offline() else "it could not be downloaded"
        because = f" ({cause})" if cause else ""
        return UserError(
            f"{self.spec}: {missing} of {self.repo_id} is not in the Hugging Face cache and {why}{because}. "
            f"Fill {repo_folder(self.repo_id)} by running `clipdistill models download {self.spec}` on a "
            "connected machine with the same HF_HOME/HF_HUB_CACHE, then copy that folder here")


def _cached(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(hit) if isinstance(hit, str) else None


def _download(src: HubSource, filename: str) -> Path | None:
    """Download one file into the cache; None if the repo has no such file (another candidate may exist)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RemoteEntryNotFoundError

    try:
        return Path(hf_hub_download(src.repo_id, filename, cache_dir=str(hub_cache_dir())))
    except (EntryNotFoundError, RemoteEntryNotFoundError):
        return None
    except Exception as e:  # network, auth, missing repo: one clear message, not a traceback
        raise src.not_cached(filename, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def fetch_file(src: HubSource, filename: str, download: bool) -> Path | None:
    hit = _cached(src.repo_id, filename)
    if hit is None and download and not offline():
        hit = _download(src, filename)
    return hit


def resolve(src: HubSource, download: bool = True) -> tuple[Path, dict[str, Path]]:
    """(weights file, {extra name: path}) from the cache, downloading when allowed and online."""
    extras = {}
    for name in src.extra:
        path = fetch_file(src, name, download)
        if path is None:
            raise src.not_cached(name)
        extras[name] = path
    for name in src.weights:
        path = fetch_file(src, name, download)
        if path is not None:
            return path, extras
    raise src.not_cached(" / ".join(src.weights))


def open_clip_tag_source(spec: str, arch: str, tag: str) -> tuple[HubSource, dict]:
    """The Hub source of an open_clip pretrained tag and its pretrained cfg (mean/std, quick_gelu, ...)."""
    from open_clip.pretrained import _get_safe_alternatives, get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(arch, tag)
    if not cfg:
        import difflib

        tags = list_pretrained_tags_by_model(arch)
        close = difflib.get_close_matches(tag, tags, n=3)
        known = f" Did you mean: {', '.join(close)}?" if close else (
            f" Known tags: {', '.join(tags)}." if tags else f" open_clip has no pretrained weights for {arch}.")
        raise UserError(f"{spec}: {tag!r} is neither a checkpoint file nor an open_clip pretrained tag of "
                        f"{arch}.{known}")
    hf_hub = cfg.get("hf_hub", "")
    if not hf_hub:  # open_clip 3.3.0 has an hf_hub entry for every tag; an url-only one is not read here
        raise UserError(f"{spec}: open_clip only has a URL for this tag ({cfg.get('url')}); download it and "
                        f"pass the file as open_clip:{arch}@PATH")
    repo_id, filename = os.path.split(hf_hub)
    filename = filename or OPEN_CLIP_BIN
    names = (*_get_safe_alternatives(filename), filename)
    return HubSource(spec, repo_id, weights=names), cfg


def open_clip_hub_source(spec: str, repo_id: str) -> HubSource:
    """open_clip's `hf-hub:ORG/NAME`: `open_clip_config.json` + the default weights (safetensors preferred)."""
    _check_repo_id(spec, repo_id)
    return HubSource(spec, repo_id, weights=(OPEN_CLIP_SAFE, OPEN_CLIP_BIN), extra=(OPEN_CLIP_CONFIG,))


def _check_repo_id(spec: str, repo_id: str) -> None:
    if not REPO_ID.match(repo_id):
        raise UserError(f"{spec}: {repo_id!r} is not a Hugging Face repo id (ORG/NAME) nor an existing folder")


def hf_snapshot(spec: str, repo_id: str, download: bool = True) -> Path:
    """The cached snapshot folder of a transformers repo (`hf:ORG/NAME`), downloading it when allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    _check_repo_id(spec, repo_id)
    src = HubSource(spec, repo_id)
    local_only = offline() or not download
    patterns = list(HF_FILES)
    try:
        if not local_only:  # most repos hold both formats: fetch the safetensors weights alone when present
            from huggingface_hub import list_repo_files

            if any(f.startswith("model") and f.endswith(".safetensors") for f in list_repo_files(repo_id)):
                patterns = [p for p in patterns if "pytorch_model" not in p]
        folder = snapshot_download(repo_id, cache_dir=str(hub_cache_dir()), local_files_only=local_only,
                                   allow_patterns=patterns)
    except LocalEntryNotFoundError:
        raise src.not_cached("the snapshot") from None
    except Exception as e:
        raise src.not_cached("the snapshot", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") \
            from None
    if not (Path(folder) / "config.json").is_file():
        raise src.not_cached("config.json")
    return Path(folder)
