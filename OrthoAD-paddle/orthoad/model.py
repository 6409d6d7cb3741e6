"""OrthoAD / PaDiM networks as pure Paddle layers, and the channel reduction W.

W (c, k) reduces the backbone embedding, z = Wᵀ f:

- ``ortho`` (OrthoAD): a Haar-random semi-orthogonal W (WᵀW = I_k): QR of a c×k standard-normal matrix with the
  columns of Q multiplied by sign(diag R), as ``torch.nn.init.orthogonal_`` does.
- ``padim`` (alias ``sample``): PaDiM's random channel subset; W holds the columns of I_c at the chosen indices.
  The indices come from Python's ``random.Random(seed).sample(range(c), k)``, so seed 1024 reproduces the PaDiM
  reference code's ``idx`` exactly (it calls ``random.seed(1024)`` then ``random.sample``).
- ``gaussian``: W ~ N(0, 1), not orthogonalised (OrthoAD's ablation).

W is drawn with NumPy / the Python standard library from ``seed`` only (no framework RNG), so the same seed gives
the same W on every machine (and for every class of a run); ``--projection FILE.npy`` loads a W written by anyone
(e.g. the torch one).

Layers:

- :class:`ProjectedEmbedding`: frozen ResNet, layer1-3 outputs; the embedding is the nearest-upsampled
  concatenation [l1, l2, l3] on the layer1 grid (448 / 1792 channels), reduced by z = Wᵀ f. Because a per-channel
  linear map commutes with nearest upsampling, z is computed as W1ᵀ l1 + up(W2ᵀ l2) + up(W3ᵀ l3), which never
  materialises the 1792-channel embedding (``embedding()`` returns it for checks).
- :class:`MahalanobisScorer`: per-position distance sqrt(‖A (z − μ)‖²) with the precision factor A (P = AᵀA),
  one batched matmul over positions. W, μ and A are persistable buffers, so they are saved in exported graphs.
"""
import os
import random

import numpy as np
import paddle
import paddle.nn.functional as F

from common.core.errors import UserError
from common.networks.backbones import ResNetFeatures
from common.networks.postprocess import MatrixResize

from .config import METHOD_ALIASES

LAYERS = ("layer1", "layer2", "layer3")
STRIDES = (4, 8, 16)
EMBEDDING_CHANNELS = {"resnet18": 448, "wide_resnet50_2": 1792}


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
    method = METHOD_ALIASES.get(method, method)
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


# -- layers ---------------------------------------------------------------------------------------------------
def _constant(array, dtype="float32"):
    return paddle.to_tensor(np.ascontiguousarray(array), dtype=dtype)


class ProjectedEmbedding(paddle.nn.Layer):
    """Backbone features reduced to k channels on the layer1 grid: (N, 3, H, W) -> (N, k, H/4, W/4).

    ``image_size`` is a side (square input) or (height, width). ``weights``: ``"imagenet"`` loads paddle.vision's
    own ImageNet file for ``arch`` (the official codes used torchvision's: convert it with
    ``scripts/convert_torch_weights.py``, see docs/weights.md), ``"random"`` or None (tests), or a ``.pdparams`` path.
    """

    def __init__(self, arch, projection, image_size, weights="imagenet"):
        super().__init__()
        self.backbone = ResNetFeatures(arch, layers=LAYERS, weights=weights)
        self.channels = list(self.backbone.channels)
        height, width = (image_size, image_size) if np.isscalar(image_size) else image_size
        if height % STRIDES[-1] or width % STRIDES[-1]:
            raise ValueError(f"image size must be a multiple of {STRIDES[-1]}, got {height}x{width}")
        self.input_shape = (int(height), int(width))
        self.grid = (self.input_shape[0] // STRIDES[0], self.input_shape[1] // STRIDES[0])
        self.upsamplers = paddle.nn.LayerList(
            [MatrixResize((height // s, width // s), self.grid, "nearest") for s in STRIDES[1:]])
        projection = np.asarray(projection, dtype=np.float32)
        if projection.shape[0] != sum(self.channels):
            raise ValueError(f"projection has {projection.shape[0]} rows, the {arch} embedding "
                             f"{sum(self.channels)} channels")
        self.k = projection.shape[1]
        self.register_buffer("projection", _constant(projection), persistable=True)

    def embedding(self, x):
        """The full nearest-upsampled concatenation (N, c, S/4, S/4), as the reference codes build it."""
        features = self.backbone(x)
        size = features[0].shape[2:]
        return paddle.concat([features[0]] + [F.interpolate(f, size=size, mode="nearest") for f in features[1:]],
                             axis=1)

    def forward(self, x):
        features = self.backbone(x)
        start, reduced = 0, None
        for index, (feature, channels) in enumerate(zip(features, self.channels)):
            z = _project(feature, self.projection[start:start + channels])   # (N, k, h_i, w_i)
            start += channels
            if index:
                z = self.upsamplers[index - 1](z)
            reduced = z if reduced is None else reduced + z
        return reduced


def _project(feature, weight):
    """(N, c, h, w) x (c, k) -> (N, k, h, w) as one matmul."""
    c, h, w = feature.shape[1:]
    flat = paddle.reshape(feature, [-1, c, h * w])                       # (N, c, hw)
    reduced = paddle.matmul(weight, flat, transpose_x=True)              # (N, k, hw)
    return paddle.reshape(reduced, [-1, weight.shape[1], h, w])


class MahalanobisScorer(paddle.nn.Layer):
    """Per-position Mahalanobis distance of z (N, k, H, W) to N(μ, P⁻¹) with P = AᵀA: (N, 1, H, W).

    ``mean`` is (P, k) and ``factor`` is (P, k, k) with P = H·W positions in row-major order.
    """

    def __init__(self, mean, factor, grid, chunk=256):
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        positions, k = np.shape(mean)
        if positions != self.grid[0] * self.grid[1] or np.shape(factor) != (positions, k, k):
            raise ValueError(f"mean {np.shape(mean)} / factor {np.shape(factor)} do not fit grid {self.grid}")
        self.k = k
        self.register_buffer("mean", _constant(np.asarray(mean).T), persistable=True)       # (k, P)
        if isinstance(factor, np.ndarray) and factor.dtype == np.float32 and factor.flags.c_contiguous:
            # the fitted factor (1.5 GB for WRN50 k=300) becomes the buffer without a copy; the layer keeps the
            # array alive, since the buffer shares its memory
            self._factor_array = factor
            self.register_buffer("factor", paddle.Tensor(factor, paddle.CPUPlace(), False, True), persistable=True)
        else:
            # Filled chunk by chunk so that a streamed factor (checkpoint.NpyRows) never exists twice in memory.
            self.register_buffer("factor", paddle.empty([positions, k, k], dtype="float32"), persistable=True)
            for start in range(0, positions, chunk):
                self.factor[start:start + chunk] = _constant(factor[start:start + chunk])

    def forward(self, z):
        positions = self.grid[0] * self.grid[1]
        centred = paddle.reshape(z, [-1, self.k, positions]) - self.mean                  # (N, k, P)
        centred = paddle.transpose(centred, [2, 1, 0])                                    # (P, k, N)
        whitened = paddle.matmul(self.factor, centred)                                    # (P, k, N)
        squared = paddle.sum(whitened * whitened, axis=1)                                 # (P, N)
        distance = paddle.sqrt(paddle.transpose(squared, [1, 0]))                         # (N, P)
        return paddle.reshape(distance, [-1, 1, self.grid[0], self.grid[1]])
