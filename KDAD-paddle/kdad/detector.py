"""MKD inference: detection score and gradient-saliency anomaly map, batched, as one Paddle layer.

Reproduces ``test_functions.py`` of Niousha12/Knowledge_Distillation_AD (image by image there, batched here):

- score: ``detection_test``'s per-image loss over pool3 .. pool5 (:func:`kdad.loss.detection_scores`);
- ``method="vanilla"`` (``gradients_localization``, the Paddle port's published numbers): the input gradient
  of that per-image loss, made single-channel by ``convert_to_grayscale`` (sum of |grad| over channels,
  ``(g - min) / (p99 - min)`` clipped to [0, 1]), then ``gaussian_filter(sigma=4)``;
- ``method="smoothgrad"`` (``smooth_grad_localization``): 50 noisy copies, each gradient made single-channel
  as above, averaged; abs, per-image min-max, Gaussian. The official noise std is ``(0.05 / (max x - min x))**2``
  (the code passes sigma**2 as the std, so the noise is tiny); ``smoothgrad_noise="corrected"`` uses the
  usual SmoothGrad std ``0.05 * (max x - min x)``;
- ``method="gbp"`` (``gbp_localization``, the official config default): guided backprop through the cloner's
  ReLUs only (the expert backpropagates normally), single-channel as above, abs, min-max, Gaussian.

Images are independent: the networks run in eval mode (BatchNorm with running statistics), so the gradient
of the sum of per-image losses is each image's own gradient. ``forward`` therefore refuses a network left
in train mode.

Degenerate maps: where the official code divides 0 by 0 (a flat gradient map) and returns NaN, the
denominators here are clamped at the smallest normal float32, giving 0 where the map is at its minimum.

The Gaussian is ``common.networks.postprocess.GaussianBlur`` (SciPy's reflect border, float32); the official code runs
``scipy.ndimage.gaussian_filter`` on float32 maps, which also rounds to float32.
"""
import numpy as np
import paddle
from paddle import nn

from common.networks.postprocess import GaussianBlur

from .loss import DEFAULT_LAMDA, SCORE_TAPS, combine_terms, per_image_terms, tap_gradients
from .model import chain_input_gradient, run_chain

METHODS = ("vanilla", "smoothgrad", "gbp")
SMOOTHGRAD_NOISE = ("official", "corrected")
SMOOTHGRAD_SAMPLES = 50       # official generate_smooth_grad(data, 50, 0.05, vbp)
SMOOTHGRAD_NOISE_LEVEL = 0.05
SALIENCY_SIGMA = 4.0
PERCENTILE = 99.0             # convert_to_grayscale: np.percentile(grayscale, 99)
_TINY = float(np.finfo(np.float32).tiny)

# The helpers below are plain tensor code without data-dependent control flow. ``paddle.jit.not_to_static`` runs
# them as they are inside ``paddle.jit.to_static`` (dy2static's rewrite of them fails on module constants used
# as default arguments).


@paddle.jit.not_to_static
def percentile_positions(count, q=PERCENTILE):
    """``(low, fraction)`` of NumPy's default (linear) percentile ``q`` of ``count`` values."""
    position = q / 100.0 * (count - 1)
    low = int(np.floor(position))
    return low, position - low


@paddle.jit.not_to_static
def per_image_percentile(values, q=PERCENTILE):
    """``np.percentile(row, q)`` (linear interpolation) of every row of ``values`` (N, P) -> (N, 1).

    Uses ``topk`` of the ``P - low`` largest values rather than a full sort (cheaper, and it exports).
    """
    count = values.shape[1]
    low, fraction = percentile_positions(count, q)
    kept = count - low  # the low-th smallest value is the kept-th largest
    largest = paddle.topk(values, k=kept, axis=1, largest=True, sorted=True)[0]
    at_low = largest[:, kept - 1:kept]
    if kept < 2:
        return at_low
    at_high = largest[:, kept - 2:kept - 1]
    return at_low + fraction * (at_high - at_low)


@paddle.jit.not_to_static
def grayscale(gradients):
    """Official ``convert_to_grayscale`` per image: (N, C, H, W) -> (N, 1, H, W) in [0, 1]."""
    summed = paddle.sum(paddle.abs(gradients), axis=1, keepdim=True)
    flat = paddle.flatten(summed, start_axis=1)
    upper = per_image_percentile(flat)
    lower = paddle.min(flat, axis=1, keepdim=True)
    scaled = (flat - lower) / paddle.clip(upper - lower, min=_TINY)
    return paddle.clip(scaled, 0.0, 1.0).reshape([-1, 1, summed.shape[2], summed.shape[3]])


@paddle.jit.not_to_static
def min_max(maps):
    """Per-image ``(m - min) / (max - min)`` of (N, 1, H, W) maps, as the official SmoothGrad/GBP code."""
    flat = paddle.flatten(maps, start_axis=1)
    lower = paddle.min(flat, axis=1, keepdim=True)
    upper = paddle.max(flat, axis=1, keepdim=True)
    return ((flat - lower) / paddle.clip(upper - lower, min=_TINY)).reshape([-1] + list(maps.shape[1:]))


@paddle.jit.not_to_static
def smoothgrad_std(x, level=SMOOTHGRAD_NOISE_LEVEL, noise="official"):
    """Per-image noise std (N, 1, 1, 1) from each image's value range (official: ``(level / range) ** 2``)."""
    flat = paddle.flatten(x, start_axis=1)
    value_range = paddle.max(flat, axis=1) - paddle.min(flat, axis=1)
    if noise == "official":
        std = paddle.square(level / value_range)
    elif noise == "corrected":
        std = level * value_range
    else:
        raise ValueError(f"unknown SmoothGrad noise '{noise}', choose from {SMOOTHGRAD_NOISE}")
    return std.reshape([-1, 1, 1, 1])


