"""`VLPretrainTask`: ViLT's pretraining objectives on image-caption batches, as a `train.Task`.

Captions are tokenised here, not in the loader: the ITM negatives are made per step and whole-word masking
needs each token's character offsets. Every random draw (masking, positives, negatives, ViLT's patch order)
uses the global torch stream, which checkpoints restore, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipdistill.data import LoaderBatch
from clipdistill.data.attributes import AttributeVocab
from clipdistill.vlpretrain.config import ObjectivesConfig
from clipdistill.vlpretrain.model import ViltPretrainer
from clipdistill.vlpretrain.text import attribute_mask, most_similar, whole_word_mask


@dataclass(frozen=True)
class Tokens:
    """Texts through the student's WordPiece tokenizer, padded to the longest (what `tokenize` gives)."""

    ids: torch.Tensor  # int64 [B, L]
    attention: torch.Tensor  # int64 [B, L]: 1 for a real token, 0 for padding
    offsets: torch.Tensor  # int64 [B, L, 2]: each token's character span in its text (whole-word masking)
    special: torch.Tensor  # bool [B, L]: special tokens and padding, never masked-word targets

    def to(self, device: torch.device, non_blocking: bool = False) -> Tokens:
        return Tokens(*(t.to(device, non_blocking=non_blocking) for t in (self.ids, self.attention, self.offsets,
                                                                           self.special)))


def tokenize(tokenizer, captions: list[str], max_len: int) -> Tokens:
    enc = tokenizer(captions, padding="longest", truncation=True, max_length=max_len, return_tensors="pt",
                    return_offsets_mapping=True, return_special_tokens_mask=True)
    return Tokens(enc["input_ids"], enc["attention_mask"], enc["offset_mapping"],
                  enc["special_tokens_mask"].bool() | (enc["attention_mask"] == 0))


def itm_pairs(captions: list[str], mode: str, positive_share: float, vocab: AttributeVocab
              ) -> tuple[list[str], torch.Tensor, int]:
    """(texts, labels 1 = matching / 0 = not, fallbacks): each image keeps its caption with probability
    `positive_share`, else gets a negative by `mode`. A caption `swap` finds no attribute in gets another batch
    caption instead (a fallback); one with no different caption in the batch stays a positive (also counted)."""
    texts, labels, fallbacks = [], [], 0
    positive = torch.bernoulli(torch.full((len(captions),), positive_share)).bool().tolist()
    for i, cap in enumerate(captions):
        neg = None
        if not positive[i]:
            if mode == "swap":
                neg = vocab.swap(cap)
            elif mode == "in_batch":
                j = most_similar(captions, i)
                neg = None if j is None else captions[j]
            if neg is None:
                others = [c for c in captions if c != cap]
                if mode != "random" or not others:  # not the negative `mode` asked for
                    fallbacks += 1
                if others:
                    neg = others[int(torch.randint(len(others), (1,)))]
        texts.append(cap if neg is None else neg)
        labels.append(int(neg is None))
    return texts, torch.tensor(labels), fallbacks


class VLPretrainTask:
    def __init__(self, model: ViltPretrainer, tokenizer, objectives: ObjectivesConfig, vocab: AttributeVocab,
                 max_len: int):
        self.model, self.tokenizer, self.obj, self.vocab, self.max_len = model, tokenizer, objectives, vocab, max_len

    def trainable(self) -> dict[str, nn.Module]:
        return {"student": self.model}

    def training_step(self, batch: LoaderBatch) -> dict[str, torch.Tensor]:
        pixels, captions = batch.student.image, batch.captions
        dev = pixels.device
        out: dict[str, torch.Tensor] = {}
        total = pixels.new_zeros(())
        plain = tokenize(self.tokenizer, captions, self.max_len)
        ids, attention = plain.ids.to(dev), plain.attention.to(dev)
        if self.obj.mlm.weight:  # masked on the CPU: its draws come from the CPU stream that checkpoints restore
            masked, labels = whole_word_mask(plain.ids, plain.offsets, plain.special, self.obj.mlm.rate,
                                             self.tokenizer.mask_token_id, len(self.tokenizer))
            if self.obj.mlm.attribute_share:
                masked, labels = attribute_mask(masked, labels, plain.ids, plain.offsets, plain.special, captions,
                                                self.vocab, self.obj.mlm.attribute_share,
                                                self.tokenizer.mask_token_id)
            masked, labels = masked.to(dev), labels.to(dev)
            hidden, _ = self.model(masked, attention, pixels)
            logits = self.model.mlm(hidden[:, :masked.shape[1]])
            targets = labels != -100
            n = targets.sum().clamp(min=1)  # a batch where no word was drawn: loss 0, not NaN
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / n
            out["mlm"] = loss
            out["mlm_acc"] = ((logits.argmax(-1) == labels) & targets).sum() / n
            total = total + self.obj.mlm.weight * loss
        if self.obj.itm.weight:
            texts, labels, fallbacks = itm_pairs(captions, self.obj.itm.negatives, self.obj.itm.positive_share,
                                                 self.vocab)
            enc = tokenize(self.tokenizer, texts, self.max_len).to(dev)
            _, pooled = self.model(enc.ids, enc.attention, pixels)
            logits = self.model.itm(pooled)
            labels = labels.to(dev)
            loss = F.cross_entropy(logits, labels)
            out["itm"] = loss
            out["itm_acc"] = (logits.argmax(-1) == labels).float().mean()
            out["itm_fallback_share"] = torch.tensor(fallbacks / len(captions), device=dev)
            total = total + self.obj.itm.weight * loss
        if self.obj.itc.weight:
            text, image = self.model.unimodal(ids, attention, pixels)
            logits = text @ image.T / self.obj.itc.temperature
            target = torch.arange(len(captions), device=dev)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            out["itc"] = loss
            total = total + self.obj.itc.weight * loss
        out["loss"] = total
        return out
