"""Image-text retrieval recall@k (CLIP_benchmark's definition), computed in chunks.

CLIP_benchmark builds the full [texts x images] score matrix and, per query, asks whether any
positive is among the top-k targets. With 100k images x 500k captions that matrix does not fit, so
we compute, per query, the *rank of its best positive* (how many negatives score above it), one
[chunk x chunk] block at a time: recall@k is then `mean(rank < k)` for every k at once, and memory
is O(chunk^2) whatever the set size.

Names follow CLIP_benchmark: `image_retrieval_recall@k` = text -> image (the query is a caption,
its one positive is its image); `text_retrieval_recall@k` = image -> text (a hit when any of the
image's captions is in the top k).

Ties: scores within `tie_tol` of the best positive count as ties and the lower target index ranks
first (the order a stable sort gives). `torch.topk` in CLIP_benchmark leaves tie order unspecified,
so the two agree exactly whenever no negative ties with a positive at the k-th place.
"""

from __future__ import annotations

import torch

from clipdistill.evaluation.datasets import RetrievalSet
from clipdistill.evaluation.features import encode_images, encode_texts
from clipdistill.evaluation.results import make_record
from clipdistill.zoo import ClipModel

TASK = "zeroshot_retrieval"
DEFAULT_KS = (1, 5, 10)


def _count_above(queries: torch.Tensor, targets: torch.Tensor, query_group: torch.Tensor,
                 target_group: torch.Tensor, best: torch.Tensor, best_col: torch.Tensor, chunk: int,
                 tie_tol: float) -> torch.Tensor:
    """Per query: negatives scoring above its best positive (ties: lower target index first)."""
    ranks = torch.zeros(len(queries), dtype=torch.long)
    for qs in range(0, len(queries), chunk):
        q, qg = queries[qs:qs + chunk], query_group[qs:qs + chunk]
        b, bc = best[qs:qs + chunk, None], best_col[qs:qs + chunk, None]
        for ts in range(0, len(targets), chunk):
            diff = q @ targets[ts:ts + chunk].T - b
            cols = torch.arange(ts, ts + diff.shape[1])[None, :]
            above = (diff > tie_tol) | ((diff.abs() <= tie_tol) & (cols < bc))
            is_pos = qg[:, None] == target_group[None, ts:ts + chunk]
            ranks[qs:qs + chunk] += (above & ~is_pos).sum(dim=1)
    return ranks


def retrieval_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, *,
                    chunk: int = 2048, tie_tol: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(text->image ranks [T], image->text ranks [I]) from (already normalised) embeddings.

    `text_image[t]` is the index of the image caption t belongs to; every image needs >= 1 caption.
    """
    if len(text_image) != len(text_emb):
        raise ValueError("text_image must give one image index per caption")
    n_img, n_txt = len(image_emb), len(text_emb)
    if torch.bincount(text_image, minlength=n_img).min() == 0:
        raise ValueError("every image needs at least one caption")
    image_ids, text_ids = torch.arange(n_img), torch.arange(n_txt)
    pair = (text_emb * image_emb[text_image]).sum(dim=1)  # score of each caption with its own image
    # image -> text: the best of an image's captions, and the first caption reaching it
    best = torch.full((n_img,), float("-inf"), dtype=pair.dtype).scatter_reduce(0, text_image, pair, "amax")
    is_best = pair == best[text_image]
    best_col = torch.full((n_img,), n_txt).scatter_reduce(0, text_image[is_best], text_ids[is_best], "amin")
    t2i = _count_above(text_emb, image_emb, text_image, image_ids, pair, text_image, chunk, tie_tol)
    i2t = _count_above(image_emb, text_emb, image_ids, text_image, best, best_col, chunk, tie_tol)
    return t2i, i2t


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor,
                ks: tuple[int, ...] = DEFAULT_KS, *, chunk: int = 2048, tie_tol: float = 1e-6) -> dict[str, float]:
    """CLIP_benchmark's retrieval metrics for each k."""
    t2i, i2t = retrieval_ranks(image_emb, text_emb, text_image, chunk=chunk, tie_tol=tie_tol)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (t2i < k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (i2t < k).float().mean().item()
    return metrics


def retrieval_eval(model: ClipModel, dataset: RetrievalSet, *, ks: tuple[int, ...] = DEFAULT_KS,
                   batch_size: int = 64, num_workers: int = 0, device: str = "cpu", chunk: int = 2048,
                   progress: bool = True) -> dict:
    """Encode images and all their captions, score recall@k, return the result record."""
    enc = encode_images(model, dataset, batch_size=batch_size, num_workers=num_workers, device=device,
                        progress=progress)
    kept = enc.index.tolist()  # undecodable images and their captions leave the set together
    captions = [c for i in kept for c in dataset.captions[i]]
    text_image = torch.tensor([row for row, i in enumerate(kept) for _ in dataset.captions[i]])
    text_emb, text_seconds = encode_texts(model, captions, device=device)
    metrics = recall_at_k(enc.features, text_emb, text_image, ks, chunk=chunk)
    return make_record(
        model, dataset=dataset.name, task=TASK, metrics=metrics, data_fingerprint=dataset.fingerprint(),
        samples=len(kept), skipped=enc.skipped, captions=len(captions), recall_k=list(ks),
        efficiency={"image_encode_per_s": len(kept) / max(enc.encode_seconds, 1e-9),
                    "text_encode_per_s": len(captions) / max(text_seconds, 1e-9), "batch_size": batch_size,
                    "device": device},
    )
