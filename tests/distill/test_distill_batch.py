"""`DistillBatch.from_loader`: the loader batch's views become the student's and each online member's view,
its skip counts come along, and a teacher mode the views do not fit is refused."""

from __future__ import annotations

import pytest
import torch

from clipdistill.data import LoaderBatch, SkipCounter, View
from clipdistill.distill.batch import DistillBatch, TeacherMode
from clipdistill.features import CachedFeatures


def loaded(views: int) -> LoaderBatch:
    return LoaderBatch(["a", "b"], ["one", "two"], torch.tensor([4, 7]),
                       tuple(View(torch.full((2, 3, 4, 4), float(i)), torch.full((2, 5), i)) for i in range(views)),
                       SkipCounter(zero_byte=2), 4)


def test_online_views_are_the_student_then_each_member():
    src = loaded(3)
    b = DistillBatch.from_loader(src, TeacherMode.ONLINE)
    assert b.student is src.views[0] and len(b.teachers) == 2
    assert all(t is v for t, v in zip(b.teachers, src.views[1:], strict=True))
    assert b.keys == ["a", "b"] and b.index.tolist() == [4, 7] and len(b) == 2
    assert b.skips == {"zero_byte": 2} and b.cached is None and b.cluster_labels is None
    moved = b.to(torch.device("meta"))
    assert moved.student.image.is_meta and all(t.text.is_meta for t in moved.teachers) and moved.index.is_meta
    assert moved.skips == b.skips and moved.keys == b.keys


def test_cached_batch_takes_the_features_and_labels_it_is_given():
    feats = CachedFeatures(torch.randn(2, 8), torch.randn(2, 8), torch.tensor(100.0))
    b = DistillBatch.from_loader(loaded(1), TeacherMode.CACHED, cached=feats, cluster_labels=torch.tensor([1, 0]))
    assert b.teachers == [] and b.cached is feats and b.cluster_labels.tolist() == [1, 0]
    assert b.to(torch.device("meta")).cached.image.is_meta


@pytest.mark.parametrize("views, mode", [(2, TeacherMode.NONE), (1, TeacherMode.ONLINE), (2, TeacherMode.CACHED)])
def test_views_that_do_not_fit_the_teacher_mode_are_refused(views, mode):
    cached = CachedFeatures(torch.randn(2, 8), torch.randn(2, 8), torch.tensor(100.0))
    with pytest.raises(ValueError, match=f"a {mode.value} batch with {views - 1} teacher views"):
        DistillBatch.from_loader(loaded(views), mode, cached=cached if mode is TeacherMode.CACHED else None)
