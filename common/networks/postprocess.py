"""Anomaly-map post-processing: Gaussian smoothing and resizing, in NumPy and as exportable Paddle layers.

The reference implementations smooth with ``scipy.ndimage.gaussian_filter(map, sigma=4)`` (mode 'reflect', i.e.
``d c b a | a b c d``, truncate 4.0, so a 33-tap kernel). :func:`gaussian_smooth` calls SciPy for metric parity;
:class:`GaussianBlur` computes the same result as a Paddle layer, so it can go into an exported static graph.

Resizing inside an exported graph uses :class:`MatrixResize` (two products with constant interpolation matrices)
rather than ``F.interpolate``: Paddle Inference 3.3 on CPU cannot run an exported ``bilinear_interp`` or
``nearest_interp`` op with oneDNN ("ConvertPirAttribute2RuntimeAttribute not support ArrayAttribute<Double>").
Both equal PyTorch's ``F.interpolate`` (bilinear with either ``align_corners``, and nearest) to float rounding.
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
    """Resize Paddle maps (N, C, h, w) to ``size`` with ``F.interpolate`` (dygraph; see :class:`MatrixResize` for
    exported graphs); bilinear needs an explicit ``align_corners``.

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


def interpolation_matrix(in_size, out_size, mode="bilinear", align_corners=None):
    """(out_size, in_size) float32 matrix ``R`` such that ``R @ x`` resizes a 1-D signal as PyTorch does.

    ``mode="bilinear"`` needs ``align_corners`` (True: ends aligned; False: half-pixel centres, clamped at the
    borders). ``mode="nearest"``: source index ``floor(dst * in / out)``. Source positions are computed in float32
    like PyTorch's and Paddle's CPU kernels.
    """
    out = np.arange(out_size, dtype=np.float32)
    rows = np.arange(out_size)
    matrix = np.zeros((out_size, in_size), dtype=np.float32)
    if mode == "nearest":
        scale = np.float32(in_size / out_size)
        matrix[rows, np.minimum(np.floor(out * scale).astype(np.int64), in_size - 1)] = 1.0
        return matrix
    if mode != "bilinear":
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got '{mode}'")
    if align_corners is None:
        raise ValueError("interpolation_matrix(mode='bilinear') needs align_corners=True or False")
    if align_corners:
        scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
        source = out * scale
    else:
        scale = np.float32(in_size / out_size)
        source = np.maximum((out + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = np.clip(source - low.astype(np.float32), np.float32(0), np.float32(1))
    np.add.at(matrix, (rows, low), np.float32(1) - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix


class MatrixResize(paddle.nn.Layer):
    """Resize (N, C, h, w) maps of a fixed size to ``out_size`` as two products with constant matrices.

    Equal to ``F.interpolate(mode, align_corners)`` (see :func:`interpolation_matrix`) and, unlike it, runnable in
    an exported graph under Paddle Inference with oneDNN. Only 2-D matmuls are used: broadcast 4-D products with
    one channel crash or go wrong in Paddle Inference 3.3's optimised graph.
    """

    def __init__(self, in_size, out_size, mode="bilinear", align_corners=None):
        super().__init__()
        in_h, in_w = (in_size, in_size) if np.isscalar(in_size) else in_size
        out_h, out_w = (out_size, out_size) if np.isscalar(out_size) else out_size
        self.in_size, self.out_size = (int(in_h), int(in_w)), (int(out_h), int(out_w))
        rows = interpolation_matrix(int(in_h), int(out_h), mode, align_corners)
        cols = np.ascontiguousarray(interpolation_matrix(int(in_w), int(out_w), mode, align_corners).T)
        self.register_buffer("rows", paddle.to_tensor(rows), persistable=False)
        self.register_buffer("cols", paddle.to_tensor(cols), persistable=False)

    def forward(self, maps):
        channels = maps.shape[1]
        (h, w), (out_h, out_w) = self.in_size, self.out_size
        if h == 1 and w == 1:
            # A 1x1 map resizes to a constant one. Paddle Inference 3.3 with oneDNN returns garbage (NaN, 1e30,
            # changing from run to run) for a matmul whose inner dimension is 1, so broadcast instead.
            return maps.expand([maps.shape[0], channels, out_h, out_w])
        wide = paddle.matmul(maps.reshape([-1, w]), self.cols)                         # (N*C*h, out_w)
        wide = wide.reshape([-1, h, out_w]).transpose([0, 2, 1]).reshape([-1, h])      # (N*C*out_w, h)
        tall = paddle.matmul(wide, self.rows, transpose_y=True)                        # (N*C*out_w, out_h)
        return tall.reshape([-1, channels, out_w, out_h]).transpose([0, 1, 3, 2])


def resize_to_image(amap, size):
    """A 2-D map bilinearly resized to an image's ``(width, height)`` (``align_corners=False``, as PyTorch's
    ``F.interpolate``; OpenCV's linear resize uses the same half-pixel centres when enlarging)."""
    import cv2

    amap = np.asarray(amap, dtype=np.float32)
    if (amap.shape[1], amap.shape[0]) == tuple(size):
        return amap
    return cv2.resize(amap, tuple(int(v) for v in size), interpolation=cv2.INTER_LINEAR)
