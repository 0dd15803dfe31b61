"""Shared fixtures. Real data lives in ../shared/data beside the repository (CI and developers
have it; a user's clone usually does not, and those tests skip saying so)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VGANBENCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Tests run on 2 cores next to other work: keep torch from oversubscribing.
os.environ.setdefault("VGANBENCH_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "ucfTrainTestlist" / "classInd.txt").is_file():
        pytest.skip(f"real UCF101 data not found at {SHARED_DATA} (set VGANBENCH_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def ucf_lists(shared_data) -> Path:
    return shared_data / "ucfTrainTestlist"


@pytest.fixture(scope="session")
def ucf_videos(shared_data) -> Path:
    root = shared_data / "UCF-101"
    if not root.is_dir():
        pytest.skip(f"no real UCF101 clips under {root}")
    return root
