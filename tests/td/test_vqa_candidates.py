"""VQA's confidence candidates (`td.vqa_candidates`, td/tasks/vqa.py): the GT answer plus the most frequent other
answers of the question's own type, or of the whole vocabulary (`frequent`, the behaviour before the option); short
rows are padded with repeats that the teacher's softmax never sees."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from td_helpers import TASKS, TINY_STUDENT, open_examples

from clipdistill.data.tasks import open_task
from clipdistill.td.data import TaskReader
from clipdistill.td.examples import TaskExample
from clipdistill.td.heads import build_answer_vocab
from clipdistill.td.runner import FinetuneConfig, cell_data, run_finetune
from clipdistill.td.student import VLStudent, VLStudentConfig
from clipdistill.td.task import Collator, TDConfig, TDTask
from clipdistill.td.tasks import task_kind
from clipdistill.td.tasks.vqa import AnswerCandidates, candidate_answers
from clipdistill.td.weighting import choice_probs, instance_weights

VQA = task_kind("vqa")


def _ex(key: str, text: str, answers: list[str]) -> TaskExample:
    return TaskExample(key=key, image=Path("unused.png"), text=text, answers=answers)


# a hand-made training split: question types as VQA v2 annotations name them (meta) or, without one, the first
# three words; answer counts chosen so every ranking below is unambiguous
TRAIN = [
    _ex("c1", "What color is the car?", ["red"] * 10),
    _ex("c2", "What color is the cup?", ["blue"] * 6 + ["red"] * 4),
    _ex("c3", "What color is the hat?", ["green"] * 10),
    _ex("c4", "What color is the box?", ["blue"] * 10),
    _ex("y1", "Is there a dog?", ["yes"] * 9 + ["no"]),
    _ex("y2", "Is there a cat?", ["no"] * 10),
    _ex("y3", "Is there a hat?", ["yes"] * 9 + ["maybe"]),  # "maybe" (1 answer) is cut from the vocabulary
    _ex("n1", "How many dogs?", ["2"] * 10),
    _ex("n2", "How many cats?", ["3"] * 7 + ["2"] * 3),
]
META = {"c1": {"question_type": "what color is the"}, "c2": {"question_type": "what color is the"},
        "c3": {"question_type": "what color is the"}, "c4": {"question_type": "what color is the"},
        "y1": {"question_type": "is there a"}, "y2": {"question_type": "is there a"},
        "y3": {"question_type": "is there a"}}  # the "how many" questions have no annotated type
VOCAB = build_answer_vocab([ex.answers for ex in TRAIN], 100, min_count=2)


def test_vocab_is_what_the_fixture_assumes():
    assert VOCAB == ["yes", "blue", "red", "2", "no", "green", "3"]


def test_question_type_mode_ranks_each_types_own_answers():
    pol = VQA.candidate_policy(TRAIN, META, VOCAB, TDConfig(vqa_distractors=2))
    assert pol.mode == "question_type" and pol.width == 3
    assert pol.by_type == {"what color is the": ["blue", "red", "green"], "is there a": ["yes", "no"],
                           "how many dogs?": ["2"], "how many cats?": ["3", "2"]}  # first three words: no type
    # the GT (the majority human answer) first, then the type's most frequent other answers, up to 2
    assert pol.choose(_ex("c1", "What color is the car?", ["green"] * 10)) == ["green", "blue", "red"]
    assert pol.choose(_ex("c2", "What color is the cup?", ["blue"] * 6 + ["red"] * 4)) == ["blue", "red", "green"]
    # a yes/no type has two answers: two candidates, nothing of another type added
    assert pol.choose(_ex("y2", "Is there a cat?", ["no"] * 10)) == ["no", "yes"]
    # the metadata of the item's own split gives its type (here: val's annotation)
    val = _ex("v1", "Are there any dogs?", ["yes"] * 10)
    assert pol.choose(val, {"v1": {"question_type": "is there a"}}) == ["yes", "no"]


def test_a_type_unseen_in_training_falls_back_to_the_frequent_answers():
    pol = VQA.candidate_policy(TRAIN, META, VOCAB, TDConfig(vqa_distractors=3))
    unseen = _ex("u1", "Why is the sky blue?", ["rayleigh"] * 10)
    assert pol.choose(unseen) == candidate_answers(unseen.answers, VOCAB, 3) == ["rayleigh", "yes", "blue", "red"]


def test_frequent_mode_is_the_vocabularys_most_frequent_answers_whatever_the_type():
    pol = VQA.candidate_policy(TRAIN, META, VOCAB, TDConfig(vqa_candidates="frequent", vqa_distractors=3))
    assert pol.choose(TRAIN[4]) == ["yes", "blue", "red", "2"]
    assert all(pol.choose(ex) == candidate_answers(ex.answers, VOCAB, 3) for ex in TRAIN)


def _collator(policy, teacher=None, vocab=VOCAB):
    return Collator("vqa", VLStudent(VLStudentConfig(**TINY_STUDENT)), teacher, vocab, policy)


def test_collate_pads_short_rows_with_their_own_gt_and_marks_the_padding():
    pol = AnswerCandidates.fit(TRAIN, META, VOCAB, "question_type", 3)
    items = [TRAIN[0], TRAIN[4]]  # a colour question (4 candidates) and a yes/no one (2)
    part = VQA.collate(items, lambda texts: torch.zeros(len(texts), 4, dtype=torch.long), {}, pol, VOCAB)
    assert part.cand_texts == [
        "What color is the car? red", "What color is the car? blue", "What color is the car? green",
        "What color is the car? red",  # the type has no 4th answer: padded with the GT
        "Is there a dog? yes", "Is there a dog? no", "Is there a dog? yes", "Is there a dog? yes"]
    assert part.cand_valid.tolist() == [[True, True, True, False], [True, True, False, False]]
    assert part.cand_labels.tolist() == [0, 0]


def test_frequent_mode_collates_exactly_the_old_candidates(world):
    exs = open_examples(world, "vqa")
    vocab = build_answer_vocab([ex.answers for ex in exs], 3129)
    pol = VQA.candidate_policy(exs, {}, vocab, TDConfig(vqa_candidates="frequent"))
    part = VQA.collate(exs[:8], lambda texts: torch.zeros(len(texts), 4, dtype=torch.long), {}, pol, vocab)
    assert part.cand_texts == [f"{ex.text} {a}" for ex in exs[:8] for a in candidate_answers(ex.answers, vocab, 7)]
    assert bool(part.cand_valid.all()) and part.cand_valid.shape == (8, 8)


def test_padding_never_changes_the_teachers_probabilities():
    torch.manual_seed(0)
    img, cands = torch.randn(1, 16), torch.randn(1, 3, 16)
    plain = choice_probs(img, cands, 50.0)
    for pad in ([0, 0, 0, 0, 0], [1, 2, 1], [2]):  # repeats of the row's own candidates (the GT, or any)
        padded = torch.cat([cands, cands[:, pad]], dim=1)
        valid = torch.tensor([[True] * 3 + [False] * len(pad)])
        probs = choice_probs(img, padded, 50.0, valid)
        torch.testing.assert_close(probs[:, :3], plain)
        assert probs[:, 3:].abs().sum() == 0
        # unmasked, the repeats would take probability mass from the GT's rivals and the GT
        assert not torch.allclose(choice_probs(img, padded, 50.0)[:, 0], plain[:, 0])
    w = instance_weights(probs, torch.tensor([0]), TDConfig().weights)
    assert float(w.confidence[0]) == pytest.approx(float(plain[0, 0]))


def test_the_task_reads_each_rows_distinct_candidates_only(world, teacher):
    folder = world / TASKS["vqa"]
    train = open_task("vqa", folder, "train")
    vocab = build_answer_vocab([ex.answers for ex in train.examples], 3129)
    pol = VQA.candidate_policy(train.examples, train.meta, vocab, TDConfig())
    widths = {len(pol.choose(ex)) for ex in train.examples}
    assert min(widths) < pol.width == max(widths)  # the world has short (yes/no, size) and full rows
    exs = sorted(train.examples, key=lambda ex: len(pol.choose(ex)))[:3] + train.examples[-3:]
    task = TDTask("vqa", VLStudent(VLStudentConfig(**TINY_STUDENT)), TDConfig(), teacher, vocab)
    batch = _collator(pol, teacher, vocab)(exs)
    assert batch.teacher.cand_valid.shape == (6, pol.width)
    probs = task._teacher_signals(batch).probs
    img = teacher.encode_image(torch.stack([teacher.eval_transform(ex.load_image()) for ex in exs]))
    for i, ex in enumerate(exs):
        distinct = pol.choose(ex)
        texts = teacher.encode_text(teacher.tokenizer([f"{ex.text} {a}" for a in distinct]))
        expected = choice_probs(img[i : i + 1], texts[None], teacher.logit_scale)[0]
        torch.testing.assert_close(probs[i, : len(distinct)], expected, rtol=1e-4, atol=1e-5)
        assert float(probs[i, len(distinct):].sum()) == 0


def test_the_runner_fits_the_candidates_on_the_training_subset(world, tmp_path):
    seen = {}

    def no_training(task, loader_factory, train_cfg, run_dir):
        seen["policy"] = loader_factory(0).collate.candidates
        return run_dir

    cfg = FinetuneConfig(task={"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"]}, world=str(world),
                         student=TINY_STUDENT, td={"method": "baseline", "vqa_distractors": 5}, fraction=0.5)
    run_finetune(cfg, tmp_path / "run", trainer=no_training, log=lambda s: None)
    train_data, _, train_ex = cell_data(cfg, TaskReader(lambda s: None))
    pol = seen["policy"]
    assert (pol.mode, pol.distractors) == ("question_type", 5)
    assert pol.by_type == AnswerCandidates.fit(train_ex, train_data.meta,
                                               VQA.answer_vocab(train_ex, cfg.task.max_answers)).by_type
    assert len(train_ex) < len(train_data.examples)  # fitted on the half subset, not the whole split


@pytest.mark.parametrize("bad", [{"vqa_candidates": "question-type"}, {"vqa_candidates": "types"},
                                 {"vqa_distractors": -1}])
def test_the_typed_config_refuses_a_bad_candidate_option(bad):
    with pytest.raises(ValidationError, match=next(iter(bad))):
        TDConfig(**bad)


def test_snli_ve_and_vcr_have_no_candidate_policy():
    assert task_kind("snli_ve").candidate_policy(TRAIN, META, VOCAB, TDConfig()) is None
    assert task_kind("vcr").candidate_policy(TRAIN, META, VOCAB, TDConfig()) is None


def test_a_recorded_vqa_cell_without_the_option_ran_with_frequent_candidates():
    from clipdistill.errors import ManifestMismatch
    from clipdistill.td.protocol import _check_same, _with_new_defaults

    def cell(kind, **td):
        ft = FinetuneConfig(task={"name": kind, "kind": kind, "folder": TASKS[kind]}, td={"method": "clip_td", **td})
        return ft.model_dump(mode="json")

    for kind in ("vqa", "snli_ve"):
        old = cell(kind)
        del old["td"]["vqa_candidates"]  # as cells were recorded before the option
        filled = _with_new_defaults(old)
        if kind == "vqa":  # reused only under the candidates it ran with
            assert filled["td"]["vqa_candidates"] == "frequent"
            _check_same(filled, _with_new_defaults(cell(kind, vqa_candidates="frequent")), "cell")
            with pytest.raises(ManifestMismatch, match="td.vqa_candidates='frequent'"):
                _check_same(filled, _with_new_defaults(cell(kind)), "cell")
        else:  # SNLI-VE never reads it: its old cells stay valid under the default
            _check_same(filled, _with_new_defaults(cell(kind)), "cell")


def test_a_cell_without_a_teacher_stays_valid_under_other_candidates():
    from clipdistill.errors import ManifestMismatch
    from clipdistill.td.protocol import _check_same, _identity, _with_new_defaults

    def cell(method, **td):
        ft = FinetuneConfig(task={"name": "vqa", "kind": "vqa", "folder": TASKS["vqa"]}, td={"method": method, **td})
        return _with_new_defaults(ft.model_dump(mode="json"))

    old = cell("baseline", vqa_candidates="frequent", vqa_distractors=3)
    _check_same(_identity(old, False), _identity(cell("baseline"), False), "cell")  # the baseline read neither
    with pytest.raises(ManifestMismatch, match="td.vqa_candidates"):
        _check_same(_identity(cell("clip_td", vqa_candidates="frequent"), True), _identity(cell("clip_td"), True),
                    "cell")
    with pytest.raises(ManifestMismatch, match="td.lam"):  # other td options are still compared
        _check_same(_identity(old, False), _identity(cell("baseline", lam=0.5), False), "cell")


def test_vcr_reads_all_its_choices_as_before(world, teacher):
    from clipdistill.td.examples import vcr_items

    items = [it for ex in open_examples(world, "vcr")[:2] for it in vcr_items(ex)]
    task = TDTask("vcr", VLStudent(VLStudentConfig(**TINY_STUDENT)), TDConfig(), teacher)
    batch = Collator("vcr", task.student, teacher)(items)
    probs = task._teacher_signals(batch).probs
    n = len(items[0].candidates)
    img = teacher.encode_image(torch.stack([teacher.eval_transform(it.example.load_image()) for it in items]))
    cand = teacher.encode_text(batch.teacher.cand_ids).view(len(items), n, -1)
    sims = torch.einsum("bd,bcd->bc", torch.nn.functional.normalize(img, dim=-1),
                        torch.nn.functional.normalize(cand, dim=-1))
    torch.testing.assert_close(probs, (teacher.logit_scale * sims).softmax(-1), rtol=1e-4, atol=1e-5)
