"""The earlier Paddle ports' commands, as each method README lists them, run as written.

Each method folder is copied to a sandbox where ``configs/default.yaml`` (and the earlier KDAD port's
``configs/config.yaml``) is the tiny configuration (so the commands
stay exactly as users type them and finish in seconds) and ``mvtec/`` holds synthetic data in the place where the
earlier ports' READMEs unpack MVTec AD. The commands are read from the README's block between
``<!-- seed-commands -->`` and ``<!-- /seed-commands -->``, so the README and this test cannot drift apart.
"""
import os
import shlex
import shutil

import pytest

from common.data.synthetic import make_dataset
from method_harness import METHODS, folder, run_script, tiny_config

START, END = "<!-- seed-commands -->", "<!-- /seed-commands -->"


def seed_commands(package):
    with open(os.path.join(folder(package), "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert START in text and END in text, "the README lists no seed commands"
    block = text[text.index(START):text.index(END)]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("python ")]


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(METHODS))
def test_seed_commands_run_as_written(package, tmp_path):
    sandbox = tmp_path / METHODS[package][0]
    shutil.copytree(folder(package), sandbox, ignore=shutil.ignore_patterns("output", "__pycache__", "test_tipc"))
    for name in ("default.yaml", "config.yaml"):  # config.yaml: the file name of the earlier KDAD port
        if name == "default.yaml" or (sandbox / "configs" / name).exists():
            shutil.copy(tiny_config(package), sandbox / "configs" / name)
    make_dataset(str(sandbox / "mvtec"), ("bottle", "carpet"), size=64, n_train=8, n_test_good=2, n_test_defect=1)
    commands = seed_commands(package)
    assert len(commands) >= 5
    for line in commands:
        words = shlex.split(line)
        result = run_script(package, *words[1:], cwd=str(sandbox), timeout=300)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
