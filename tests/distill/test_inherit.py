import pytest
import torch

from clipdistill.distill.inherit import _attention, inherit_weights, layer_map
from clipdistill.errors import UserError
from clipdistill.zoo import load_model


def test_layer_maps_hand_values():
    assert layer_map(4, 6, "interval_front") == [0, 1, 2, 3]
    assert layer_map(4, 6, "even") == [0, 1, 3, 4]
    assert layer_map(2, 6, "interval_front") == [0, 3]
    with pytest.raises(UserError, match="more layers"):
        layer_map(4, 2, "even")


def test_attention_keeps_first_heads_of_q_k_v():
    # teacher: 2 heads x 2 dims, width 4; student: 1 head x 2 dims, width 2
    t = torch.arange(12 * 4, dtype=torch.float32).reshape(12, 4)
    s = _attention(t, torch.Size([6, 2]), heads_t=2, heads_s=1)
    # rows kept: q head0 = rows 0,1; k head0 = rows 4,5; v head0 = rows 8,9; columns 0,1
    assert torch.equal(s, t[[0, 1, 4, 5, 8, 9]][:, :2])
    b = _attention(torch.arange(12.0), torch.Size([6]), 2, 1)
    assert b.tolist() == [0, 1, 4, 5, 8, 9]


def test_student_inherits_from_teacher_leading_slices():
    teacher, student = load_model("open_clip:cd-teacher-64"), load_model("open_clip:cd-student-s-64")
    info = inherit_weights(student.inner, teacher.inner, "even")
    assert info["layers_visual.transformer.resblocks"] == 4 and info["layers_transformer.resblocks"] == 4
    s, t = student.inner.state_dict(), teacher.inner.state_dict()
    # student visual layer 2 <- teacher layer 3 (even rule), leading 128 of 256 channels
    key = "visual.transformer.resblocks.{}.mlp.c_fc.weight"
    assert torch.equal(s[key.format(2)], t[key.format(3)][:512, :128])
    assert torch.equal(s["token_embedding.weight"], t["token_embedding.weight"][:, :128])
    assert torch.equal(s["logit_scale"], t["logit_scale"])


def test_inherit_refuses_other_image_geometry():
    teacher, student = load_model("open_clip:cd-teacher-64"), load_model("open_clip:cd-student-s-32")
    with pytest.raises(UserError, match="image geometry"):
        inherit_weights(student.inner, teacher.inner)
