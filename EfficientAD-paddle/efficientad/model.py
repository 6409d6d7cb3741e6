"""EfficientAD networks: patch description networks (PDN-S, PDN-M), the autoencoder, and the pretraining target.

Reproduces nelson1425/EfficientAD ``common.py`` (``get_pdn_small``, ``get_pdn_medium``, ``get_autoencoder``) and
the PatchCore-style ``FeatureExtractor.embed`` of ``pretraining.py``. The networks subclass ``nn.Sequential`` with
the reference's layer order, so their state-dict keys (``0.weight``, ``3.bias``, ...) are those of the reference
``nn.Sequential`` and a converted ``teacher_small.pth`` loads unchanged.

Paddle-specific choices, each equal to the PyTorch behaviour:

- ``AvgPool2D(exclusive=False)``: torch's ``AvgPool2d`` counts zero padding (``count_include_pad=True``); only the
  padded pretraining variant has pool padding, where Paddle's default ``exclusive=True`` would differ.
- PyTorch's default initialisation (``kaiming_uniform_(a=sqrt(5))`` = U(+-1/sqrt(fan_in)) for weights, the same
  bound for biases); both references rely on it. Paddle's defaults differ.
- The autoencoder's ``nn.Upsample(size, mode='bilinear')`` layers are :class:`common.networks.postprocess.MatrixResize`
  (same result as torch's bilinear with ``align_corners=False``), because Paddle Inference with oneDNN cannot run
  an exported ``bilinear_interp``; the first one, from the 1x1 code, is :class:`ReplicateResize` (see there).
  They hold no parameters, so the state-dict keys do not change.

``hidden_channels`` exists so that tests can run the same architectures with fewer channels; the defaults are the
paper's, and only they give the published parameter counts (:data:`PARAMETER_COUNTS`).
"""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.core.errors import UserError
from common.networks.backbones import ResNetFeatures
from common.networks.postprocess import MatrixResize

IMAGE_SIZE = 256          # network input (nelson1425 ``image_size``); the autoencoder only works at this size
OUT_CHANNELS = 384        # teacher and autoencoder output channels; the student has twice as many
MAP_SIZE = 56             # PDN output (no padding) and autoencoder output at IMAGE_SIZE
MODEL_SIZES = ("small", "medium")
# (input size, output size) of the autoencoder decoder's seven bilinear upsamplings at a 256 px input: the sizes
# are the reference's fixed ``nn.Upsample(size=...)``; each 4x4 conv with padding 2 then adds one pixel.
AE_UPSAMPLES = ((1, 3), (4, 8), (9, 15), (16, 32), (33, 63), (64, 127), (128, MAP_SIZE))
# Parameter counts of the default architectures (methods-spec §4.1).
PARAMETER_COUNTS = {
    ("small", "teacher"): 2_694_144,
    ("small", "student"): 4_267_392,
    ("medium", "teacher"): 8_026_624,
    ("medium", "student"): 11_615_488,
    "autoencoder": 1_096_320,
}
# Pretraining target (pretraining.py): WRN-101 layer2 + layer3 at 512 px, each 3x3 patch pooled to 1024 values
# per layer, then both layers pooled to OUT_CHANNELS.
PRETRAIN_IMAGE_SIZE = 512
PRETRAIN_LAYERS = ("layer2", "layer3")
PRETRAIN_PATCH_SIZE = 3
PRETRAIN_LAYER_DIM = 1024


def torch_default_init(layer):
    """Re-initialise every ``Conv2D`` under ``layer`` like PyTorch's ``nn.Conv2d.reset_parameters``.

    torch draws weights with ``kaiming_uniform_(a=sqrt(5))``, i.e. U(-b, b) with b = gain * sqrt(3 / fan_in) and
    gain = sqrt(2 / (1 + 5)), so b = 1 / sqrt(fan_in); biases are U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    ``fan_in`` = in_channels / groups * kH * kW (weight shape (out, in/groups, kH, kW)).
    """
    for sub in layer.sublayers(include_self=True):
        if isinstance(sub, nn.Conv2D):
            _, in_per_group, kernel_h, kernel_w = sub.weight.shape
            bound = 1.0 / math.sqrt(in_per_group * kernel_h * kernel_w)
            nn.initializer.Uniform(-bound, bound)(sub.weight)
            if sub.bias is not None:
                nn.initializer.Uniform(-bound, bound)(sub.bias)
    return layer


