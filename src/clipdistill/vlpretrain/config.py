"""`VLPretrainConfig`: what `clipdistill vlpretrain CONFIG.yaml` reads (preset: configs/vlpretrain.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from clipdistill.config import StrictModel
from clipdistill.data.attributes import checked_attributes
from clipdistill.data.sources import TrainSourceOptions
from clipdistill.train import TrainConfig
from clipdistill.world.text import world_attributes


class StudentArch(StrictModel):
    """The `transformers.ViltConfig` of the student: random init, or with `init` its transformer copied from a
    CLIP's ViT image tower (vit_init.py), which then fixes every key of `vit_init.TOWER_KEYS`."""

    init: str | None = Field(None, description="a model SPEC (e.g. run:runs/clip, open_clip:ARCH@FILE) whose "
                             "open_clip ViT image tower, built with vision_cfg.no_ln_pre: true, the ViLT's "
                             "transformer starts from (ViLT's own ViT initialisation); it fixes the "
                             "architecture (a key set here that disagrees is refused); none = random init")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int | None = Field(None, ge=1, description="none = 4 x hidden_size")
    image_size: int = Field(64, ge=8, description="images are resized to image_size x image_size")
    patch_size: int = Field(8, ge=1)
    max_text_len: int = Field(40, ge=4, description="text positions (ViLT: 40); longer captions are cut")
    dropout: float = Field(0.1, ge=0, lt=1)
    activation: Literal["gelu", "quick_gelu"] = Field("gelu", description="MLP activation (transformers hidden_act; "
                                                      "gelu is the erf GELU)")
    layer_norm_eps: float = Field(1e-12, gt=0, description="ViltConfig's default 1e-12; open_clip towers use 1e-5")

    @field_validator("init")
    @classmethod
    def _spec(cls, spec: str | None) -> str | None:
        if spec is not None:
            from clipdistill.errors import UserError
            from clipdistill.zoo.spec import parse_spec

            try:
                parse_spec(spec)
            except UserError as e:
                raise ValueError(str(e)) from None
        return spec

    @model_validator(mode="after")
    def _fits(self) -> StudentArch:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        return self


class TokenizerConfig(StrictModel):
    path: str | None = Field(None, description="an existing BERT WordPiece tokenizer folder (e.g. a local copy of "
                             "bert-base-uncased); none = build one from the training captions")
    vocab_size: int = Field(1000, ge=16, description="size of the vocabulary built from captions")
    build_captions: int = Field(50000, ge=1, description="captions read (in source order) to build the vocabulary")


class DataConfig(TrainSourceOptions):
    source: str = Field(..., description="image-caption SOURCE: world:DIR, CSV/JSONL, or webdataset shards")
    batch_size: int = Field(64, ge=2, description="per process (in-batch negatives need 2)")
    num_workers: int = Field(0, ge=0)


class ITMConfig(StrictModel):
    weight: float = Field(1.0, ge=0)
    negatives: Literal["swap", "in_batch", "random"] = Field(
        "swap", description="swap: the caption with one attribute phrase swapped for another of its type; "
        "in_batch: the batch caption sharing the most words; random: another batch caption")
    positive_share: float = Field(0.5, gt=0, lt=1)


class MLMConfig(StrictModel):
    weight: float = Field(1.0, ge=0)
    rate: float = Field(0.15, ge=0.15, le=0.25, description="share of words masked (whole words)")
    attribute_share: float = Field(0.0, ge=0, le=1, description="share of captions that also get one of their "
                                   "attribute words (`attributes`) masked, as the probes mask it (ours, after "
                                   "ERNIE-ViL's attribute prediction); 0 = ViLT's MLM alone")


class ITCConfig(StrictModel):
    weight: float = Field(0.0, ge=0, description="0 = off; image-text contrastive on unimodal passes")
    temperature: float = Field(0.07, gt=0)


class ObjectivesConfig(StrictModel):
    itm: ITMConfig = ITMConfig()
    mlm: MLMConfig = MLMConfig()
    itc: ITCConfig = ITCConfig()

    @model_validator(mode="after")
    def _something(self) -> ObjectivesConfig:
        if not (self.itm.weight or self.mlm.weight or self.itc.weight):
            raise ValueError("every objective weight is 0: nothing to train")
        return self


class ProbeConfig(StrictModel):
    source: str | None = Field(None, description="held-out pairs SOURCE; none = the last `samples` rows of a "
                               "map source (CSV/JSONL/world), left out of training")
    samples: int = Field(200, ge=2, description="held-out pairs probed")


class VLPretrainConfig(StrictModel):
    student: StudentArch = StudentArch()
    tokenizer: TokenizerConfig = TokenizerConfig()
    data: DataConfig
    objectives: ObjectivesConfig = ObjectivesConfig()
    attributes: dict[str, list[str]] = Field(
        default_factory=world_attributes,
        description="attribute phrases by type: hard negatives swap one, probes mask one (default: the world's)")
    _attributes = field_validator("attributes")(checked_attributes)
    probe: ProbeConfig = ProbeConfig()
    train: TrainConfig = TrainConfig()
