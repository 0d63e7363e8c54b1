"""The model SPEC grammar shared by every command.

    open_clip:ARCH                  random init (ARCH: open_clip name, one of ours, or a JSON config path)
    open_clip:ARCH@CHECKPOINT       + weights (open_clip checkpoint, bare state dict, .safetensors,
                                    or a run's checkpoints/step_N/model.safetensors)
    hf:DIR                          a local Hugging Face CLIPModel folder
    run:DIR                         a student trained by clipdistill
"""

from __future__ import annotations

from dataclasses import dataclass

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
            f"bad model SPEC {spec!r}: expected one of open_clip:ARCH, open_clip:ARCH@CHECKPOINT, hf:DIR, run:DIR"
        )
    if kind == "open_clip":
        arch, _, ckpt = rest.partition("@")
        if not arch:
            raise UserError(f"bad model SPEC {spec!r}: missing architecture before '@'")
        return ModelSpec(kind, arch, ckpt or None)
    if "@" in rest:
        raise UserError(f"bad model SPEC {spec!r}: '@CHECKPOINT' only applies to open_clip:ARCH")
    return ModelSpec(kind, rest)
