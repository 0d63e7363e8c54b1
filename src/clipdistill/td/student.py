"""VL task student: a ViLT-style single-stream transformer over [CLS] + image patch tokens + text tokens.

Blocks mirror open_clip's `ResidualAttentionBlock` parameter names (ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj),
so a student can start from the towers of any open_clip-format CLIP (`open_clip:ARCH[@CKPT]`, `run:DIR`
from `distill`): patch embedding, position embeddings and blocks from the vision tower, token embedding
from the text tower, wherever the shapes agree (what was inherited is returned, the rest stays random).
The text side uses the CLIP BPE tokenizer (open_clip's default), so its token positions align with an
open_clip teacher's per-token features.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from pydantic import field_validator, model_validator
from torch import nn
from torchvision import transforms as T

from clipdistill.config import StrictModel
from clipdistill.errors import UserError
from clipdistill.td.contracts import StudentOutput


class VLStudentConfig(StrictModel):
    """A VL task student (finetune / protocol `student:`); `init` is a SPEC whose towers seed it. Not the
    distill student (`distill.config.StudentConfig`, a CLIP whose `init` is scratch / inherit)."""

    # "clipdistill": our ViLT-like student shaped by the fields below; "hf:DIR": a local transformers ViLT folder
    # (td/hf_student.py), whose own config sets image / patch size, width, depth and tokenizer (only
    # context_length applies, capped at its max_position_embeddings)
    model: str = "clipdistill"
    image_size: int = 32
    patch_size: int = 4
    width: int = 64
    layers: int = 2
    heads: int = 2
    mlp_ratio: float = 4.0
    context_length: int = 32
    vocab_size: int = 49408
    init: str = "scratch"  # "scratch" or a model SPEC whose towers seed the student (open_clip / run:)

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model != "clipdistill" and not model.startswith("hf:"):
            raise ValueError(f"student model {model!r}: use 'clipdistill' (our ViLT-like student) or hf:DIR "
                             "(a local transformers ViLT folder)")
        return model

    @model_validator(mode="after")
    def _init_is_for_our_student(self) -> VLStudentConfig:
        if self.model != "clipdistill" and self.init != "scratch":
            raise ValueError(f"student.init seeds our own student from a CLIP; {self.model} brings its own weights")
        return self


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, hidden), gelu=nn.GELU(),
                                             c_proj=nn.Linear(hidden, width)))

    def forward(self, x: torch.Tensor, pad: torch.Tensor, need_weights: bool = False):
        h = self.ln_1(x)
        out, attn = self.attn(h, h, h, key_padding_mask=pad, need_weights=need_weights, average_attn_weights=True)
        x = x + out
        return x + self.mlp(self.ln_2(x)), attn


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def student_transform(image_size: int) -> T.Compose:
    return T.Compose([T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(image_size),
                      T.ToTensor(), T.Normalize(CLIP_MEAN, CLIP_STD)])


class VLStudent(nn.Module):
    """forward(images [B,3,H,W], ids [B,L]) -> `StudentOutput` (td/contracts.py; `cls_attention` only when asked).

    The student interface (shared with td.hf_student.HFViltStudent): `tokenize(texts)`, `image_transform()`,
    `token_spans` (None here: the CLIP BPE tokenizer's positions are the teacher's own), `width`, `grid`,
    `describe()`."""

    family = "clipdistill"
    token_spans = None

    def __init__(self, cfg: VLStudentConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise UserError(f"student image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        if cfg.width % cfg.heads:
            raise UserError(f"student width {cfg.width} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size
        w = cfg.width
        self.conv1 = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=False)
        self.image_pos = nn.Parameter(torch.randn(self.grid * self.grid, w) * 0.02)
        self.token_embedding = nn.Embedding(cfg.vocab_size, w)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.text_pos = nn.Parameter(torch.randn(cfg.context_length, w) * 0.01)
        self.type_embedding = nn.Parameter(torch.zeros(2, w))  # 0: image, 1: text (ViLT modality types)
        self.cls = nn.Parameter(torch.randn(w) * 0.02)
        self.blocks = nn.ModuleList(Block(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.ln_post = nn.LayerNorm(w)

    @property
    def width(self) -> int:
        return self.cfg.width

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        import open_clip

        from clipdistill.zoo.base import cap_texts  # a million-letter word would hang open_clip's BPE

        n = self.cfg.context_length
        return open_clip.tokenize(cap_texts(list(texts), n), context_length=n)

    def image_transform(self) -> T.Compose:
        return student_transform(self.cfg.image_size)

    def describe(self) -> dict:
        return {"family": self.family, **self.cfg.model_dump()}

    def forward(self, images: torch.Tensor, ids: torch.Tensor, need_attention: bool = False) -> StudentOutput:
        b = images.shape[0]
        ids = ids[:, : self.cfg.context_length]
        text_mask = ids != 0  # open_clip pads with 0; SOT/EOT/words are non-zero
        img = self.conv1(images).flatten(2).transpose(1, 2) + self.image_pos + self.type_embedding[0]
        txt = self.token_embedding(ids) + self.text_pos[: ids.shape[1]] + self.type_embedding[1]
        x = torch.cat([self.cls.expand(b, 1, -1), img, txt], dim=1)
        n = img.shape[1]
        pad = torch.cat([torch.zeros(b, 1 + n, dtype=torch.bool, device=ids.device), ~text_mask], dim=1)
        attn = None
        for i, block in enumerate(self.blocks):
            x, attn = block(x, pad, need_weights=need_attention and i == len(self.blocks) - 1)
        x = self.ln_post(x)
        return StudentOutput(cls=x[:, 0], image_tokens=x[:, 1 : 1 + n], text_tokens=x[:, 1 + n :], text_mask=text_mask,
                             cls_attention=attn[:, 0, 1:].detach() if need_attention else None)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _copy(dst: torch.Tensor, src: torch.Tensor) -> bool:
    if dst.shape != src.shape:
        return False
    with torch.no_grad():
        dst.copy_(src)
    return True


def _resize_grid(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """[n*n, d] patch position embeddings bilinearly resized to [grid*grid, d]."""
    n = int(round(pos.shape[0] ** 0.5))
    g = pos.reshape(1, n, n, -1).permute(0, 3, 1, 2)
    return F.interpolate(g, size=(grid, grid), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).reshape(
        grid * grid, -1)


def init_from_clip(student: VLStudent, clip_inner: nn.Module) -> dict[str, list[str]]:
    """Copy what fits from an open_clip CLIP (`ClipModel.inner`); returns {"inherited": [...], "skipped": [...]}."""
    visual = getattr(clip_inner, "visual", None)
    if visual is None or not hasattr(visual, "conv1") or not hasattr(clip_inner, "token_embedding"):
        raise UserError("student init needs an open_clip-format ViT CLIP (open_clip:ARCH[@CKPT] or run:DIR); "
                        "this model has no ViT towers to copy")
    done, skipped = [], []

    def record(name: str, ok: bool) -> None:
        (done if ok else skipped).append(name)

    record("conv1", _copy(student.conv1.weight, visual.conv1.weight))
    pos = visual.positional_embedding[1:]  # drop the CLIP class position
    if pos.shape[-1] == student.width:
        record("image_pos", _copy(student.image_pos, _resize_grid(pos.detach(), student.grid)))
    else:
        record("image_pos", False)
    record("cls", _copy(student.cls, visual.class_embedding + visual.positional_embedding[0]))
    record("token_embedding", _copy(student.token_embedding.weight, clip_inner.token_embedding.weight))
    text_pos = clip_inner.positional_embedding[: student.cfg.context_length]
    record("text_pos", _copy(student.text_pos[: text_pos.shape[0]], text_pos))
    resblocks = visual.transformer.resblocks
    for i, block in enumerate(student.blocks):
        if i >= len(resblocks):
            record(f"blocks.{i}", False)
            continue
        try:
            block.load_state_dict(resblocks[i].state_dict(), strict=True)
            record(f"blocks.{i}", True)
        except RuntimeError:  # shape mismatch: widths differ
            record(f"blocks.{i}", False)
    pairs = zip(student.ln_post.parameters(), visual.ln_post.parameters(), strict=True)
    record("ln_post", all(_copy(a, b) for a, b in pairs))
    return {"inherited": done, "skipped": skipped}


def check_student(cfg: VLStudentConfig) -> None:
    """Refuse an hf: student folder that cannot load, before anything runs (UserError)."""
    if cfg.model.startswith("hf:"):
        from clipdistill.td.hf_student import check_folder

        check_folder(cfg.model)


def build_student(cfg: VLStudentConfig) -> tuple[nn.Module, dict]:
    """A student from scratch, or shaped like (and seeded from) the CLIP named by `cfg.init`.

    When seeded, image size, patch size, width, heads and layers come from the CLIP's vision tower
    (so every block is inherited); context_length is capped at the CLIP's.
    """
    if cfg.model.startswith("hf:"):
        from clipdistill.td.hf_student import HFViltStudent

        student = HFViltStudent(cfg.model, cfg.context_length)
        return student, {"init": cfg.model, **student.describe()}
    if cfg.init == "scratch":
        return VLStudent(cfg), {"init": "scratch"}
    from clipdistill.zoo import load_model

    clip = load_model(cfg.init)
    visual = getattr(clip.inner, "visual", None)
    if visual is None or not hasattr(visual, "conv1"):
        raise UserError(f"student init {cfg.init!r}: only open_clip-format ViT CLIPs can seed the student")
    blocks = visual.transformer.resblocks
    shaped = cfg.model_copy(update={
        "image_size": clip.image_size,
        "patch_size": visual.conv1.kernel_size[0],
        "width": visual.conv1.out_channels,
        "heads": blocks[0].attn.num_heads,
        "layers": len(blocks),
        "mlp_ratio": blocks[0].mlp.c_fc.out_features / visual.conv1.out_channels,
        "context_length": min(cfg.context_length, clip.context_length),
        "vocab_size": clip.inner.token_embedding.num_embeddings,
    })
    student = VLStudent(shaped)
    info = init_from_clip(student, clip.inner)
    return student, {"init": cfg.init, "weights_sha256": clip.weights_hash(), **info}
