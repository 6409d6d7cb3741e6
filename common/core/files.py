"""Writing files so that neither a crash nor a power cut leaves half of one.

Every final file (checkpoints, training states, thresholds, results, training logs, exported folders) is written to a
temporary file in its own folder, flushed to the disk (``fsync``), renamed over the final name, and the folder is
flushed after the rename. A reader then finds the old file or the new one, never an empty or partial one: without the
flushes a file system may persist the rename before the data (ext4 with ``data=writeback``, XFS), and a power cut
shortly after a save leaves a zero-length file under the final name. An exported folder is written the same way as a
whole (:func:`atomic_folder`).
"""
import contextlib
import ctypes
import ctypes.util
import json
import math
import os
import shutil
import tempfile

TEMPORARY_PREFIX = ".tmp-"


def fsync_path(path):
    """Flush a file, or a folder's entries, to the disk (folders: a no-op where the platform cannot open them)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        if os.path.isdir(path):  # e.g. Windows cannot open a folder: its entries are flushed with the files
            return
        raise
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _usual_mode(path, directory=False):
    """Give a temporary file (0600) or folder (0700) the mode a plain ``open``/``mkdir`` would have (the umask's)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if directory else 0o666) & ~umask)


def _replace(tmp, path):
    """``tmp`` (already on the disk) becomes ``path``; then the folder's new entry is flushed too."""
    os.replace(tmp, path)
    fsync_path(os.path.dirname(os.path.abspath(path)))


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` durably: temporary file, fsync, rename, fsync of the folder."""
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)

    atomic_save(write, path)


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj):
    atomic_write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_save(save_fn, path):
    """Run ``save_fn(tmp_path)`` (e.g. ``lambda p: paddle.save(state, p)``), flush what it wrote, then rename it onto
    ``path`` and flush the folder; on any failure the temporary file is removed and ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path), dir=folder)
    os.close(fd)
    try:
        _usual_mode(tmp)
        save_fn(tmp)
        fsync_path(tmp)
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def append_line(path, line):
    """Append one line to a log and flush it to the disk (a reader drops a last line cut by a crash)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line.rstrip("\n") + "\n")
        handle.flush()
        os.fsync(handle.fileno())


_RENAME_EXCHANGE = 2  # renameat2 flag (linux/fs.h): swap two paths in one step
_AT_FDCWD = -100


def _exchange(first, second):
    """Swap two existing paths in one atomic step (Linux ``renameat2``); False where that is not available."""
    name = ctypes.util.find_library("c")
    try:
        renameat2 = ctypes.CDLL(name, use_errno=True).renameat2 if name else None
    except (OSError, AttributeError):
        return False
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    return result == 0


@contextlib.contextmanager
def atomic_folder(path):
    """Write a whole folder (an exported model) atomically: yields a temporary folder beside ``path`` to fill;
    when the block ends without error its files and itself are flushed and it takes ``path``'s place.

    An existing ``path`` is swapped out in one step where Linux allows it (``renameat2``), else renamed aside first
    (a crash in between leaves no ``path``, never a mixed one), and removed. On an error the temporary folder is
    removed and ``path`` stays as it was."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path), dir=parent)
    try:
        _usual_mode(tmp, directory=True)
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                fsync_path(os.path.join(folder, name))
            fsync_path(folder)
        if os.path.isdir(path) and _exchange(tmp, path):
            shutil.rmtree(tmp)  # now the old folder
        else:
            old = None
            if os.path.lexists(path):
                old = tempfile.mkdtemp(prefix=TEMPORARY_PREFIX + "old-", dir=parent)
                os.rmdir(old)
                os.rename(path, old)
            os.rename(tmp, path)
            if old:
                shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
        fsync_path(parent)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        raise


def remove_temporaries(folder):
    """Remove the temporary files and folders a killed process left in ``folder`` (its saves were cut before their
    rename, so nothing else refers to them); returns their names."""
    if not os.path.isdir(folder):
        return []
    removed = sorted(name for name in os.listdir(folder) if name.startswith(TEMPORARY_PREFIX))
    for name in removed:
        path = os.path.join(folder, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    return removed


def jsonable(obj):
    """NumPy scalars/arrays -> Python; NaN/Inf -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
