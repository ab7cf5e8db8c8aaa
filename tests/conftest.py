"""Shared test set-up: quiet TensorFlow, CPU only, and the path to ../shared."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_SPLITS = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "activitynet_reloc"))


@pytest.fixture(scope="session")
def shared_splits_dir():
    """The benchmark split files, read in place from ../shared (never copied)."""
    assert os.path.isdir(SHARED_SPLITS), f"{SHARED_SPLITS} is missing: tests read ../shared/ beside the repo"
    return SHARED_SPLITS
