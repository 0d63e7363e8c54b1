"""`td.head_bias`: with `prior` (the default) the task head's output bias starts at the training subset's answer
statistics, so an untrained head answers like the answer prior instead of by its random init; `random` keeps
nn.Linear's init, as cells ran before the option."""

import pytest
import torch
from pydantic import ValidationError
from td_helpers import TASKS, TINY_STUDENT

from clipdistill.errors import ManifestMismatch
from clipdistill.td.data import TaskReader
from clipdistill.td.heads import VE_LABELS, vqa_targets
from clipdistill.td.protocol import _check_same, _with_new_defaults
from clipdistill.td.runner import FinetuneConfig, cell_data, run_finetune
from clipdistill.td.task import TDConfig
from clipdistill.td.tasks import task_kind


def _untrained(world, tmp_path, kind: str, **td):
    """The task a finetune run hands its trainer (nothing trains), and the run's training subset."""
    seen = {}

    def no_training(task, loader_factory, train_cfg, run_dir):
        seen["task"] = task
        return run_dir

    cfg = FinetuneConfig(task={"name": kind, "kind": kind, "folder": TASKS[kind]}, world=str(world),
                         student=TINY_STUDENT, td={"method": "baseline", **td}, fraction=0.5)
    run_finetune(cfg, tmp_path / f"{kind}-{td.get('head_bias', 'default')}", trainer=no_training, log=lambda s: None)
    return seen["task"], cell_data(cfg, TaskReader(lambda s: None))[2]


def test_vqa_head_starts_at_each_answers_mean_soft_score(world, tmp_path):
    task, train = _untrained(world, tmp_path, "vqa")
    index = {a: i for i, a in enumerate(task.vocab)}
    share = torch.stack([vqa_targets(ex.answers, index) for ex in train]).mean(0)
    torch.testing.assert_close(torch.sigmoid(task.head.output.bias.detach()), share.clamp(1e-6, 1 - 1e-6))
    # with the output weights zeroed the untrained head answers the subset's most frequent answer for every image
    with torch.no_grad():
        task.head.output.weight.zero_()
    top = task.head(torch.randn(5, task.student.width)).argmax(-1)
    assert set(top.tolist()) == {int(share.argmax())}


def test_snli_ve_head_starts_at_the_class_shares(world, tmp_path):
    task, train = _untrained(world, tmp_path, "snli_ve")
    counts = torch.bincount(torch.tensor([ex.label for ex in train]), minlength=len(VE_LABELS)).double() + 0.5
    torch.testing.assert_close(torch.softmax(task.head.output.bias.detach().double(), 0), counts / counts.sum())


def test_the_prior_bias_draws_nothing_and_changes_only_the_output_bias(world, tmp_path):
    prior, _ = _untrained(world, tmp_path, "vqa")
    rand, _ = _untrained(world, tmp_path, "vqa", head_bias="random")
    a = {**prior.student.state_dict(), **{f"head.{k}": v for k, v in prior.head.state_dict().items()}}
    b = {**rand.student.state_dict(), **{f"head.{k}": v for k, v in rand.head.state_dict().items()}}
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert differ == ["head.net.3.bias"]


def test_multiple_choice_has_no_prior_bias(world, tmp_path):
    task, train = _untrained(world, tmp_path, "vcr")
    assert task_kind("vcr").prior_bias(train, task.vocab, 1) is None


def test_the_typed_config_refuses_an_unknown_head_bias():
    with pytest.raises(ValidationError, match="head_bias"):
        TDConfig(head_bias="zero")


@pytest.mark.parametrize("kind", ["vqa", "snli_ve"])
def test_a_recorded_cell_without_the_option_ran_with_the_random_bias(kind):
    def cell(**td):
        ft = FinetuneConfig(task={"name": kind, "kind": kind, "folder": TASKS[kind]}, td={"method": "baseline", **td})
        return ft.model_dump(mode="json")

    old = cell()
    del old["td"]["head_bias"]  # as cells were recorded before the option
    filled = _with_new_defaults(old)
    assert filled["td"]["head_bias"] == "random"
    _check_same(filled, _with_new_defaults(cell(head_bias="random")), "cell")
    with pytest.raises(ManifestMismatch, match="td.head_bias='random'"):
        _check_same(filled, _with_new_defaults(cell()), "cell")