class KDADDetector(nn.Layer):
    """``forward(x)``: (N, 3, S, S) images in [0, 1] -> ``(anomaly_map (N, 1, S, S), score (N,))``, float32.

    ``network``: a :class:`kdad.model.KDADNetwork` (in eval mode). ``method``: one of :data:`METHODS`.
    SmoothGrad draws ``smoothgrad_samples`` standard-normal noise tensors with ``paddle.randn_like`` (seed Paddle
    for repeatable maps) unless ``forward``/:meth:`saliency` is given them. The network may also be float64
    (tests); the map is float32 either way.
    """

    original_resolution = False  # maps are compared at the network's input size

    def __init__(self, network, lamda=DEFAULT_LAMDA, method="vanilla", image_size=128, sigma=SALIENCY_SIGMA,
                 smoothgrad_samples=SMOOTHGRAD_SAMPLES, smoothgrad_noise_level=SMOOTHGRAD_NOISE_LEVEL,
                 smoothgrad_noise="official", loss_form="code"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"unknown localisation method '{method}', choose from {METHODS}")
        if smoothgrad_noise not in SMOOTHGRAD_NOISE:
            raise ValueError(f"unknown SmoothGrad noise '{smoothgrad_noise}', choose from {SMOOTHGRAD_NOISE}")
        self.network = network
        self.lamda, self.method, self.loss_form = float(lamda), method, loss_form
        self.image_size = int(image_size)
        self.smoothgrad_samples = int(smoothgrad_samples)
        self.smoothgrad_noise_level = float(smoothgrad_noise_level)
        self.smoothgrad_noise = smoothgrad_noise
        self.blur = GaussianBlur(self.image_size, sigma)

    def _check_eval(self):
        if self.network.cloner.training:
            raise RuntimeError("KDADDetector needs the network in eval mode (call .eval()): in train mode "
                               "BatchNorm mixes the images of a batch and updates its running statistics")

    def _scores64(self, expert_taps, cloner_taps):
        direction, value = per_image_terms(expert_taps, cloner_taps, SCORE_TAPS)
        return combine_terms(direction, value, self.lamda, self.loss_form)

    def scores(self, x):
        """Detection scores (N,) float32 of images (N, 3, S, S)."""
        self._check_eval()
        return self._scores64(*self.network(x)).astype("float32")

    def input_gradients(self, x, guided=False):
        """``(gradients (N, 3, S, S), scores (N,))``: each image's loss gradient w.r.t. itself, and the loss.

        The backward pass is written out with forward operators (:func:`kdad.model.chain_input_gradient`), so no
        autograd is involved: it runs under ``paddle.no_grad()``, exports without gradient operators, and runs
        under Paddle Inference with oneDNN and in ONNX runtimes. ``guided=True`` backpropagates through the
        cloner's ReLUs as guided backprop (official GBP hooks the cloner only); the expert's part is plain.
        """
        self._check_eval()
        expert, cloner = self.network.expert, self.network.cloner
        expert_outputs = run_chain(expert.features, x)
        cloner_outputs = run_chain(cloner.features, x, cloner.taps[-1] + 1)
        expert_taps = [expert_outputs[index] for index in expert.taps]
        cloner_taps = [cloner_outputs[index] for index in cloner.taps]
        scores = self._scores64(expert_taps, cloner_taps)
        # Each score tap's term depends on that tap's outputs only, so its gradient there is the loss's partial
        # derivative at the tap, which is what the chain backward takes.
        to_expert, to_cloner = {}, {}
        for tap in SCORE_TAPS:
            to_expert[expert.taps[tap]], to_cloner[cloner.taps[tap]] = tap_gradients(
                expert_taps[tap], cloner_taps[tap], self.lamda, self.loss_form)
        through_expert = chain_input_gradient(expert.features, x, expert_outputs, to_expert)
        through_cloner = chain_input_gradient(cloner.features, x, cloner_outputs, to_cloner, guided=guided)
        return through_expert + through_cloner, scores.astype("float32")

    def saliency(self, x, noise=None):
        """``(saliency (N, 1, S, S) before the Gaussian, scores (N,))`` for ``self.method``.

        ``noise`` (SmoothGrad only): standard-normal samples (samples, N, 3, S, S), scaled here by the
        per-image std; ``None`` draws ``smoothgrad_samples`` of them with ``paddle.randn_like``.
        """
        if self.method == "vanilla":
            gradients, scores = self.input_gradients(x)
            return grayscale(gradients), scores
        if self.method == "gbp":
            gradients, scores = self.input_gradients(x, guided=True)
            return min_max(paddle.abs(grayscale(gradients))), scores
        return self._smoothgrad(x, noise)

    def _smoothgrad(self, x, noise):
        scores = self.scores(x)
        std = smoothgrad_std(x, self.smoothgrad_noise_level, self.smoothgrad_noise)
        samples = self.smoothgrad_samples if noise is None else noise.shape[0]
        total = None
        for index in range(samples):
            unit = paddle.randn_like(x) if noise is None else noise[index]
            gradients, _ = self.input_gradients(x + std * unit)
            single = grayscale(gradients)
            total = single if total is None else total + single
        return min_max(paddle.abs(total / samples)), scores

    def forward(self, x, noise=None):
        saliency, scores = self.saliency(x, noise)
        # the blur is float32 (its constants stay float32 even if the network is cast to float64)
        return self.blur(saliency.astype("float32")), scores
