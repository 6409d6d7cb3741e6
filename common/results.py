"""Atomic file writes and the per-(method, class) results JSON."""
import datetime
import json
import math
import os
import platform
import subprocess
import tempfile

RESULTS_SCHEMA = 1


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save(save_fn, path):
    """Run ``save_fn(tmp_path)`` (e.g. ``lambda p: paddle.save(state, p)``), then rename onto ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        save_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _jsonable(obj):
    """NumPy scalars/arrays -> Python; NaN/Inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


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


def results_path(results_dir, method, cls):
    return os.path.join(results_dir, f"{method}_{cls}.json")


def write_results(results_dir, method, cls, metrics, protocols, config, seconds=None, threshold=None,
                  notes=()):
    """Write ``RESULTS_DIR/METHOD_CLASS.json`` atomically and return its path.

    ``metrics``: name -> value (None when not defined); ``protocols``: metric name -> one-line description of the
    protocol it follows; ``config``: backbone, image_size, seed, epochs/steps and any method options.
    """
    record = {
        "schema": RESULTS_SCHEMA,
        "method": method,
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
    path = results_path(results_dir, method, cls)
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
