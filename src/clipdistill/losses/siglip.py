"""SigLIP's pairwise sigmoid loss for the student (Zhai et al. 2023), equal to open_clip 3.3.0's `SigLipLoss`.

Every image-text pair is a binary problem: label +1 for the matched pair, -1 for every other, logit
`scale * cos + bias`; the loss is -sum(logsigmoid(label * logit)) over this rank's images against every text of
the global batch, divided by this rank's image count (open_clip's normalisation; a full batch on one process gives
the mean of the ranks' values). The scale and bias are the student's own for a SigLIP-architecture student, else the
loss-owned learnable pair of `WeightedLoss` (init log(10) and -10, open_clip's `--siglip`).

Across ranks the other ranks' texts come as negatives, by open_clip's `dist_impl` choices: `bidir` (texts pass
both ways round the ring, its default), `shift` (one way), `gather` (all-gather once). All give the same value and
gradients; the exchanges never hold the whole batch's texts at once. Unlike open_clip's exchange, ours receives
each shard at its own row count, so ranks that lost samples to bad data still pair up. open_clip's fourth choice,
`reduce` (an all-reduce per rank), is not offered: same numbers as `gather` at more traffic.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.autograd import Function

from clipdistill.losses.base import DistillLoss, LossOptions, register_loss
from clipdistill.losses.features import S_IMG, S_TXT, FeatureView


class SigLipOptions(LossOptions):
    dist_impl: Literal["bidir", "shift", "gather"] = "bidir"


def sigmoid_pair_loss(img: torch.Tensor, txt: torch.Tensor, scale, bias, positives: bool) -> torch.Tensor:
    """open_clip `SigLipLoss._loss`: -logsigmoid(labels * (scale * img @ txt.T + bias)).sum() / rows; labels -1
    everywhere and +1 on the diagonal when `txt` holds the rows' own captions (`positives`)."""
    logits = scale * img @ txt.T + bias
    labels = -torch.ones_like(logits)
    if positives:
        labels = labels + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(labels * logits).sum() / img.shape[0]


@register_loss("siglip")
class SigLip(DistillLoss):
    """Sigmoid image-text loss of the student's own pairs (`siglip`), the SigLIP counterpart of `clip`."""

    Options = SigLipOptions

    def uses_student_sigmoid(self) -> bool:
        return True

    def forward(self, f: FeatureView) -> torch.Tensor:
        scale, bias = f.sigmoid(self.name)
        img, txt = f.local(S_IMG), f.local(S_TXT)
        loss = sigmoid_pair_loss(img, txt, scale, bias, positives=True)
        ctx = f.ctx
        if ctx.world_size == 1:
            return loss
        W, r = ctx.world_size, ctx.rank
        sizes = ctx.sizes or (img.shape[0],) * W
        if self.opts.dist_impl == "gather":
            everyone = f.all(S_TXT).split(list(sizes))
            for i, part in enumerate(everyone):
                if i != r:
                    loss = loss + sigmoid_pair_loss(img, part, scale, bias, positives=False)
            return loss
        left, right = (r - 1) % W, (r + 1) % W
        if self.opts.dist_impl == "shift":
            to_right = txt
            for k in range(1, W):  # after hop k this rank holds rank r-k's texts
                to_right = _Exchange.apply(to_right, right, left, sizes[(r - k) % W])
                loss = loss + sigmoid_pair_loss(img, to_right, scale, bias, positives=False)
            return loss
        to_left = to_right = txt
        pairs, remainder = divmod(W - 1, 2)
        for k in range(1, pairs + 1):  # hop k brings rank r+k's texts from the right and r-k's from the left
            from_right, from_left = _ExchangeBidir.apply(
                to_left, to_right, left, right, sizes[(r - k) % W], sizes[(r + k) % W]
            )
            loss = loss + sigmoid_pair_loss(img, from_right, scale, bias, positives=False)
            loss = loss + sigmoid_pair_loss(img, from_left, scale, bias, positives=False)
            to_left, to_right = from_right, from_left
        if remainder:  # an even world: the one shard left over comes from the left
            from_left = _Exchange.apply(to_right, right, left, sizes[(r - pairs - 1) % W])
            loss = loss + sigmoid_pair_loss(img, from_left, scale, bias, positives=False)
        return loss


def _p2p(sends: list[tuple[torch.Tensor, int]], recvs: list[tuple[torch.Tensor, int]]) -> None:
    ops = [dist.P2POp(dist.isend, t.contiguous(), peer) for t, peer in sends]
    ops += [dist.P2POp(dist.irecv, t, peer) for t, peer in recvs]
    for req in dist.batch_isend_irecv(ops):
        req.wait()


class _Exchange(Function):
    """Send `x` to rank `to` and receive `rows` rows from rank `frm` (one hop round the ring); the backward sends
    each gradient back the way its tensor came (open_clip's `NeighbourExchange`, with a known receive size)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, to: int, frm: int, rows: int) -> torch.Tensor:
        ctx.to, ctx.frm, ctx.rows = to, frm, x.shape[0]
        out = x.new_empty(rows, *x.shape[1:])
        _p2p([(x, to)], [(out, frm)])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        back = grad.new_empty(ctx.rows, *grad.shape[1:])
        _p2p([(grad, ctx.frm)], [(back, ctx.to)])
        return back, None, None, None


class _ExchangeBidir(Function):
    """Both directions at once (open_clip's `NeighbourExchangeBidir`): send `to_left` left and `to_right` right,
    return (what the right neighbour sent left, what the left neighbour sent right)."""

    @staticmethod
    def forward(ctx, to_left, to_right, left: int, right: int, rows_from_left: int, rows_from_right: int):
        ctx.left, ctx.right, ctx.rows = left, right, (to_left.shape[0], to_right.shape[0])
        from_left = to_right.new_empty(rows_from_left, *to_right.shape[1:])
        from_right = to_left.new_empty(rows_from_right, *to_left.shape[1:])
        _p2p([(to_left, left), (to_right, right)], [(from_right, right), (from_left, left)])
        return from_right, from_left

    @staticmethod
    def backward(ctx, g_from_right, g_from_left):
        g_to_left = g_from_left.new_empty(ctx.rows[0], *g_from_left.shape[1:])
        g_to_right = g_from_right.new_empty(ctx.rows[1], *g_from_right.shape[1:])
        _p2p([(g_from_right, ctx.right), (g_from_left, ctx.left)], [(g_to_left, ctx.left), (g_to_right, ctx.right)])
        return g_to_left, g_to_right, None, None, None, None
