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
from conftest import method_dir
from method_harness import METHODS, folder, run_script, tiny_config

method_dir("KDAD-paddle")

START, END = "<!-- seed-commands -->", "<!-- /seed-commands -->"


def seed_commands(package, start=START, end=END):
    with open(os.path.join(folder(package), "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert start in text and end in text, f"the README lists no {start} block"
    block = text[text.index(start):text.index(end)]
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


def test_kdad_official_default_command_runs_cifar10(tmp_path):
    """The official repository's command with its default ``configs/config.yaml`` (CIFAR-10, normal class 3), as the
    KDAD README's ``official-commands`` block lists it, on a tiny CIFAR-10 folder in ``cifar10/``. The configuration
    is the real one (224 px crop of a 256 px Lanczos resize, ImageNet normalisation); only the training is shortened
    from the command line (one pass, a random expert: no weight download)."""
    import one_class_files
    from kdad import checkpoint

    sandbox = tmp_path / "KDAD-paddle"
    shutil.copytree(folder("kdad"), sandbox, ignore=shutil.ignore_patterns("output", "__pycache__", "test_tipc"))
    one_class_files.write_cifar_folder(str(sandbox / "cifar10"),
                                       one_class_files.cifar_files(one_class_files.cifar_batches(), "py2"))
    commands = seed_commands("kdad", "<!-- official-commands -->", "<!-- /official-commands -->")
    assert commands[0] == "python train.py --config configs/config.yaml --dataset_root cifar10 --normal_class 3"
    for line in commands:
        words = shlex.split(line)
        short = ["--epochs", "0", "--backbone_weights", "random", "--batch_size", "2"] if words[1] == "train.py" else []
        result = run_script("kdad", *words[1:], *short, cwd=str(sandbox), timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    _, config, _ = checkpoint.load(str(sandbox / "output" / "cat"))
    assert (config.dataset, config.image_size, config.resize, config.interpolation, config.normalize, config.lamda,
            config.cloner_config) == ("cifar10", 224, 256, "lanczos", True, 0.01, "B")
    assert (sandbox / "output" / "results" / "KDAD_cifar10_cat.json").is_file()
