"""`balance --device cuda` on a machine where the GPU half of the stack is missing."""

from __future__ import annotations

import pytest
from rel_cases import case
from rel_helpers import run_main, synthetic_feature_store


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
    store = synthetic_feature_store(tmp_path / "feats")
    code, out = run_main("balance", "--features", str(store), "--out", str(tmp_path / "bal"), "--clusters", "2",
                         "--device", "cuda")
    who = "torch sees no CUDA device" if faiss_gpus else "faiss sees no GPU"
    assert code == 2 and f"--device cuda but {who}" in out and "Traceback" not in out, out
    assert not (tmp_path / "bal" / "kept_keys.txt").exists() and not (tmp_path / "bal" / "manifest.json").exists()
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    code, out = run_main("balance", "--features", str(store), "--out", str(tmp_path / "bal"), "--clusters", "2",
                         "--device", "auto")
    assert code == 0 and (tmp_path / "bal" / "kept_keys.txt").is_file(), out
