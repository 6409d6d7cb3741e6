"""scripts/reproduce.sh: classes in parallel (two CPU workers here, one per GPU on a GPU machine), resumable, a
failing class reported while the others finish, the table at the end with "not run" for missing classes."""
import os
import subprocess

import pytest

from common.data.synthetic import make_dataset
from conftest import REPO_ROOT


@pytest.mark.slow
def test_two_workers_skip_finished_classes_and_survive_a_failing_one(tmp_path):
    data = tmp_path / "data"
    make_dataset(str(data), ("bottle", "carpet", "grid"), size=64, n_train=8, n_test_good=2, n_test_defect=1)
    with open(data / "grid" / "train" / "good" / "002.png", "r+b") as handle:
        handle.truncate(100)  # grid fails while reading its training images
    env = dict(os.environ, DATA_DIR=str(data), OUTPUT_DIR=str(tmp_path / "out"), LOG_DIR=str(tmp_path / "logs"))
    command = ["bash", "scripts/reproduce.sh", "orthoad", "--workers", "2", "--threads", "1", "--",
               "--config", "configs/tiny.yaml"]
    first = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "[grid] FAILED: train failed (error: " in first.stderr and "002.png" in first.stderr
    for cls in ("bottle", "carpet"):
        assert (tmp_path / "out" / "results" / f"OrthoAD_{cls}.json").is_file()
        assert (tmp_path / "logs" / f"{cls}_eval.log").is_file()
    assert "| grid | not run |" in first.stdout and "| bottle | " in first.stdout

    second = subprocess.run(command + [], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert "[bottle] results exist: skipped" in second.stdout and "[carpet] results exist: skipped" in second.stdout
    assert "[grid] train on cpu" in second.stdout and second.returncode == 1
