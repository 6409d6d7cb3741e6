"""An interrupted run continues with one command, and ends as an uninterrupted run would (issue 25).

``main.py --mode train --cls c0,c1,c2`` (one process, as ``--cls all``) is killed with SIGKILL in the middle of the
second class, after its first saved state, then run again with ``--resume``: the finished class is reported done and
left, the interrupted one continues from its state, the one never started begins with one line. Then
``--mode eval``. Every class's weights (bit for bit), train log, thresholds and metrics must equal those of a run that
was never interrupted, and no temporary file may be left.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from common.data import synthetic
from conftest import REPO_ROOT
from method_harness import METHODS, folder, tiny_config

CLASSES = ("c0", "c1", "c2")
# per method: long enough a class to be killed in (several saved states), and the EfficientAD teacher fixed
OPTIONS = {
    "rd4ad": ("--epochs", 4, "--save_interval", 1),
    "kdad": ("--epochs", 3, "--save_interval", 1),
    "efficientad": ("--train_steps", 8, "--save_interval", 2, "--teacher_weights", "random"),
}


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    synthetic.make_dataset(str(root), CLASSES, size=64, n_train=8, n_test_good=2, n_test_defect=1, seed=5)
    return str(root)


def _main(package, mode, data_dir, output_dir, *extra):
    return [sys.executable, "main.py", "--mode", mode, "--cls", ",".join(CLASSES), "--data_dir", data_dir,
            "--output_dir", output_dir, "--threads", "2", *[str(a) for a in extra]]


def _run(package, argv):
    done = subprocess.run(argv, cwd=folder(package), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=REPO_ROOT), stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
    return done.stdout


def _kill_inside_second_class(package, argv, output_dir):
    """Start the training and SIGKILL it once the second class has saved its first state."""
    state = os.path.join(output_dir, CLASSES[1], "train_state.pdparams")
    child = subprocess.Popen(argv, cwd=folder(package), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONPATH=REPO_ROOT), stdin=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while not os.path.isfile(state):
            assert child.poll() is None, f"the training ended (code {child.returncode}) before it could be killed"
            assert time.time() < deadline, "no state of the second class within 300 s"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL


def _weights(path):
    def flatten(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
        return {prefix[:-1]: np.asarray(value.numpy() if hasattr(value, "numpy") else value)}

    state = paddle.load(path)
    return flatten({k: v for k, v in state.items() if k not in ("config", "meta")})


def _json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(OPTIONS))
def test_killed_in_one_process_and_resumed_ends_as_an_uninterrupted_run(package, three_classes, tmp_path):
    options = ("--config", tiny_config(package), *OPTIONS[package])
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    _run(package, _main(package, "train", three_classes, straight, *options))

    _kill_inside_second_class(package, _main(package, "train", three_classes, killed, *options), killed)
    assert not os.path.exists(os.path.join(killed, CLASSES[2]))  # the third class never started
    out = _run(package, _main(package, "train", three_classes, killed, *options, "--resume"))
    assert f"[{CLASSES[0]}] already trained" in out  # finished: left as it is
    assert f"[{CLASSES[1]}] resuming from" in out
    assert f"[{CLASSES[2]}] --resume: no training state" in out and "from the beginning" in out
    for output_dir in (straight, killed):
        _run(package, _main(package, "eval", three_classes, output_dir))

    checkpoint = {"rd4ad": "rd4ad.pdparams", "kdad": "kdad.pdparams", "efficientad": "efficientad.pdparams"}[package]
    for cls in CLASSES:
        ours, theirs = (os.path.join(d, cls) for d in (killed, straight))
        weights, expected = _weights(os.path.join(ours, checkpoint)), _weights(os.path.join(theirs, checkpoint))
        assert weights.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_array_equal(weights[name], value, err_msg=f"{cls} {name}")
        with open(os.path.join(ours, "train_log.jsonl"), encoding="utf-8") as a, \
                open(os.path.join(theirs, "train_log.jsonl"), encoding="utf-8") as b:
            assert [json.loads(line) for line in a] == [json.loads(line) for line in b], cls
        assert _json(os.path.join(ours, "thresholds.json")) == _json(os.path.join(theirs, "thresholds.json"))
        method = METHODS[package][1]
        assert (_json(os.path.join(killed, "results", f"{method}_{cls}.json"))["metrics"]
                == _json(os.path.join(straight, "results", f"{method}_{cls}.json"))["metrics"]), cls
        assert not [n for n in os.listdir(ours) if n.startswith(".tmp-")]  # the killed save's file was removed
