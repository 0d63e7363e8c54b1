"""`student.model: hf:DIR`: a local transformers ViLT as the CLIP-TD student, word-aligned to the CLIP teacher's
tokens, exported as a transformers ViLT task model with the same outputs."""

import json
from pathlib import Path

import pytest
import torch
from td_helpers import TASKS, build_tiny_vilt, open_examples, stand_in_fit

from clipdistill.errors import UserError
from clipdistill.td.align import align_batch, teacher_spans
from clipdistill.td.hf_student import HFViltStudent
from clipdistill.td.runner import FinetuneConfig, run_finetune
from clipdistill.td.task import Collator, TDConfig, TDTask

TEACHER = "open_clip:cd-student-xs-32"


@pytest.fixture(scope="module")
def vilt(world, tmp_path_factory):
    return build_tiny_vilt(tmp_path_factory.mktemp("vilt"), world)


def test_forward_is_vilt_models_with_patches_in_grid_order(vilt, monkeypatch):
    from transformers import ViltModel

    student = HFViltStudent(f"hf:{vilt}", 16).eval()
    ref = ViltModel.from_pretrained(str(vilt), use_safetensors=True).eval()
    ids = student.tokenize(["What color is the shape?", "Is there a red circle left of the square?"])
    images = torch.randn(2, 3, 32, 32)
    # ViLT's visual_embed permutes the patches with torch.multinomial: made the identity, its order is the grid's
    monkeypatch.setattr(torch, "multinomial", lambda w, n, replacement=False: torch.arange(n))
    with torch.no_grad():
        out = student(images, ids, need_attention=True)
        want = ref(input_ids=ids, attention_mask=(ids != 0).long(), pixel_values=images)
    length = ids.shape[1]
    assert torch.allclose(out.cls, want.pooler_output, atol=1e-6)
    assert torch.allclose(out.text_tokens, want.last_hidden_state[:, :length], atol=1e-6)
    assert torch.allclose(out.image_tokens, want.last_hidden_state[:, length + 1:], atol=1e-6)
    assert out.image_tokens.shape == (2, 16, 32) and out.cls_attention.shape == (2, 16 + length)
    assert torch.equal(out.text_mask, ids != 0)


def test_wordpiece_tokens_meet_clip_bpe_tokens_by_words(vilt, teacher):
    student = HFViltStudent(f"hf:{vilt}", 40)
    texts = ["What colour is the shapes?", "Is there  a Red circle, left of it's box."]
    s_spans = student.token_spans(texts)
    t_ids = teacher.tokenizer(texts)
    t_spans = teacher_spans(teacher, texts, t_ids.shape[1])
    a, pooled = align_batch(texts, s_spans, t_spans, t_ids.shape[1])
    assert not pooled.any()
    for i, text in enumerate(texts):
        n_real = int((t_ids[i] != 0).sum())  # SOT + BPE tokens + EOT
        assert t_spans[i][0] is None and t_spans[i][n_real - 1] is None and len(t_spans[i]) == t_ids.shape[1]
        for j, span in enumerate(s_spans[i]):
            row = a[i, j]
            if span is None:  # [CLS], [SEP], padding: never distilled
                assert not row.any()
                continue
            assert row.sum().item() == pytest.approx(1.0)
            word = text[span[0]:span[1]].lower().lstrip("#")
            covered = {text[t_spans[i][t][0]:t_spans[i][t][1]].lower() for t in row.nonzero().flatten().tolist()}
            assert any(word in c or c in word for c in covered), (word, covered)
    # "shapes": WordPiece pieces of one word both take the teacher's token(s) of that word
    at = texts[0].index("shapes")
    pieces = [j for j, sp in enumerate(s_spans[0]) if sp and at <= sp[0] < at + len("shapes")]
    assert len(pieces) >= 2 and all(torch.equal(a[0, pieces[0]], a[0, j]) for j in pieces)


