"""Shared pytest fixtures.

Real-photo tests reach the COCO-2017 subset through `coco_tiny_dir`; set
TFMASKRCNN_COCO_TINY to point elsewhere. Tests that need it are skipped with a
clear reason when it is absent, so the suite stays runnable on a bare checkout.
"""

from __future__ import annotations

import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_COCO_TINY = REPO_ROOT.parent / "shared" / "data" / "coco_tiny"


@pytest.fixture(scope="session")
def coco_tiny_dir() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("TFMASKRCNN_COCO_TINY", DEFAULT_COCO_TINY))
    if not (path / "annotations" / "instances_train2017.json").exists():
        pytest.skip(f"COCO tiny subset not found at {path}; set TFMASKRCNN_COCO_TINY")
    return path
