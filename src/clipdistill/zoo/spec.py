"""The model SPEC grammar shared by every command.

    open_clip:ARCH                  random init (ARCH: open_clip name, one of ours, or a JSON config path)
    open_clip:ARCH@CHECKPOINT       + weights (open_clip checkpoint, bare state dict, .safetensors,
                                    or a run's checkpoints/step_N/model.safetensors)
    open_clip:ARCH@TAG              open_clip's pretrained weights by tag (open_clip:ViT-B-32@laion2b_s34b_b79k)
    open_clip:hf-hub:ORG/NAME       an open_clip repo on the Hugging Face Hub (open_clip_config.json + weights)
    hf:DIR | hf:ORG/NAME            a transformers CLIPModel: a local folder (an existing folder wins) or a repo
    run:DIR                         a student trained by clipdistill

Named weights (TAG, hf-hub:, ORG/NAME) come from the Hugging Face cache; `clipdistill models download SPEC`
fills it (see `hub.py`). An `@` after ARCH is a file when such a file exists or it looks like a path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipdistill.errors import UserError

KINDS = ("open_clip", "hf", "run")


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    target: str  # ARCH for open_clip, a directory for hf / run
    checkpoint: str | None = None

    def __str__(self) -> str:
        ckpt = f"@{self.checkpoint}" if self.checkpoint else ""
        return f"{self.kind}:{self.target}{ckpt}"


def parse_spec(spec: str) -> ModelSpec:
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise UserError(
            f"bad model SPEC {spec!r}: expected one of open_clip:ARCH, open_clip:ARCH@CHECKPOINT, "
            "open_clip:ARCH@TAG, open_clip:hf-hub:ORG/NAME, hf:DIR, hf:ORG/NAME, run:DIR"
        )
    if kind == "open_clip":
        arch, _, ckpt = rest.partition("@")
        if not arch:
            raise UserError(f"bad model SPEC {spec!r}: missing architecture before '@'")
        if arch.startswith("hf-hub:") and ckpt:
            raise UserError(f"bad model SPEC {spec!r}: an hf-hub: repo brings its own weights (no '@')")
        return ModelSpec(kind, arch, ckpt or None)
    if "@" in rest:
        raise UserError(f"bad model SPEC {spec!r}: '@CHECKPOINT' only applies to open_clip:ARCH")
    return ModelSpec(kind, rest)


def _absolute(path: str) -> str:
    """An existing local path, absolute; anything else (a tag, a Hub id, a name) as written."""
    p = Path(path).expanduser()
    return str(p.resolve()) if p.exists() else path


def canonical_spec(spec: str) -> str:
    """`spec` with its local paths absolute, so that two spellings of one local model (`run:runs/t`,
    `run:/home/me/runs/t`, `run:./runs/t/`) compare equal where manifests record the SPEC. Names, tags and Hub
    ids are kept as written; an unparsable SPEC is returned unchanged (loading it reports the error)."""
    try:
        s = parse_spec(spec)
    except UserError:
        return spec
    target = s.target
    if s.kind in ("run", "hf") or (s.kind == "open_clip" and target.endswith(".json")):
        target = _absolute(target)
    return str(ModelSpec(s.kind, target, _absolute(s.checkpoint) if s.checkpoint else None))


def same_model_spec(a: str, b: str) -> bool:
    return canonical_spec(a) == canonical_spec(b)
