import sys
from pathlib import Path

import pytest

import clipdistill  # noqa: F401  (torchvision shim first)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "train"))  # reuse the loop tests' toy task and DDP helpers

from rel_helpers import write_pairs  # noqa: E402


@pytest.fixture(scope="session")
def pairs(tmp_path_factory) -> Path:
    """32 good 64 px image-caption pairs as a CSV source."""
    return write_pairs(tmp_path_factory.mktemp("pairs"), 32)