def _conv(in_channels, out_channels, kernel_size, stride=1, padding=0):
    return nn.Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=padding)


def _avg_pool(padding):
    # exclusive=False: count padded zeros in the average, as torch's AvgPool2d(count_include_pad=True) does
    return nn.AvgPool2D(kernel_size=2, stride=2, padding=padding, exclusive=False)


class _Network(nn.Sequential):
    """``nn.Sequential`` whose slices are plain ``nn.Sequential`` (Paddle rebuilds a slice with ``self.__class__``,
    which a subclass with its own constructor arguments cannot take); ``net[:11]`` is then e.g. the encoder."""

    def __getitem__(self, index):
        if isinstance(index, slice):
            return nn.Sequential(*list(self.children())[index])
        return super().__getitem__(index)


class PDNSmall(_Network):
    """PDN-S (``common.py::get_pdn_small``): 3 -> 128 -> 256 -> 256 -> ``out_channels``; (N, out, 56, 56) at 256 px.

    conv4x4 - ReLU - avgpool2 - conv4x4 - ReLU - avgpool2 - conv3x3 - ReLU - conv4x4, stride 1, with bias.
    ``padding=True`` (teacher pretraining only) pads the convs by 3/3/1 and the pools by 1: 64x64 at 256 px.
    """

    def __init__(self, out_channels=OUT_CHANNELS, padding=False, hidden_channels=(128, 256)):
        first, second = hidden_channels
        pad = 1 if padding else 0
        super().__init__(
            _conv(3, first, 4, padding=3 * pad), nn.ReLU(), _avg_pool(pad),
            _conv(first, second, 4, padding=3 * pad), nn.ReLU(), _avg_pool(pad),
            _conv(second, second, 3, padding=pad), nn.ReLU(),
            _conv(second, out_channels, 4),
        )
        self.out_channels = out_channels
        self.padding = bool(padding)
        torch_default_init(self)


class PDNMedium(_Network):
    """PDN-M (``common.py::get_pdn_medium``): 3 -> 256 -> 512 -> 512 -> 512 -> out -> out; (N, out, 56, 56).

    conv4x4 - ReLU - avgpool2 - conv4x4 - ReLU - avgpool2 - conv1x1 - ReLU - conv3x3 - ReLU - conv4x4 - ReLU -
    conv1x1. ``padding=True`` pads the two 4x4 convs by 3, the 3x3 conv and the pools by 1 (64x64 at 256 px).
    """

    def __init__(self, out_channels=OUT_CHANNELS, padding=False, hidden_channels=(256, 512)):
        first, second = hidden_channels
        pad = 1 if padding else 0
        super().__init__(
            _conv(3, first, 4, padding=3 * pad), nn.ReLU(), _avg_pool(pad),
            _conv(first, second, 4, padding=3 * pad), nn.ReLU(), _avg_pool(pad),
            _conv(second, second, 1), nn.ReLU(),
            _conv(second, second, 3, padding=pad), nn.ReLU(),
            _conv(second, out_channels, 4), nn.ReLU(),
            _conv(out_channels, out_channels, 1),
        )
        self.out_channels = out_channels
        self.padding = bool(padding)
        torch_default_init(self)


PDN_CLASSES = {"small": PDNSmall, "medium": PDNMedium}


def build_pdn(model_size, out_channels=OUT_CHANNELS, padding=False, hidden_channels=None):
    """PDN-S (``"small"``) or PDN-M (``"medium"``) with ``out_channels`` outputs and PyTorch's default init."""
    if model_size not in PDN_CLASSES:
        raise UserError(f"unknown model size '{model_size}' (choose from {', '.join(MODEL_SIZES)})")
    kwargs = {} if hidden_channels is None else {"hidden_channels": tuple(hidden_channels)}
    return PDN_CLASSES[model_size](out_channels, padding=padding, **kwargs)


