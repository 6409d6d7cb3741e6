"""The files of a trained class model: one shape for every method, one-line errors for a missing, damaged or foreign
file.

Every method's ``checkpoint`` module has ``save(path, detector, config, meta) -> file`` and ``load(path,
backbone_weights=None) -> (detector, config, thresholds)``, where ``path`` is the class folder or a checkpoint file
in it. The methods that keep their model in one ``.pdparams`` file build them on :func:`save_checkpoint` and
:func:`read_checkpoint`: the file holds the method's state dicts, the configuration (``config``) and ``meta``
(``method``, ``format`` and what the method records: epochs done, where the weights came from, ...).
"""
import os

from .errors import UserError
from .files import atomic_save


def load_state(path, what="checkpoint"):
    """``paddle.load(path)``; a missing, damaged or foreign file is a ``UserError`` naming it."""
    import paddle

    if not os.path.isfile(path):
        raise UserError(f"no {what} at {path}")
    try:
        return paddle.load(path)
    except Exception as exc:  # noqa: BLE001 - paddle.load raises many types for a foreign or damaged file
        raise UserError(f"cannot read {what} {path} ({type(exc).__name__}: {exc})") from None


def class_folder(path):
    """The class folder of ``path`` (the folder itself, or the folder holding a checkpoint file)."""
    return path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))


def checkpoint_file(path, file_name):
    """``path`` when it names a file (an existing one, or a new one ending like ``file_name``), else
    ``path/file_name``."""
    if os.path.isfile(path) or (not os.path.isdir(path) and path.endswith(os.path.splitext(file_name)[1])):
        return path
    return os.path.join(path, file_name)


def save_checkpoint(path, file_name, state, config, meta):
    """Write ``state`` (the method's state dicts) with ``config`` and ``meta`` to the checkpoint file of ``path``
    (see :func:`checkpoint_file`), atomically and durably; returns the file written."""
    import paddle

    from .config import to_dict

    path = checkpoint_file(path, file_name)
    record = dict(state, config=to_dict(config), meta=dict(meta))
    atomic_save(lambda tmp: paddle.save(record, tmp), path)
    return path


def read_checkpoint(path, file_name, method, required, hint):
    """The record saved by :func:`save_checkpoint` at ``path`` (folder or file): a dict holding ``required`` keys.

    A missing file says how to make one (``hint``); a file of another kind or method is refused in one line."""
    path = checkpoint_file(path, file_name)
    if not os.path.isfile(path):
        raise UserError(f"no trained model at {path}: {hint}")
    record = load_state(path)
    if not isinstance(record, dict) or not set(required) <= set(record):
        raise UserError(f"{path} is not a {method} checkpoint of this project (expected keys "
                        f"{', '.join(sorted(required))})")
    saved = (record.get("meta") or {}).get("method")
    if saved not in (None, method):
        raise UserError(f"{path} holds a {saved} model, not a {method} one")
    return record
