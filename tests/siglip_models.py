"""Tiny random SigLIP-style models for tests: an open_clip JSON with `init_logit_bias` (the key open_clip 3.3.0's
SigLIP configs carry, e.g. ViT-B-16-SigLIP.json) and a transformers `SiglipModel` folder laid out as a release is
(config.json with model_type "siglip", model.safetensors, preprocessor_config.json, tokenizer files).

The released SigLIP tokenizer is a sentencepiece model (package not installed here); the folder gets a word-level
`tokenizers` tokenizer with SigLIP's special tokens instead ("</s>" = 1 is eos and pad, as in SiglipTokenizer),
the same kind of tokenizer.json the fixed-resolution SigLIP 2 releases ship."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

CTX = 16
# released SigLIP values: SO400M-14-384's scale exp(4.7215) = 112.3 (open_clip issue #746) is above the clamp at 100
HF_LOG_SCALE, HF_BIAS = 4.7215, -16.5
WORDS = "a photo of the red green blue yellow black square circle thing cat dog two".split()


def write_open_clip_siglip_json(path: Path, init_logit_bias: float = -10.0, init_logit_scale: float | None = None):
    cfg = {
        "embed_dim": 32,
        "init_logit_bias": init_logit_bias,
        "custom_text": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": CTX, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}},
    }
    if init_logit_scale is not None:
        cfg["init_logit_scale"] = init_logit_scale
    path.write_text(json.dumps(cfg))
    return path


def write_hf_siglip_folder(folder: Path, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, SiglipConfig, SiglipImageProcessor, SiglipModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", eos_token="</s>", pad_token="</s>",
                                  model_max_length=CTX)
    tok.save_pretrained(str(folder))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = SiglipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=CTX, pad_token_id=1, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    model = SiglipModel(cfg)
    with torch.no_grad():
        model.logit_scale.fill_(HF_LOG_SCALE)
        model.logit_bias.fill_(HF_BIAS)
    model.save_pretrained(str(folder))
    assert math.exp(HF_LOG_SCALE) > 100
    return folder
