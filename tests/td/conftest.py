import sys
from pathlib import Path

import pytest

import clipdistill  # noqa: F401  (torchvision shim first)

sys.path.insert(0, str(Path(__file__).parent))
from td_helpers import write_tasksets  # noqa: E402


@pytest.fixture(scope="session")
def tasksets(tmp_path_factory):
    return write_tasksets(tmp_path_factory.mktemp("tasksets"))


@pytest.fixture(scope="session")
def teacher():
    from clipdistill.zoo import load_model

    return load_model("open_clip:cd-student-xs-32")
