"""Sigmoid (SigLIP) models evaluate through the same zero-shot and retrieval code: ranking by cosine is ranking by
the model's own pairwise probability sigmoid(scale * cos + bias), so the metrics are those of its probabilities."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipdistill.evaluation import open_imagefolder, open_retrieval, retrieval_eval, zeroshot_eval
from clipdistill.evaluation.metrics import classification_metrics
from clipdistill.zoo import load_model
from siglip_models import write_hf_siglip_folder, write_open_clip_siglip_json


@pytest.fixture(scope="module", params=["open_clip", "hf"])
def model(request, tmp_path_factory):
    torch.manual_seed(3)
    root = tmp_path_factory.mktemp("siglip")
    if request.param == "open_clip":
        m = load_model(f"open_clip:{write_open_clip_siglip_json(root / 'tiny-sigmoid.json', -2.0)}")
    else:
        m = load_model(f"hf:{write_hf_siglip_folder(root / 'hf')}")
    assert m.logit_bias is not None
    return m


def _probs(model, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(model.raw_logit_scale.exp() * img @ txt.T + model.logit_bias)


def test_zeroshot_metrics_are_those_of_the_sigmoid_probabilities(model, imagefolder):
    ds = open_imagefolder(imagefolder)
    rec = zeroshot_eval(model, ds, progress=False)
    with torch.no_grad():
        img = model.encode_image(torch.stack([model.eval_transform(ds.load(i)) for i in range(len(ds))]), True)
        prompts = [t.format(c=c) for c in ds.classnames for t in ds.templates]
        txt = model.encode_text(model.tokenizer(prompts), True).view(len(ds.classnames), len(ds.templates), -1)
        classifier = F.normalize(txt.mean(1), dim=-1)
    want = classification_metrics(_probs(model, img, classifier), torch.tensor(ds.labels), len(ds.classnames),
                                  ds.classnames)
    for k in ("acc1", "acc5", "mean_per_class_recall", "per_class_recall"):
        assert rec["metrics"][k] == pytest.approx(want[k]), k


def test_retrieval_metrics_are_those_of_the_sigmoid_probabilities(model, retrieval_jsonl):
    ds = open_retrieval(retrieval_jsonl)
    rec = retrieval_eval(model, ds, ks=(1, 2), progress=False)
    with torch.no_grad():
        img = model.encode_image(torch.stack([model.eval_transform(ds.load(i)) for i in range(len(ds))]), True)
        caps = [c for cs in ds.captions for c in cs]
        txt = model.encode_text(model.tokenizer(caps), True)
    owner = torch.tensor([i for i, cs in enumerate(ds.captions) for _ in cs])
    p = _probs(model, txt, img)  # [captions, images]
    t2i = (p.topk(2, dim=1).indices == owner[:, None]).any(1).float().mean().item()
    i2t = torch.stack([(owner[p.T[i].topk(1).indices] == i).any() for i in range(len(ds))]).float().mean().item()
    assert rec["metrics"]["image_retrieval_recall@2"] == pytest.approx(t2i)
    assert rec["metrics"]["text_retrieval_recall@1"] == pytest.approx(i2t)
