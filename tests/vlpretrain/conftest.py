"""A tiny world and a tiny ViLT config for the vlpretrain tests."""

from __future__ import annotations

import pytest

from clipdistill.world.build import build_world


@pytest.fixture(scope="session")
def vlp_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlp") / "world"
    build_world(root, "tiny", seed=0)
    return root
