"""RD4AD's detector: the exported layer, normalised images -> (anomaly map (N,1,S,S), image score (N,)).

Per scale ``1 - cosine`` along channels between teacher and student maps; each map upsampled to the image size with
bilinear ``align_corners=True``; the three maps summed (official ``amap_mode='a'``); smoothed with a Gaussian of
sigma 4 (SciPy ``gaussian_filter``: reflect border, 33 taps); image score = maximum of the smoothed map.

Upsampling is :class:`common.networks.postprocess.MatrixResize` (products with constant bilinear interpolation matrices),
equal to ``F.interpolate(..., mode="bilinear", align_corners=True)`` to float rounding: Paddle 3.3's
``bilinear_interp`` cannot run under Paddle Inference with oneDNN, while matmul runs everywhere.

Evaluation smooths :meth:`RD4ADDetector.raw_map` with SciPy in float64 (:func:`common.networks.postprocess.gaussian_smooth`),
exactly as the official code; the exported graph and ``predict`` use :class:`common.networks.postprocess.GaussianBlur`, the
same filter as a Paddle layer (equal to SciPy to ~1e-6, checked in the tests).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.networks.postprocess import GaussianBlur, MatrixResize

from .loss import COSINE_EPS


def cosine_distance_maps(teacher_features, student_features):
    """Per scale ``1 - cos`` along channels: a list of (N, 1, h_k, w_k) maps."""
    return [1.0 - F.cosine_similarity(t, s, axis=1, eps=COSINE_EPS).unsqueeze(1)
            for t, s in zip(teacher_features, student_features)]


class SummedAnomalyMap(nn.Layer):
    """The unsmoothed anomaly map (N, 1, S, S): per-scale cosine maps upsampled (align_corners=True) and summed.

    ``feature_sizes``: the (square) sizes of the three teacher maps, e.g. (64, 32, 16) at S = 256.
    """

    def __init__(self, feature_sizes, image_size):
        super().__init__()
        self.upsamplers = nn.LayerList([MatrixResize(size, image_size, mode="bilinear", align_corners=True)
                                        for size in feature_sizes])

    def forward(self, teacher_features, student_features):
        maps = cosine_distance_maps(teacher_features, student_features)
        total = self.upsamplers[0](maps[0])
        for upsampler, amap in zip(self.upsamplers[1:], maps[1:]):
            total = total + upsampler(amap)
        return total


def image_scores(smoothed_maps):
    """Image score = maximum of each smoothed map: (N, 1, S, S) -> (N,)."""
    return paddle.max(smoothed_maps.reshape([smoothed_maps.shape[0], -1]), axis=1)


class RD4ADDetector(nn.Layer):
    """A trained :class:`rd4ad.model.ReverseDistillation` plus scoring: normalised images -> (map, score)."""

    original_resolution = False  # maps are compared at the network's input size

    def __init__(self, model, image_size, sigma=4.0):
        super().__init__()
        self.model = model
        self.image_size = int(image_size)
        self.sigma = float(sigma)
        feature_sizes = [self.image_size // stride for stride in model.teacher.strides]
        self.summed_map = SummedAnomalyMap(feature_sizes, self.image_size)
        self.blur = GaussianBlur(self.image_size, sigma=sigma)

    def raw_map(self, x):
        """The summed map before smoothing (evaluation smooths it with SciPy)."""
        teacher_features, student_features = self.model(x)
        return self.summed_map(teacher_features, student_features)

    def forward(self, x):
        smoothed = self.blur(self.raw_map(x))
        return smoothed, image_scores(smoothed)
