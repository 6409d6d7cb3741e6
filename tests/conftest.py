"""Shared pytest fixtures: synthetic MVTec-layout data and the real bottle class when it is present."""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import common  # noqa: E402,F401 - sets the warning filters before paddle is imported
from common.data import synthetic  # noqa: E402

# ../shared/data beside the checkout (CI clones the repository next to shared/); override with MVTEC_256_DIR.
BOTTLE_PARENT = os.environ.get("MVTEC_256_DIR",
                               os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mvtec_ad_256"))


def method_dir(name):
    """Absolute path of a method folder, added to ``sys.path`` so its package can be imported."""
    path = os.path.join(REPO_ROOT, name)
    if path not in sys.path:
        sys.path.insert(0, path)
    return path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """Two synthetic classes (bottle: object-like, carpet: texture-like) at 64 px; do not modify."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.make_dataset(str(root), ("bottle", "carpet"), size=64, n_train=12, n_test_good=4, n_test_defect=2,
                           seed=0)
    return str(root)


@pytest.fixture(scope="session")
def bottle_root():
    """Folder holding the real MVTec AD ``bottle`` class at 256 px; skips when it is absent."""
    if not os.path.isdir(os.path.join(BOTTLE_PARENT, "bottle", "test")):
        pytest.skip(f"real MVTec AD bottle data not found at {BOTTLE_PARENT}")
    return BOTTLE_PARENT


@pytest.fixture
def paddle_download_log():
    """The records Paddle's download logger emits during a test, with the logger at INFO as a command line finds it
    (Paddle configures its loggers when some of its modules load, so in a test process the level depends on what
    ran before)."""
    import logging

    records = []
    handler = logging.Handler(level=logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger("paddle.utils.download")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)