def pdn_output_size(image_size=IMAGE_SIZE, padding=False):
    """Side of a PDN's output map (same for S and M) for a square ``image_size`` input: 56 at 256, 64 padded."""
    pad = 1 if padding else 0
    size = image_size + 6 * pad - 3            # conv4x4
    size = (size + 2 * pad - 2) // 2 + 1       # avgpool 2
    size = size + 6 * pad - 3                  # conv4x4
    size = (size + 2 * pad - 2) // 2 + 1       # avgpool 2
    size = size + 2 * pad - 2                  # conv3x3 (PDN-M's extra 1x1 convs keep the size)
    return size - 3                            # conv4x4


class ReplicateResize(nn.Layer):
    """Bilinear resize of a 1x1 map to ``out_size``: every output pixel is the input value (``expand``).

    Same result as torch's bilinear upsampling of one pixel (its two weights sum to 1). Used instead of
    :class:`MatrixResize` for a 1-pixel input: its matmuls then have an inner dimension of 1, and Paddle Inference
    3.3 with oneDNN returns garbage for them (NaN / 1e30 values, different on every run; measured here).
    """

    def __init__(self, out_size):
        super().__init__()
        self.out_size = int(out_size)

    def forward(self, maps):
        return paddle.expand(maps, [-1, -1, self.out_size, self.out_size])


def _bilinear_resize(in_size, out_size):
    if in_size == 1:
        return ReplicateResize(out_size)
    return MatrixResize(in_size, out_size, "bilinear", align_corners=False)


class Autoencoder(_Network):
    """The EfficientAD autoencoder (``common.py::get_autoencoder``) for 3x256x256 inputs: (N, out, 56, 56).

    Encoder: five conv4x4 stride 2 padding 1 (3 -> 32 -> 32 -> 64 -> 64 -> 64, each + ReLU) and a conv8x8 (no
    ReLU) down to a 64x1x1 code. Decoder: six [bilinear resize to 3, 8, 15, 32, 63, 127 - conv4x4 padding 2 - ReLU
    - Dropout(0.2)], a resize to 56, conv3x3 + ReLU, conv3x3 -> ``out_channels``. Resizes are
    :class:`MatrixResize` (torch bilinear, ``align_corners=False``; the first, from the 1x1 code,
    :class:`ReplicateResize`) built for the sizes of a 256 px input, so other input sizes are refused.
    ``hidden_channels`` = (first two encoder widths, the remaining widths).
    """

    def __init__(self, out_channels=OUT_CHANNELS, hidden_channels=(32, 64), dropout=0.2):
        narrow, wide = hidden_channels
        encoder = [
            _conv(3, narrow, 4, 2, 1), nn.ReLU(),
            _conv(narrow, narrow, 4, 2, 1), nn.ReLU(),
            _conv(narrow, wide, 4, 2, 1), nn.ReLU(),
            _conv(wide, wide, 4, 2, 1), nn.ReLU(),
            _conv(wide, wide, 4, 2, 1), nn.ReLU(),
            _conv(wide, wide, 8),
        ]
        decoder = []
        for in_size, out_size in AE_UPSAMPLES[:-1]:
            decoder += [_bilinear_resize(in_size, out_size), _conv(wide, wide, 4, 1, 2), nn.ReLU(),
                        nn.Dropout(dropout)]
        in_size, out_size = AE_UPSAMPLES[-1]
        decoder += [_bilinear_resize(in_size, out_size), _conv(wide, wide, 3, 1, 1), nn.ReLU(),
                    _conv(wide, out_channels, 3, 1, 1)]
        super().__init__(*encoder, *decoder)
        self.out_channels = out_channels
        torch_default_init(self)


def count_parameters(layer):
    """Number of trainable scalars in ``layer`` (buffers excluded)."""
    return int(sum(int(np.prod(p.shape)) for p in layer.parameters()))


