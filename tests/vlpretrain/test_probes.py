"""The masked-word probe on students whose right answers are known: hand-built ones (one reads the colour off the
image, one answers from the text alone) and a real ViLT trained on a toy whose colour word only the image names."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from clipdistill.data import LoaderBatch, Sample, SkipCounter, View
from clipdistill.data.attributes import AttributeVocab
from clipdistill.vlpretrain.config import ObjectivesConfig, StudentArch
from clipdistill.vlpretrain.model import ViltPretrainer, vilt_config
from clipdistill.vlpretrain.probes import other_images, run_probes
from clipdistill.vlpretrain.task import VLPretrainTask
from clipdistill.vlpretrain.text import build_wordpiece

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}  # channel argmax = list index
SHAPES = ["square", "circle"]
VOCAB = AttributeVocab({"colour": list(COLOURS), "shape": SHAPES})
IMAGE_TOKENS = 5  # [CLS] + 4 patches after the text, as ViLT lays its hidden states out


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 255


def held_out() -> list[Sample]:
    """Red in most pairs, so the majority share is not what reading the image scores."""
    colours = ["red"] * 6 + ["green"] * 3 + ["blue"] * 3
    return [Sample(str(i), Image.new("RGB", (8, 8), COLOURS[c]), f"a {c} {SHAPES[i % 2]} here")
            for i, c in enumerate(colours)]


class Oracle(nn.Module):
    """Logits = hidden states, one-hot: each text token's own id, and at [MASK] the colour word of the image
    (`reads_image`) or always `answer`. The image positions after the text hold [PAD], so a probe that reads the
    wrong positions scores nothing."""

    def __init__(self, tok, reads_image: bool, answer: str = "red"):
        super().__init__()
        self.tok, self.reads_image = tok, reads_image
        self.colour_ids = [tok.convert_tokens_to_ids(c) for c in COLOURS]
        self.answer = tok.convert_tokens_to_ids(answer)
        self.mlm = nn.Identity()
        self.itm = nn.Linear(len(tok), 2)

    def forward(self, ids, attention, pixels):
        v = len(self.tok)
        colour = torch.tensor(self.colour_ids)[pixels.mean((2, 3)).argmax(1)]
        text = torch.where(ids == self.tok.mask_token_id, colour[:, None] if self.reads_image else self.answer, ids)
        image = torch.full((len(ids), IMAGE_TOKENS), self.tok.pad_token_id)
        hidden = nn.functional.one_hot(torch.cat([text, image], 1), v).float()
        return hidden, torch.zeros(len(ids), v)


def probe(model, tok, samples, **kw):
    return run_probes(model, tok, VOCAB, samples, to_tensor, 40, 4, torch.device("cpu"), seed=0, **kw)["mlm"]


def test_other_images_never_keep_their_own():
    for n in range(2, 12):
        for seed in range(3):
            other = other_images(n, seed)
            assert sorted(other) == list(range(n)) and all(j != i for i, j in enumerate(other))


def test_a_student_reading_the_image_scores_all_and_its_text_only_control_does_not(tmp_path):
    samples = held_out()
    tok = build_wordpiece([s.text for s in samples], 60, tmp_path / "tok")
    mlm = probe(Oracle(tok, reads_image=True), tok, samples)
    colour = mlm["colour"]
    assert colour["accuracy"] == 1.0 and colour["n"] == 12
    assert colour["majority_word"] == "red" and colour["majority_share"] == 0.5
    other = other_images(12, 0)  # the control scores only where the other image has the same colour
    same = sum(samples[i].text.split()[1] == samples[j].text.split()[1] for i, j in enumerate(other))
    assert colour["accuracy_other_image"] == same / 12 < 1
    assert colour["answers"] == [["red", 0.5], ["green", 0.25], ["blue", 0.25]]
    # a shape slot is answered with the image's colour: a wrong-type answer, listed among the answers
    assert mlm["shape"]["accuracy"] == 0.0 and {w for w, _ in mlm["shape"]["answers"]} <= set(COLOURS)
    assert "prior_word" not in colour  # no training captions given


def test_a_text_only_student_scores_the_same_with_any_image_and_the_prior_is_the_training_one(tmp_path):
    samples = held_out()
    tok = build_wordpiece([s.text for s in samples], 60, tmp_path / "tok")
    training = ["a blue circle"] * 5 + ["a red square"] * 4 + ["a blue circle on the left"]
    mlm = probe(Oracle(tok, reads_image=False, answer="blue"), tok, samples, prior_captions=training)
    colour = mlm["colour"]
    assert colour["accuracy"] == colour["accuracy_other_image"] == 0.25
    # the held-out majority is red (0.5); what the training prior (blue) earns here is 0.25
    assert (colour["prior_word"], colour["prior_share"]) == ("blue", 0.25)
    assert (mlm["shape"]["prior_word"], mlm["shape"]["prior_share"]) == ("circle", 0.5)


def test_a_vilt_trained_on_the_toy_answers_from_the_image_and_the_probe_says_so(tmp_path):
    """Captions "a <colour> image" on solid-colour images: MLM alone (15% of words, so mostly one at a time)
    must read the masked colour off the image, and the probe, which masks differently from training (one word,
    all [MASK]), must report it right, and at chance with another image."""
    torch.manual_seed(0)
    names = list(COLOURS)
    tok = build_wordpiece([f"a {c} image" for c in names], 64, tmp_path / "tok")
    arch = StudentArch(hidden_size=32, num_layers=1, num_heads=2, image_size=16, patch_size=8, dropout=0.0)
    model = ViltPretrainer(vilt_config(arch, tok))
    objectives = ObjectivesConfig.model_validate({"itm": {"weight": 0}, "mlm": {"rate": 0.25}})
    vocab = AttributeVocab({"colour": names, "size": ["small", "large"]})
    task = VLPretrainTask(model, tok, objectives, vocab, 40)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def pixels(idx):
        return torch.stack([to_tensor(Image.new("RGB", (16, 16), COLOURS[names[i]])) * 2 - 1 for i in idx])

    for _ in range(150):
        idx = torch.randint(3, (32,)).tolist()
        batch = LoaderBatch(keys=[str(j) for j in range(32)], captions=[f"a {names[i]} image" for i in idx],
                            index=torch.arange(32), views=(View(pixels(idx), torch.zeros(32, 1, dtype=torch.long)),),
                            skips=SkipCounter(), items=32)
        loss = task.training_step(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = [Sample(str(i), Image.new("RGB", (16, 16), COLOURS[names[i % 3]]), f"a {names[i % 3]} image")
               for i in range(30)]
    out = run_probes(model, tok, vocab, samples, lambda im: to_tensor(im) * 2 - 1, 40, 8, torch.device("cpu"))
    colour = out["mlm"]["colour"]
    assert colour["n"] == 30 and colour["accuracy"] == 1.0
    assert colour["accuracy_other_image"] < 0.6  # another image's colour: right only where the colours agree
    assert out["mlm"]["size"]["n"] == 0 and out["mlm"]["size"]["accuracy"] is None
