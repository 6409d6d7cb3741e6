"""The shared TIPC runner: prepare + the lite chain (train, eval, export, infer over the swept options) of every
method folder, end to end."""
import glob
import os
import subprocess

import pytest

from method_harness import METHODS, folder


def tipc_config(package):
    configs = glob.glob(os.path.join(folder(package), "test_tipc", "configs", "*", "train_infer_python.txt"))
    assert len(configs) == 1, configs
    return configs[0]


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(METHODS))
def test_lite_train_lite_infer_chain(package, tmp_path):
    text = open(tipc_config(package), encoding="utf-8").read()
    text = text.replace("./test_tipc/data", str(tmp_path / "data")).replace("./test_tipc/output", str(tmp_path / "out"))
    config = tmp_path / "train_infer_python.txt"
    config.write_text(text)
    env = dict(os.environ, TIPC_LOG_DIR=str(tmp_path / "logs"))
    for script in ("prepare.sh", "test_train_inference_python.sh"):
        run = subprocess.run(["bash", os.path.join("test_tipc", script), str(config), "lite_train_lite_infer"],
                             cwd=folder(package), env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = (tmp_path / "logs" / "results_python.log").read_text().splitlines()
    # train, eval, export, then infer over the swept options (oneDNN on/off x a second option)
    assert len(lines) == 7 and all(line.startswith("Run successfully with command - ") for line in lines), lines
    assert sum("--use_mkldnn False" in line for line in lines) == 2
    assert glob.glob(str(tmp_path / "out" / "*" / "results" / "*_bottle.json"))
    assert glob.glob(str(tmp_path / "logs" / "infer_use_mkldnn_True_*" / "predictions.jsonl"))


def test_unknown_mode_fails_cleanly():
    run = subprocess.run(["bash", "test_tipc/prepare.sh", tipc_config("orthoad"), "no_such_mode"],
                         cwd=folder("orthoad"), capture_output=True, text=True)
    assert run.returncode == 2 and "unsupported mode" in run.stderr
