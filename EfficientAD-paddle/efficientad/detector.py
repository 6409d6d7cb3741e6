"""The EfficientAD detector: teacher, student and autoencoder with the normalisation statistics as buffers.

Reproduces nelson1425/EfficientAD ``efficientad.py``: ``predict`` (ST and AE maps, quantile normalisation, 0.5/0.5
combination), the post-processing of ``test`` (zero padding by 4, bilinear resize with ``align_corners=False``,
image score = max of the map), ``teacher_normalization`` and ``map_normalization``.

The reference keeps the teacher mean/std and the four map quantiles as local variables, so a trained model cannot
be used on its own (nelson1425 PR #19 comments). Here they are buffers (``teacher_mean``, ``teacher_std``,
``q_st_start``, ``q_st_end``, ``q_ae_start``, ``q_ae_end``): saved in the state dict and baked into exported graphs.
Their initial values (mean 0, std 1, quantiles 0 / 0.1) make both normalisations the identity.

``forward`` is exportable (``paddle.jit.to_static(full_graph=True)``) and runs under Paddle Inference with oneDNN:
the final resize is :class:`common.networks.postprocess.MatrixResize`, not ``F.interpolate``.
"""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from common.core.errors import UserError
from common.networks.postprocess import MatrixResize, upsample

from .loss import quantile
from .model import IMAGE_SIZE, MAP_SIZE, OUT_CHANNELS, Autoencoder, build_pdn

MAP_PADDING = 4                 # zero border added to the 56x56 maps before upsampling (nelson1425 ``test``)
Q_START, Q_END = 0.9, 0.995     # map_normalization quantiles q_a, q_b
NORMALIZED_Q_END = 0.1          # q_end maps to 0.1 (q_start to 0)


class PaddedResize(MatrixResize):
    """Zero padding by ``padding`` on each side, then a bilinear resize (``align_corners=False``) to ``out_size``,
    as one :class:`MatrixResize` of the unpadded map: the padded zeros add nothing to the products, so the
    interpolation matrices of the padded size lose their border columns.

    Why not ``F.pad``: paddle2onnx 2.1 converts its ``pad3d`` op with an uninitialised pad value (2 of 5 ONNX exports
    of this detector padded with 1.0 or 3e32 instead of 0; measured here).
    """

    def __init__(self, in_size, padding, out_size):
        padded = in_size + 2 * padding
        super().__init__(padded, out_size, "bilinear", align_corners=False)
        self.in_size = (int(in_size), int(in_size))
        inner = slice(padding, padding + in_size)
        self.register_buffer("rows", self.rows[:, inner].clone(), persistable=False)
        self.register_buffer("cols", self.cols[inner, :].clone(), persistable=False)


