"""Threads, device and seeds for Paddle.

Paddle sets ``OMP_NUM_THREADS=1`` at import when it is unset, so CPU runs would use a single core. Every entry
point of this repository calls :func:`configure` instead, which sets Paddle's CPU math-library thread count to
``--threads`` (default: every core, or ``OMP_NUM_THREADS`` when the user set it) after import, without the
warning Paddle prints when the variable is set before import. Paddle Inference takes the same number through
``Config.set_cpu_math_library_num_threads``. On the CPU, :func:`configure` also keeps freed memory for reuse
(:func:`keep_freed_memory`).
"""
import ctypes
import ctypes.util
import os
import random

import numpy as np

from .errors import UserError

# --use_gpu True (the Paddle ports' spelling) asks for a GPU when there is one; --device gpu insists on it.
GPU_IF_AVAILABLE = "gpu_if_available"
# no --device: Paddle's own default (default_device)
AUTO_DEVICE = "auto"


def default_threads():
    """Threads to use when the user gave none: ``OMP_NUM_THREADS`` if set and > 1, else every core."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 1:
        return int(env)
    return os.cpu_count() or 1


_threads_set = None  # what set_threads last chose, for predictors created later in the run


def set_threads(threads=None):
    """Set the CPU thread count of Paddle's math libraries; returns the number used."""
    global _threads_set
    from paddle.base import core

    threads = int(threads or default_threads())
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    core.set_num_threads(threads)
    _threads_set = threads
    return threads


def current_threads():
    """The thread count of the last :func:`set_threads` (or :func:`default_threads` before any)."""
    return _threads_set or default_threads()


def default_device():
    """Paddle's own default device: the GPU when this Paddle build has CUDA and sees a GPU, else the CPU."""
    import paddle

    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return "gpu"
    return "cpu"


def resolve_device(device):
    """``cpu``, ``gpu`` or ``gpu:N`` for a requested device; None or ``auto``: :func:`default_device`. A GPU request
    on a CPU-only build is a ``UserError`` (except ``--use_gpu True``, which falls back to the CPU with a note, as
    the Paddle ports' scripts do)."""
    import paddle

    device = (device or AUTO_DEVICE).lower()
    if device == AUTO_DEVICE:
        return default_device()
    if device == GPU_IF_AVAILABLE:
        device = default_device()
        if device == "cpu":
            print("note: --use_gpu True but this Paddle build has no CUDA support or sees no GPU; running on the CPU")
    if device.startswith("gpu") and not paddle.device.is_compiled_with_cuda():
        raise UserError(f"--device {device} requested but this Paddle build has no CUDA support; "
                        "install paddlepaddle-gpu or use --device cpu")
    if not (device == "cpu" or device.startswith("gpu")):
        raise UserError(f"unknown device '{device}'; use cpu, gpu or gpu:N")
    return device


def device_line(device, threads=None):
    """What a command prints first: the device it runs on (with the CPU threads)."""
    return f"device: {device}" + (f" ({threads} threads)" if device == "cpu" and threads else "")


def set_device(device):
    """Select the device (see :func:`resolve_device`) and return its name."""
    import paddle

    device = resolve_device(device)
    paddle.set_device(device)
    return device


def seed_everything(seed):
    """Seed Python, NumPy and Paddle."""
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
_kept = False


def keep_freed_memory():
    """Let the process reuse the memory it frees instead of handing it back to the system; returns whether it could.

    With glibc's defaults every block above 32 MB is mapped fresh from the kernel and unmapped when freed, so a
    training step that allocates and frees gigabytes of activations page-faults all of them in again each time:
    RD4AD's WRN50 step at batch 16 took 2.3 million page faults (about 9 GB) and 20 s per step; with large blocks
    from the heap and no trimming, 24 thousand and 12.4 s, the same numbers (measured here, 2 threads). The price:
    the process keeps its peak memory until it exits. Linux with glibc only (``mallopt``); elsewhere nothing
    changes. The PyTorch CPU guides make the same point by preloading jemalloc or tcmalloc.
    """
    global _kept
    if _kept:
        return True
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    return _kept


def release_memory():
    """Free what a finished piece of work (one class of a per-class loop) left behind; returns whether the heap's
    free pages went back to the system.

    First Python's cyclic garbage (a model's layers refer to each other), now rather than whenever the collector
    next runs: otherwise the next class's model is built while the last one's still waits for collection, and the
    heap grows to hold both. Then glibc's ``malloc_trim(0)``: :func:`keep_freed_memory` keeps every freed block in
    the heap for the steps of a class, this hands the free pages back once the class is over (the next class faults
    them in again once, a fraction of a second).
    """
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        malloc_trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return False
    return bool(malloc_trim and malloc_trim(0))


def configure(device=None, threads=None, seed=None):
    """Device, threads and seed in one call (and, on the CPU, :func:`keep_freed_memory`); returns
    ``(device, threads)``."""
    device = set_device(device)
    threads = set_threads(threads)
    if device == "cpu":
        keep_freed_memory()
    if seed is not None:
        seed_everything(seed)
    return device, threads
