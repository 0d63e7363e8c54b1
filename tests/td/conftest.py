import sys
from pathlib import Path

import pytest
import torch

import clipdistill  # noqa: F401  (torchvision shim first)

sys.path.insert(0, str(Path(__file__).parent))
from td_helpers import build_tiny_world  # noqa: E402


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """These models are tiny: one thread is as fast, and far faster when other jobs share the cores (OpenMP
    threads spinning against each other made a step ~10x slower on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    return build_tiny_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="session")
def teacher():
    from clipdistill.zoo import load_model

    return load_model("open_clip:cd-student-xs-32")
