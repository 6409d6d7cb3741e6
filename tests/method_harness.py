"""One way to run every method folder in the tests: its commands in-process through ``common.cli.commands`` (as the
entry scripts do), or its scripts in a subprocess with a timeout (so a hang fails the test instead of blocking)."""
import os
import subprocess
import sys

from common.cli.commands import run as run_command
from common.cli.export_model import run as run_export
from common.cli.infer import run as run_infer
from common.core.errors import main_guard
from conftest import REPO_ROOT, method_dir

# package -> (folder, results name of the default method, tiny config)
METHODS = {
    "rd4ad": ("RD4AD-paddle", "RD4AD"),
    "orthoad": ("OrthoAD-paddle", "OrthoAD"),
    "efficientad": ("EfficientAD-paddle", "EfficientAD"),
    "kdad": ("KDAD-paddle", "KDAD"),
}
PACKAGE_MODULES = ("config", "data", "model", "loss", "detector", "trainer", "evaluate", "checkpoint")
ENTRY_SCRIPTS = ("main.py", "train.py", "eval.py", "predict.py", "export_model.py", "infer.py")


def folder(package):
    return method_dir(METHODS[package][0])


def tiny_config(package):
    return os.path.join(folder(package), "configs", "tiny.yaml")


def tiny_model_option(package):
    """``(name, value)`` of an option that describes the tiny model (for the model-option checks)."""
    import dataclasses
    import importlib

    from common.core.config import build_config

    folder(package)
    config_class = importlib.import_module(f"{package}.config").Config
    config = build_config(config_class, tiny_config(package))
    return next((f.name, getattr(config, f.name)) for f in dataclasses.fields(config_class)
                if f.metadata.get("model") and f.name in ("backbone", "image_size"))


def method_package(package):
    """The method package called ``package`` (what the method folder's entry scripts import and pass on)."""
    import importlib

    folder(package)
    return importlib.import_module(package)


def command(package, mode, *argv):
    """``main.py --mode MODE ARGV`` in-process; user errors exit 2 with one ``error:`` line as in the scripts."""
    return main_guard(run_command)(method_package(package), mode, [str(a) for a in argv])


def export(package, *argv):
    return main_guard(run_export)(method_package(package), [str(a) for a in argv])


def infer(*argv):
    return main_guard(run_infer)([str(a) for a in argv])


def train_tiny(package, data_dir, output_dir, *extra):
    return command(package, "train", "--cls", "bottle", "--data_dir", data_dir, "--output_dir", output_dir,
                   "--config", tiny_config(package), "--threads", 2, *extra)


def run_script(package, script, *args, cwd=None, timeout=300, env=None):
    """``python SCRIPT ARGS`` in the method folder (or ``cwd``); returns the CompletedProcess."""
    cwd = cwd or folder(package)
    environment = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    environment.update(env or {})
    return subprocess.run([sys.executable, script, *[str(a) for a in args]], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=environment, stdin=subprocess.DEVNULL)
