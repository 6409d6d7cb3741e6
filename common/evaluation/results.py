"""The results JSON of one (method, class) evaluation, and reading a folder of them back."""
import datetime
import json
import os
import platform
import subprocess

from common.core.files import atomic_write_json

RESULTS_SCHEMA = 1


def git_commit(folder=None):
    """Short commit of the repository holding ``folder`` (``+dirty`` when modified), or None."""
    folder = folder or os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def environment():
    """Versions and machine facts recorded with every result."""
    info = {"python": platform.python_version(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "git_commit": git_commit()}
    try:
        import paddle

        info["paddle_version"] = paddle.__version__
    except ImportError:
        info["paddle_version"] = None
    return info


DEFAULT_DATASET = "mvtec"


def results_path(results_dir, method, cls, dataset=DEFAULT_DATASET):
    """``RESULTS_DIR/METHOD_CLASS.json`` for MVTec AD, ``RESULTS_DIR/METHOD_DATASET_CLASS.json`` for another dataset
    (class names repeat across datasets)."""
    name = f"{method}_{cls}" if dataset in (None, DEFAULT_DATASET) else f"{method}_{dataset}_{cls}"
    return os.path.join(results_dir, f"{name}.json")


def write_results(results_dir, method, cls, metrics, protocols, config, seconds=None, threshold=None,
                  notes=(), dataset=DEFAULT_DATASET):
    """Write the results JSON of one (method, dataset, class) atomically (:func:`results_path`) and return its path.

    ``metrics``: name -> value (None when not defined); ``protocols``: metric name -> one-line description of the
    protocol it follows; ``config``: backbone, image_size, seed, epochs/steps and any method options.
    """
    record = {
        "schema": RESULTS_SCHEMA,
        "method": method,
        "dataset": dataset,
        "class": cls,
        "metrics": metrics,
        "protocols": protocols,
        "threshold": threshold,
        "config": config,
        "notes": list(notes),
        "seconds": None if seconds is None else round(float(seconds), 3),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **environment(),
    }
    path = results_path(results_dir, method, cls, dataset)
    atomic_write_json(path, record)
    return path


def load_results(results_dir):
    """Every results JSON under ``results_dir`` (recursively), sorted by method then class."""
    records = []
    for folder, _, files in os.walk(results_dir):
        for name in files:
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    try:
                        record = json.load(handle)
                    except json.JSONDecodeError:
                        continue
                if isinstance(record, dict) and "metrics" in record and "class" in record:
                    records.append(record)
    return sorted(records, key=lambda r: (r.get("method", ""), r["class"]))