class EfficientADDetector(nn.Layer):
    """Teacher + student + autoencoder -> anomaly map and score for (N, 3, 256, 256) ImageNet-normalised images.

    ``teacher`` (C outputs) is frozen (``stop_gradient`` parameters, always in eval mode); ``student`` has 2C
    outputs (first C predict the teacher, last C the autoencoder); ``autoencoder`` has C outputs. Use
    :func:`build_detector` for the paper's networks.
    """

    # nelson1425 resizes each map to its test image's own size: the shared predict/infer do the same for this class
    original_resolution = True

    def __init__(self, teacher, student, autoencoder):
        super().__init__()
        channels = teacher.out_channels
        if student.out_channels != 2 * channels or autoencoder.out_channels != channels:
            raise UserError(f"student must have 2x{channels} and the autoencoder {channels} output channels, got "
                            f"{student.out_channels} and {autoencoder.out_channels}")
        self.teacher, self.student, self.autoencoder = teacher, student, autoencoder
        self.out_channels = channels
        for param in self.teacher.parameters():
            param.stop_gradient = True
        self.register_buffer("teacher_mean", paddle.zeros([1, channels, 1, 1], "float32"))
        self.register_buffer("teacher_std", paddle.ones([1, channels, 1, 1], "float32"))
        for name, value in (("q_st_start", 0.0), ("q_st_end", NORMALIZED_Q_END),
                            ("q_ae_start", 0.0), ("q_ae_end", NORMALIZED_Q_END)):
            self.register_buffer(name, paddle.full([1], value, "float32"))
        self.resize = PaddedResize(MAP_SIZE, MAP_PADDING, IMAGE_SIZE)

    # -- state -------------------------------------------------------------------------------------------------
    def train(self, mode=True):
        """Set the student and autoencoder (dropout) mode; the teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    def trainable_parameters(self):
        """Student and autoencoder parameters: what the reference's Adam optimises."""
        return list(self.student.parameters()) + list(self.autoencoder.parameters())

    def set_teacher_statistics(self, mean, std):
        """Store the channel mean and std (any shape with C elements, e.g. from :func:`teacher_normalization`)."""
        self._set("teacher_mean", mean)
        self._set("teacher_std", std)

    def set_map_quantiles(self, q_st_start, q_st_end, q_ae_start, q_ae_end):
        """Store q_a/q_b of the ST and AE maps (from :func:`map_normalization`)."""
        for name, value in (("q_st_start", q_st_start), ("q_st_end", q_st_end),
                            ("q_ae_start", q_ae_start), ("q_ae_end", q_ae_end)):
            self._set(name, value)

    def _set(self, name, value):
        buffer = getattr(self, name)
        value = np.asarray(value.numpy() if isinstance(value, paddle.Tensor) else value, dtype=np.float32)
        if value.size != int(np.prod(buffer.shape)):
            raise UserError(f"{name} needs {int(np.prod(buffer.shape))} values, got {value.size}")
        buffer.set_value(value.reshape(buffer.shape))

    # -- computation -------------------------------------------------------------------------------------------
    def normalized_teacher(self, images):
        """Teacher output normalised with the channel statistics, ``(T(x) - mean) / std``: (N, C, 56, 56)."""
        return (self.teacher(images) - self.teacher_mean) / self.teacher_std

    def distance_maps(self, images):
        """Raw ``(map_st, map_ae)``, each (N, 1, 56, 56): channel means of the squared ST and AE differences."""
        teacher_output = self.normalized_teacher(images)
        student_output = self.student(images)
        autoencoder_output = self.autoencoder(images)
        channels = self.out_channels
        map_st = paddle.mean((teacher_output - student_output[:, :channels]) ** 2, axis=1, keepdim=True)
        map_ae = paddle.mean((autoencoder_output - student_output[:, channels:]) ** 2, axis=1, keepdim=True)
        return map_st, map_ae

    def normalized_maps(self, images):
        """``(combined, map_st, map_ae)`` at 56x56 after the quantile normalisation (reference ``predict``)."""
        map_st, map_ae = self.distance_maps(images)
        map_st = NORMALIZED_Q_END * (map_st - self.q_st_start) / (self.q_st_end - self.q_st_start)
        map_ae = NORMALIZED_Q_END * (map_ae - self.q_ae_start) / (self.q_ae_end - self.q_ae_start)
        return 0.5 * map_st + 0.5 * map_ae, map_st, map_ae

    def padded_map(self, images):
        """Combined normalised map zero-padded by 4: (N, 1, 64, 64), before any resize.

        For evaluation at the original image resolution, resize each map with :func:`resize_map`.
        """
        combined, _, _ = self.normalized_maps(images)
        return F.pad(combined, [MAP_PADDING] * 4, mode="constant", value=0.0)

    def forward(self, x):
        """``x`` (N, 3, 256, 256) images -> (anomaly map (N, 1, 256, 256), score (N,) = max of the map)."""
        combined, _, _ = self.normalized_maps(x)
        anomaly_map = self.resize(combined)
        # paddle.max, not paddle.amax: paddle2onnx 2.1 has no converter for amax (the ONNX export aborts)
        return anomaly_map, paddle.max(anomaly_map, axis=[1, 2, 3])