def test_unrecoverable_teacher_spans_fall_back_to_the_pooled_text(vilt, teacher, world, monkeypatch):
    import clipdistill.td.task as td_task

    student = HFViltStudent(f"hf:{vilt}", 16)
    exs = open_examples(world, "snli_ve")[:4]
    lost = lambda teacher, texts, length: [None, *teacher_spans(teacher, texts[1:], length)]  # noqa: E731
    for mode, spans, want in (("words", teacher_spans, [False] * 4), ("pooled", teacher_spans, [True] * 4),
                              ("words", lost, [True, False, False, False])):
        monkeypatch.setattr(td_task, "teacher_spans", spans)
        collate = Collator("snli_ve", student, teacher, text_alignment=mode)
        batch = collate(exs)
        assert batch.teacher.alignment.pooled_rows.tolist() == want and collate.pooled_rows == sum(want)
        task = TDTask("snli_ve", student, TDConfig(method="clip_td"), teacher)
        signals = task._teacher_signals(batch).signals
        pooled_text = teacher.encode_text(batch.teacher.ids)
        for i, pooled in enumerate(want):
            real = batch.teacher.alignment.real[i]
            if pooled:  # every real student token's target is the pooled teacher text
                assert torch.equal(signals.mask[i], real)
                assert torch.allclose(signals.tokens[i, real], pooled_text[i].expand(int(real.sum()), -1),
                                      atol=1e-5)
            else:  # word-aligned: only real tokens, each a mean of teacher tokens
                assert signals.mask[i].any() and not (signals.mask[i] & ~real).any()


def _finetune(world, vilt, tmp_path, kind, method="clip_td"):
    cfg = FinetuneConfig(task={"name": kind, "kind": kind, "folder": TASKS[kind]}, world=str(world),
                         student={"model": f"hf:{vilt}", "context_length": 24}, teacher={"models": [TEACHER]},
                         td={"method": method, "pooled_weight": 0.5}, fraction=0.5, batch_size=8)
    run = tmp_path / kind
    results = run_finetune(cfg, run, trainer=stand_in_fit, train_config={"epochs": 1, "lr": 1e-3},
                           log=lambda s: None)
    return cfg, run, results


def _reload_ours(vilt, run):
    """Our student + head rebuilt from the run's task_model.safetensors."""
    from safetensors.torch import load_file

    meta = json.loads((run / "task_model.json").read_text())
    state = load_file(str(run / "task_model.safetensors"))
    task = TDTask(meta["kind"], HFViltStudent(f"hf:{vilt}", meta["student"]["context_length"]),
                  TDConfig(method="baseline"), vocab=meta["vocab"])
    for name, mod in task.export_modules().items():
        mod.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
        mod.eval()
    return task


@pytest.mark.parametrize("kind", ["vqa", "snli_ve"])
def test_hf_vilt_finetunes_with_clip_td_and_exports_a_vilt_for_question_answering(world, vilt, tmp_path, kind):
    from transformers import ViltForQuestionAnswering

    from clipdistill.td.metrics import vqa_accuracy

    cfg, run, results = _finetune(world, vilt, tmp_path, kind)
    manifest = json.loads((run / "manifest.json").read_text())
    align = manifest["text_alignment"]
    assert align["method"] == "words" and align["texts_aligned_by_words"] > 0 and align["texts_pooled"] == 0
    assert manifest["student"]["family"] == "hf_vilt" and manifest["student"]["image_size"] == 32

    ours = _reload_ours(vilt, run)
    before = HFViltStudent(f"hf:{vilt}", 24)
    assert not torch.equal(ours.student.vilt.embeddings.cls_token, before.vilt.embeddings.cls_token)  # it trained

    hf = ViltForQuestionAnswering.from_pretrained(str(run / "task_model_hf"), use_safetensors=True).eval()
    labels = [hf.config.id2label[i] for i in range(hf.config.num_labels)]
    assert labels == (ours.vocab if kind == "vqa" else ["entailment", "neutral", "contradiction"])
    assert hf.config.label2id == {name: i for i, name in enumerate(labels)}

    val = open_examples(world, kind, "val" if kind == "vqa" else "dev")
    collate = Collator(kind, ours.student, None, ours.vocab)
    scores = []
    for i in range(0, len(val), 32):
        batch = collate(val[i:i + 32])
        with torch.no_grad():
            mine = ours._task_logits(ours._forward(batch), batch)
            theirs = hf(input_ids=batch.ids, attention_mask=(batch.ids != 0).long(),
                        pixel_values=batch.image).logits
        assert torch.allclose(mine, theirs, atol=1e-5)
        preds = [labels[j] for j in theirs.argmax(-1).tolist()]
        assert preds == [labels[j] for j in mine.argmax(-1).tolist()]
        if kind == "vqa":
            scores += [vqa_accuracy(p, a) for p, a in zip(preds, batch.task.answers, strict=True)]
        else:
            scores += [float(labels.index(p) == y) for p, y in zip(preds, batch.task.labels.tolist(), strict=True)]
    assert 100 * sum(scores) / len(scores) == pytest.approx(results["val"]["accuracy"])


