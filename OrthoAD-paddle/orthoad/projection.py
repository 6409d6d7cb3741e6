"""Channel reductions c -> k applied to the backbone embedding: z = Wᵀ f with W of shape (c, k).

- ``ortho`` (OrthoAD): a Haar-random semi-orthogonal W (WᵀW = I_k): QR of a c×k standard-normal matrix with the
  columns of Q multiplied by sign(diag R), as ``torch.nn.init.orthogonal_`` does.
- ``padim`` (alias ``sample``): PaDiM's random channel subset; W holds the columns of I_c at the chosen indices.
  The indices come from Python's ``random.Random(seed).sample(range(c), k)``, so seed 1024 reproduces the PaDiM
  reference code's ``idx`` exactly (it calls ``random.seed(1024)`` then ``random.sample``).
- ``gaussian``: W ~ N(0, 1), not orthogonalised (OrthoAD's ablation).

W is drawn with NumPy / the Python standard library from ``seed`` only (no framework RNG), so the same seed gives
the same W on every machine; ``--projection FILE.npy`` loads a W written by anyone (e.g. the torch one).
"""
import os
import random

import numpy as np

from common.errors import UserError

METHODS = ("ortho", "padim", "gaussian")
METHOD_ALIASES = {"sample": "padim"}
# Default reduced dimension per (method, backbone): OrthoAD k=300 (WRN50) / 100 (R18); PaDiM d=550 / 100.
DEFAULT_K = {
    ("ortho", "wide_resnet50_2"): 300, ("ortho", "resnet18"): 100,
    ("gaussian", "wide_resnet50_2"): 300, ("gaussian", "resnet18"): 100,
    ("padim", "wide_resnet50_2"): 550, ("padim", "resnet18"): 100,
}
# Seeds of the reference codes: OrthoAD's train.py (1111) and PaDiM's main.py (1024).
DEFAULT_SEED = {"ortho": 1111, "gaussian": 1111, "padim": 1024}


def canonical_method(method):
    """``sample`` -> ``padim``; unknown names are a ``UserError``."""
    method = METHOD_ALIASES.get(method, method)
    if method not in METHODS:
        raise UserError(f"unknown --method '{method}' (choose from {', '.join(METHODS)}, or 'sample' = padim)")
    return method


def default_k(method, arch):
    """The reference reduced dimension for ``method`` on ``arch`` (300/100 OrthoAD, 550/100 PaDiM)."""
    return DEFAULT_K.get((canonical_method(method), arch), 100)


def semi_orthogonal(channels, k, rng):
    """A (channels, k) matrix with orthonormal columns, Haar-distributed (QR of a Gaussian with the sign fix)."""
    if k > channels:
        raise UserError(f"--k {k} is larger than the embedding's {channels} channels")
    gaussian = rng.standard_normal((channels, k))
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))


def channel_subset(channels, k, seed):
    """PaDiM's random channel indices (``random.Random(seed).sample(range(channels), k)``)."""
    if k > channels:
        raise UserError(f"--k {k} is larger than the embedding's {channels} channels")
    return np.array(random.Random(seed).sample(range(channels), k), dtype=np.int64)


def make_projection(method, channels, k, seed):
    """The (channels, k) float32 matrix W for ``method`` drawn from ``seed``."""
    method = canonical_method(method)
    if k < 1:
        raise UserError(f"--k must be positive, got {k}")
    if method == "ortho":
        weight = semi_orthogonal(channels, k, np.random.default_rng(seed))
    elif method == "padim":
        weight = np.zeros((channels, k))
        weight[channel_subset(channels, k, seed), np.arange(k)] = 1.0
    else:
        if k > channels:
            raise UserError(f"--k {k} is larger than the embedding's {channels} channels")
        weight = np.random.default_rng(seed).standard_normal((channels, k))
    return weight.astype(np.float32)


def load_projection(path, channels, k=None):
    """Read W from a ``.npy`` file and check it is (channels, k) (k taken from the file when None)."""
    if not os.path.isfile(path):
        raise UserError(f"projection file not found: {path}")
    try:
        weight = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read projection {path}: {exc}") from None
    if weight.ndim != 2 or weight.shape[0] != channels or (k is not None and weight.shape[1] != k):
        want = f"({channels}, {k if k is not None else 'k'})"
        raise UserError(f"projection {path} has shape {weight.shape}, expected {want} for this backbone")
    if not np.all(np.isfinite(weight)):
        raise UserError(f"projection {path} contains NaN or Inf")
    return np.ascontiguousarray(weight, dtype=np.float32)
