"""Anomaly-map post-processing: Gaussian smoothing and upsampling.

The reference implementations smooth with ``scipy.ndimage.gaussian_filter(map, sigma=4)`` (mode 'reflect', i.e.
``d c b a | a b c d``, truncate 4.0, so a 33-tap kernel). :func:`gaussian_smooth` calls SciPy for metric parity;
:class:`GaussianBlur` computes the same result as a Paddle layer, so it can go into an exported static graph.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
from scipy import ndimage


def gaussian_smooth(maps, sigma=4.0, truncate=4.0):
    """Smooth each map of ``maps`` ((H, W) or (N, H, W)) exactly as the references do (float64 SciPy)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim == 2:
        return ndimage.gaussian_filter(maps, sigma=sigma, truncate=truncate)
    return np.stack([ndimage.gaussian_filter(m, sigma=sigma, truncate=truncate) for m in maps])


def gaussian_kernel1d(sigma, truncate=4.0):
    """SciPy's normalised 1-D Gaussian kernel (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def reflect_indices(length, radius):
    """Indices that pad a length-``length`` axis by ``radius`` with SciPy's 'reflect' rule (any radius)."""
    idx = np.arange(-radius, length + radius)
    period = 2 * length
    idx = np.mod(idx, period)
    return np.where(idx >= length, period - 1 - idx, idx)


class GaussianBlur(paddle.nn.Layer):
    """``scipy.ndimage.gaussian_filter(sigma)`` per map as a Paddle layer for inputs (N, 1, H, W).

    The map size is fixed at construction (the reflect-padding indices are constants of the exported graph).
    Computed in float32; equal to the SciPy float64 result to ~1e-6 relative.
    """

    def __init__(self, size, sigma=4.0, truncate=4.0):
        super().__init__()
        height, width = (size, size) if np.isscalar(size) else size
        kernel = gaussian_kernel1d(sigma, truncate).astype(np.float32)
        self.radius = (len(kernel) - 1) // 2
        self.register_buffer("kernel_h", paddle.to_tensor(kernel.reshape(1, 1, 1, -1)), persistable=False)
        self.register_buffer("kernel_v", paddle.to_tensor(kernel.reshape(1, 1, -1, 1)), persistable=False)
        self.register_buffer("rows", paddle.to_tensor(reflect_indices(height, self.radius), dtype="int64"),
                             persistable=False)
        self.register_buffer("cols", paddle.to_tensor(reflect_indices(width, self.radius), dtype="int64"),
                             persistable=False)

    def forward(self, maps):
        padded = paddle.index_select(maps, self.cols, axis=3)
        smoothed = F.conv2d(padded, self.kernel_h)
        padded = paddle.index_select(smoothed, self.rows, axis=2)
        return F.conv2d(padded, self.kernel_v)


def upsample(maps, size, mode="bilinear", align_corners=None):
    """Resize Paddle maps (N, C, h, w) to ``size``; bilinear needs an explicit ``align_corners``.

    ``align_corners=False`` uses ``align_mode=0`` (half-pixel centres), which equals PyTorch's bilinear;
    RD4AD uses ``align_corners=True``; PaDiM/OrthoAD and EfficientAD use False. ``mode="nearest"`` equals
    PyTorch's default nearest (PaDiM/OrthoAD feature concatenation).
    """
    size = [size, size] if np.isscalar(size) else list(size)
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    if align_corners is None:
        raise ValueError("upsample(mode='bilinear') needs align_corners=True or False")
    return F.interpolate(maps, size=size, mode=mode, align_corners=align_corners, align_mode=0)