def adaptive_avg_pool_matrix(in_length, out_length):
    """(out, in) float64 matrix ``P`` with ``P @ v`` = ``F.adaptive_avg_pool1d(v, out)`` for a length-``in`` ``v``.

    Bin ``i`` averages ``v[floor(i*in/out) : ceil((i+1)*in/out)]`` (PyTorch's rule; bins overlap when ``out`` does
    not divide ``in``).
    """
    matrix = np.zeros((out_length, in_length), dtype=np.float64)
    for i in range(out_length):
        start = (i * in_length) // out_length
        end = -(-((i + 1) * in_length) // out_length)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class PretrainingTargetExtractor(nn.Layer):
    """Teacher-pretraining target of nelson1425 ``pretraining.py`` (``FeatureExtractor.embed``): (N, 384, 64, 64).

    The reference takes Wide-ResNet-101-2 ``layer2`` (512x64x64) and ``layer3`` (1024x32x32) of a 512 px image,
    unfolds each into zero-padded 3x3 patches (channel-major vectors of C*9 values), bilinearly upsamples the
    layer3 patch grid to 64x64, adaptive-average-pools each patch vector to 1024 values (``MeanMapper``),
    concatenates the two layers (2048 values) and adaptive-average-pools them to 384 (``Aggregator``).

    Every step after the backbone is linear and position-independent, so it is computed here as one 3x3 conv per
    layer with a fixed kernel (the product of the two pooling matrices, reshaped to (384, C, 3, 3)), the layer3
    result upsampled (upsampling commutes with a per-position linear map) and added. Same values to float32
    rounding, without the reference's (N*4096, 9216) intermediate. The kernels are constant buffers (not saved).

    ``backbone``: a layer returning [layer2, layer3] with a ``channels`` attribute; by default a frozen
    ``ResNetFeatures("wide_resnet101_2", ("layer2", "layer3"), weights)``, where ``weights="imagenet"`` is
    paddle.vision's own ImageNet file (nelson1425's ``pretraining.py`` used torchvision's: convert it with
    ``scripts/convert_torch_weights.py``, see docs/weights.md).
    """

    def __init__(self, weights="imagenet", out_channels=OUT_CHANNELS, layer_dim=PRETRAIN_LAYER_DIM, backbone=None):
        super().__init__()
        if backbone is None:
            backbone = ResNetFeatures("wide_resnet101_2", layers=PRETRAIN_LAYERS, weights=weights)
        self.backbone = backbone
        self.out_channels = out_channels
        channels = list(backbone.channels)
        taps = PRETRAIN_PATCH_SIZE * PRETRAIN_PATCH_SIZE
        aggregate = adaptive_avg_pool_matrix(len(channels) * layer_dim, out_channels)
        for index, c in enumerate(channels):
            per_layer = adaptive_avg_pool_matrix(c * taps, layer_dim)
            block = aggregate[:, index * layer_dim:(index + 1) * layer_dim] @ per_layer
            kernel = block.reshape(out_channels, c, PRETRAIN_PATCH_SIZE, PRETRAIN_PATCH_SIZE).astype(np.float32)
            self.register_buffer(f"kernel_{index}", paddle.to_tensor(kernel), persistable=False)
        self.num_layers = len(channels)

    def project(self, features):
        """Backbone maps [layer2 (N, C2, h, w), layer3, ...] -> (N, out_channels, h, w) as ``embed`` does."""
        height, width = features[0].shape[2:]
        padding = PRETRAIN_PATCH_SIZE // 2
        total = None
        for index, feature in enumerate(features):
            projected = F.conv2d(feature, getattr(self, f"kernel_{index}"), padding=padding)
            if tuple(projected.shape[2:]) != (height, width):
                projected = F.interpolate(projected, size=[height, width], mode="bilinear", align_corners=False,
                                          align_mode=0)
            total = projected if total is None else total + projected
        return total

    def forward(self, images):
        """``images``: (N, 3, 512, 512) ImageNet-normalised -> target (N, 384, 64, 64), without gradient."""
        with paddle.no_grad():
            return self.project(self.backbone(images))