def test_hf_vilt_vcr_exports_an_image_and_text_retrieval_model(world, vilt, tmp_path):
    from transformers import ViltForImageAndTextRetrieval

    from clipdistill.td.examples import vcr_items

    _, run, results = _finetune(world, vilt, tmp_path, "vcr", method="naive")
    assert {"q_a", "qa_r", "q_ar"} <= set(results["val"])
    ours = _reload_ours(vilt, run)
    hf = ViltForImageAndTextRetrieval.from_pretrained(str(run / "task_model_hf"), use_safetensors=True).eval()
    items = [it for ex in open_examples(world, "vcr", "val")[:4] for it in vcr_items(ex)]
    batch = Collator("vcr", ours.student, None)(items)
    with torch.no_grad():
        mine = ours._task_logits(ours._forward(batch), batch)
        theirs = hf(input_ids=batch.ids, attention_mask=(batch.ids != 0).long(),
                    pixel_values=batch.image.repeat_interleave(batch.task.n_choices, 0)).logits
    assert torch.allclose(mine, theirs.view_as(mine), atol=1e-5)


def test_bad_hf_student_folders_are_clear_errors(tmp_path, vilt):
    with pytest.raises(UserError, match="no such folder"):
        HFViltStudent(f"hf:{tmp_path / 'nope'}", 16)
    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(UserError, match="model_type 'clip', expected 'vilt'"):
        HFViltStudent(f"hf:{clip}", 16)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((vilt / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="pickled .bin weights are refused"):
        HFViltStudent(f"hf:{pickled}", 16)


def test_finetune_command_trains_an_hf_vilt_through_the_shared_loop(world, vilt, tmp_path):
    from typer.testing import CliRunner

    from clipdistill.cli import app

    out = tmp_path / "ft"
    config = Path(__file__).parents[2] / "src" / "clipdistill" / "configs" / "td" / "finetune_tiny.yaml"
    r = CliRunner().invoke(app, ["finetune", str(config), "--set", f"world={world}", "--set", "fraction=0.1",
                                 "--set", f"out={out}", "--set", f"student={{model: 'hf:{vilt}', context_length: 24}}",
                                 "--set", f"teacher.models=[{TEACHER}]", "--set", "td.selection=student_attention",
                                 "--set", "train={epochs: 1, progress: false, tensorboard: false, device: cpu}"])
    assert r.exit_code == 0, r.output
    assert (out / "task_model_hf" / "model.safetensors").is_file() and (out / "checkpoints").is_dir()
    from clipdistill.safeload import current_umask  # save_pretrained writes 0600: the export follows the umask

    assert (out / "task_model_hf" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["text_alignment"]["texts_aligned_by_words"] > 0 and manifest["schedule"]["total_steps"] > 0


def test_protocol_cells_use_the_hf_student_and_a_bad_folder_stops_before_any_cell(world, vilt, tmp_path):
    from clipdistill.td.protocol import ProtocolConfig, run_protocol

    base = {"tasks": [{"name": "snli_ve", "kind": "snli_ve", "folder": TASKS["snli_ve"]}], "world": str(world),
            "fractions": [0.25], "seeds": [0], "full": False, "methods": ["prior", "clip_td"],
            "teacher": {"models": [TEACHER]}, "batch_size": 16, "out": str(tmp_path / "p")}
    with pytest.raises(UserError, match="no such folder"):
        run_protocol(ProtocolConfig(**base, student={"model": f"hf:{tmp_path / 'missing'}"}), trainer=stand_in_fit,
                     train_config={"epochs": 1, "lr": 1e-3}, progress=lambda s: None)
    assert not (tmp_path / "p").exists()
    res = run_protocol(ProtocolConfig(**base, student={"model": f"hf:{vilt}"}), trainer=stand_in_fit,
                       train_config={"epochs": 1, "lr": 1e-3}, progress=lambda s: None)
    assert {r["method"] for r in res["rows"]} == {"prior", "clip_td"}
    cell = tmp_path / "p" / "cells" / "snli_ve" / "f0.25-s0" / "clip_td"
    assert json.loads((cell / "task_model_hf" / "config.json").read_text())["id2label"] == {
        "0": "entailment", "1": "neutral", "2": "contradiction"}
