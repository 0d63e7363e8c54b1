"""The task model of an hf: ViLT student as a transformers folder (`task_model_hf/` of a fine-tune run):

- VQA -> `ViltForQuestionAnswering`, `id2label` / `label2id` = the answer vocabulary;
- SNLI-VE -> the same class with three labels (entailment, neutral, contradiction): its classifier is the MLP the
  student trained (heads.MLPClassifierHead); read `logits.argmax(-1)` as the class (softmax, not the sigmoid VQA
  scores, matches how it was trained);
- VCR -> `ViltForImageAndTextRetrieval`: one score per (image, question + candidate), argmax over an item's
  candidates.

The weights are the student's `ViltModel` and the task head, copied key for key (strict), saved as safetensors with
the tokenizer and a ViltImageProcessor carrying the normalisation the student was trained with. `max_image_length`
is set to -1 (every patch; a positive value makes ViLT sample patches at random). transformers gives the same logits
as the run's evaluation for the same `pixel_values` (the square crops of `HFViltStudent.image_transform`) and
`input_ids` / `attention_mask` from the saved tokenizer.
"""

from __future__ import annotations

import copy
from pathlib import Path

from clipdistill.errors import UserError
from clipdistill.safeload import honour_umask

FOLDER = "task_model_hf"


def export_vilt(task, run_dir: Path) -> Path:
    """Write `run_dir/task_model_hf/`; `task` is a TDTask whose student is an HFViltStudent."""
    from transformers import ViltForImageAndTextRetrieval, ViltForQuestionAnswering, ViltImageProcessor

    student, kind = task.student, task.task_kind
    config = copy.deepcopy(student.vilt.config)
    config.max_image_length = -1
    head = {k: v.detach().cpu() for k, v in task.head.state_dict().items()}
    labels = kind.label_names(task.vocab)
    if kind.vilt_class == "question_answering":
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
        model = ViltForQuestionAnswering(config)
        mapped = {f"classifier.{k[len('net.'):]}": v for k, v in head.items()}
    elif kind.vilt_class == "retrieval":
        model = ViltForImageAndTextRetrieval(config)
        mapped = {f"rank_output.{k[len('net.'):]}": v for k, v in head.items()}
    else:
        raise UserError(f"task kind {kind.name!r} has no transformers ViLT class to export to")
    state = {f"vilt.{k}": v.detach().cpu() for k, v in student.vilt.state_dict().items()}
    model.load_state_dict({**state, **mapped}, strict=True)
    out = run_dir / FOLDER
    model.save_pretrained(str(out), safe_serialization=True)
    honour_umask(out)  # save_pretrained's safetensors files are 0600 whatever the umask
    student.hf_tokenizer.save_pretrained(str(out))
    ViltImageProcessor(size={"shortest_edge": student.image_size}, size_divisor=student.patch_size,
                       image_mean=list(student.image_mean), image_std=list(student.image_std)).save_pretrained(str(out))
    return out
