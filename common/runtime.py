"""Threads, device and seeds for Paddle.

Paddle sets ``OMP_NUM_THREADS=1`` at import when it is unset, so CPU runs would use a single core. Every entry
point of this repository calls :func:`configure` instead, which sets Paddle's CPU math-library thread count to
``--threads`` (default: every core, or ``OMP_NUM_THREADS`` when the user set it) after import, without the
warning Paddle prints when the variable is set before import. Paddle Inference takes the same number through
``Config.set_cpu_math_library_num_threads``.
"""
import os
import random

import numpy as np

from .cli import GPU_IF_AVAILABLE
from .errors import UserError


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


def resolve_device(device):
    """``cpu``, ``gpu`` or ``gpu:N`` for a requested device; a GPU request on a CPU-only build is a ``UserError``
    (except ``--use_gpu True``, which falls back to the CPU with a note, as the Paddle ports' scripts do)."""
    import paddle

    device = (device or "cpu").lower()
    if device == GPU_IF_AVAILABLE:
        device = "gpu" if paddle.device.is_compiled_with_cuda() else "cpu"
        if device == "cpu":
            print("note: --use_gpu True but this Paddle build has no CUDA support; running on the CPU")
    if device.startswith("gpu") and not paddle.device.is_compiled_with_cuda():
        raise UserError(f"--device {device} requested but this Paddle build has no CUDA support; "
                        "install paddlepaddle-gpu or use --device cpu")
    if not (device == "cpu" or device.startswith("gpu")):
        raise UserError(f"unknown device '{device}'; use cpu, gpu or gpu:N")
    return device


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


def configure(device="cpu", threads=None, seed=None):
    """Device, threads and seed in one call; returns ``(device, threads)``."""
    device = set_device(device)
    threads = set_threads(threads)
    if seed is not None:
        seed_everything(seed)
    return device, threads
