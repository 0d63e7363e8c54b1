"""Shared test fixtures. Everything is tiny and built on the fly: no network, no downloads."""

from __future__ import annotations

import os

import torch

import clipdistill  # noqa: F401  (applies the torchvision shim before any test imports open_clip)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)  # CI has 2 cores; subprocess tests use the other one
