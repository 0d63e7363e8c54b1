import pytest

import clipdistill  # noqa: F401  (torchvision shim first)
from clipdistill.world import build_world


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, "tiny", seed=0)
    return root
