"""`balance --device cuda` on a machine where the GPU half of the stack is missing."""

from __future__ import annotations

import numpy as np
import pytest
from rel_cases import case
from rel_helpers import run_main

from clipdistill.features.store import shard_name, write_shard
from clipdistill.manifest import write_manifest


def _store(root):
    x = np.random.default_rng(0).standard_normal((40, 8)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    write_shard(root, 0, [f"k{i}" for i in range(40)], {"image": x, "text": x}, None, {})
    write_manifest(root, "embed", teacher={"spec": "synthetic", "embed_dim": 8},
                   source={"spec": "synthetic", "fingerprint": "fp"}, shards=[shard_name(0)],
                   fields=["image", "text"], counts={"samples": 40, "skipped": 0, "shards": 1}, skips={})
    return root


@case("config", "`balance --device cuda` where faiss sees no GPU (faiss-cpu), or faiss does but torch has no CUDA "
      "(the de-dup's similarity blocks run in torch)",
      "`error: --device cuda but faiss sees no GPU ...` / `error: --device cuda but torch sees no CUDA device ...` "
      "(exit 2), no balance output written; `--device auto` runs on CPU")
@pytest.mark.parametrize("faiss_gpus", [0, 1])
def test_cuda_asked_without_a_gpu(tmp_path, monkeypatch, faiss_gpus):
    import faiss
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible here")
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: faiss_gpus, raising=False)
    store = _store(tmp_path / "feats")
    code, out = run_main("balance", "--features", str(store), "--out", str(tmp_path / "bal"), "--clusters", "2",
                         "--device", "cuda")
    who = "torch sees no CUDA device" if faiss_gpus else "faiss sees no GPU"
    assert code == 2 and f"--device cuda but {who}" in out and "Traceback" not in out, out
    assert not (tmp_path / "bal" / "kept_keys.txt").exists() and not (tmp_path / "bal" / "manifest.json").exists()
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    code, out = run_main("balance", "--features", str(store), "--out", str(tmp_path / "bal"), "--clusters", "2",
                         "--device", "auto")
    assert code == 0 and (tmp_path / "bal" / "kept_keys.txt").is_file(), out