def build_detector(model_size="small", out_channels=OUT_CHANNELS):
    """The paper's detector: PDN-S or PDN-M teacher (C) and student (2C), autoencoder (C), PyTorch-default init."""
    return EfficientADDetector(build_pdn(model_size, out_channels), build_pdn(model_size, 2 * out_channels),
                               Autoencoder(out_channels))


def resize_map(maps, size):
    """Bilinear resize (``align_corners=False``) of (N, 1, h, w) maps to ``size`` = (H, W) (dygraph only).

    nelson1425 resizes each padded 64x64 map to its test image's original resolution before scoring and saving.
    """
    return upsample(maps, size, mode="bilinear", align_corners=False)


def _as_tensor(batch):
    return batch if isinstance(batch, paddle.Tensor) else paddle.to_tensor(np.asarray(batch, dtype=np.float32))


def _check_reiterable(batches, what):
    if iter(batches) is batches:
        raise TypeError(f"{what} must be re-iterable (a list or a DataLoader), not a one-shot iterator")


@paddle.no_grad()
def channel_statistics(network, mean_batches, std_batches):
    """Channel ``(mean, std)`` of ``network`` outputs, each (1, C, 1, 1), as nelson1425 computes them.

    mean = average over batches of each batch's mean over (N, H, W); std = sqrt of the average over batches of
    each batch's mean over (N, H, W) of (y - mean)**2. The reference passes over its data twice (``mean_batches``
    then ``std_batches``); ``pretraining.py::feature_normalization`` draws different images for the two passes.
    """
    means = [paddle.mean(network(_as_tensor(b)), axis=[0, 2, 3]) for b in mean_batches]
    if not means:
        raise UserError("no batches to compute the channel mean from")
    channel_mean = paddle.mean(paddle.stack(means), axis=0).reshape([1, -1, 1, 1])
    variances = [paddle.mean((network(_as_tensor(b)) - channel_mean) ** 2, axis=[0, 2, 3]) for b in std_batches]
    if not variances:
        raise UserError("no batches to compute the channel std from")
    channel_std = paddle.sqrt(paddle.mean(paddle.stack(variances), axis=0)).reshape([1, -1, 1, 1])
    return channel_mean, channel_std


def teacher_normalization(teacher, batches):
    """``efficientad.py::teacher_normalization``: teacher channel (mean, std) over ``batches`` (two passes).

    ``batches``: a re-iterable of (N, 3, 256, 256) training images (the reference's shuffled train loader).
    """
    _check_reiterable(batches, "batches")
    was_training = teacher.training
    teacher.eval()
    try:
        return channel_statistics(teacher, batches, batches)
    finally:
        teacher.train(was_training)


@paddle.no_grad()
def map_normalization(detector, batches):
    """``efficientad.py::map_normalization``: ``(q_st_start, q_st_end, q_ae_start, q_ae_end)`` as floats.

    Raw ST and AE maps of every image of ``batches`` (validation images, not augmented) are pooled and their
    0.9 and 0.995 quantiles taken (torch.quantile's linear rule). The detector runs in eval mode (no dropout);
    its mode is restored afterwards.
    """
    was_training = detector.training
    detector.eval()
    try:
        maps_st, maps_ae = [], []
        for batch in batches:
            map_st, map_ae = detector.distance_maps(_as_tensor(batch))
            maps_st.append(map_st)
            maps_ae.append(map_ae)
    finally:
        detector.train(was_training)
    if not maps_st:
        raise UserError("no validation images to compute the map quantiles from")
    maps_st, maps_ae = paddle.concat(maps_st), paddle.concat(maps_ae)
    return tuple(float(quantile(maps, q)) for maps, q in
                 ((maps_st, Q_START), (maps_st, Q_END), (maps_ae, Q_START), (maps_ae, Q_END)))
