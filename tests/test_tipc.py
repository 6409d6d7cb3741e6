"""The shared TIPC runner: prepare + the lite chain of a method folder (OrthoAD, the fastest) end to end."""
import os
import subprocess

from conftest import REPO_ROOT

METHOD = os.path.join(REPO_ROOT, "OrthoAD-paddle")
CONFIG = os.path.join(METHOD, "test_tipc", "configs", "OrthoAD", "train_infer_python.txt")


def test_lite_train_lite_infer_chain(tmp_path):
    text = open(CONFIG, encoding="utf-8").read()
    text = text.replace("./test_tipc/data", str(tmp_path / "data")).replace("./test_tipc/output", str(tmp_path / "out"))
    config = tmp_path / "train_infer_python.txt"
    config.write_text(text)
    env = dict(os.environ, TIPC_LOG_DIR=str(tmp_path / "logs"))
    for script in ("prepare.sh", "test_train_inference_python.sh"):
        run = subprocess.run(["bash", os.path.join("test_tipc", script), str(config), "lite_train_lite_infer"],
                             cwd=METHOD, env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
    lines = (tmp_path / "logs" / "results_python.log").read_text().splitlines()
    # train, eval, export, then infer over oneDNN {True, False} x batch {1, 2}
    assert len(lines) == 7 and all(line.startswith("Run successfully with command - ") for line in lines)
    assert sum("--use_mkldnn False --batch_size 2" in line for line in lines) == 1
    assert (tmp_path / "out" / "OrthoAD" / "results" / "OrthoAD_bottle.json").is_file()
    assert (tmp_path / "logs" / "infer_use_mkldnn_True_batch_size_2" / "predictions.jsonl").is_file()


def test_unknown_mode_fails_cleanly(tmp_path):
    run = subprocess.run(["bash", "test_tipc/prepare.sh", CONFIG, "no_such_mode"], cwd=METHOD, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "unsupported mode" in run.stderr
