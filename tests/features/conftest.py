"""Fixtures for the feature store / balance tests: the tiny world, a saved tiny teacher, synthetic stores."""

from __future__ import annotations

from pathlib import Path

import pytest

import clipdistill  # noqa: F401  (torchvision shim first)

ARCH = "open_clip:cd-student-xs-32"


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    from clipdistill.world import build_world

    root = tmp_path_factory.mktemp("world") / "tiny"
    build_world(root, "tiny", seed=0)
    return root


@pytest.fixture(scope="session")
def teacher(tmp_path_factory) -> str:
    """A tiny teacher with saved weights: the same in every process (a random init is not)."""
    from safetensors.torch import save_file

    from clipdistill.zoo import load_model

    path = tmp_path_factory.mktemp("teacher") / "t.safetensors"
    save_file({k: v.contiguous() for k, v in load_model(ARCH).inner.state_dict().items()}, str(path))
    return f"{ARCH}@{path}"
