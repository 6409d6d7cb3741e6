"""EfficientAD losses as in nelson1425/EfficientAD ``efficientad.py::main`` (training loop) and ``pretraining.py``.

Per training iteration (image ``x``, its colour-jittered copy ``x'``, optional ImageNet penalty image ``P``):

- ``D = (T_hat(x) - S(x)[:, :C])**2`` with ``T_hat`` the teacher output normalised by the channel mean/std;
  ``d_hard = quantile(D, 0.999)``; ``L_hard = mean(D[D >= d_hard])`` (:func:`hard_feature_loss`);
- ``L_pen = mean(S(P)[:, :C]**2)`` when a penalty image is given (:func:`penalty_loss`); ``L_ST = L_hard + L_pen``;
- ``L_AE = mean((T_hat(x') - A(x'))**2)`` (:func:`autoencoder_loss`);
- ``L_STAE = mean((A(x') - S(x')[:, C:])**2)`` (:func:`student_autoencoder_loss`); ``A`` is *not* detached, so
  the autoencoder also gets this gradient (as in both references);
- ``L = L_ST + L_AE + L_STAE``, summed in this order (:func:`training_losses`).

Teacher pretraining: ``mean((target - prediction)**2)`` (:func:`pretraining_loss`).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np
import paddle

HARD_QUANTILE = 0.999


def mean_all(values):
    """Mean of all elements, accumulated in float64 and returned in the input dtype.

    Paddle's CPU ``paddle.mean`` of a whole float32 tensor is less accurate than torch's (relative error ~2e-5 on
    the 1.2M-element penalty term here, vs ~1e-7 for torch's pairwise sum), which would put the loss terms outside
    float32 agreement with the reference.
    """
    if values.dtype == paddle.float32:
        return paddle.mean(values.astype("float64")).astype("float32")
    return paddle.mean(values)


def quantile(values, q):
    """``torch.quantile(values, q)`` over all elements (linear interpolation), as a 0-D tensor without gradient.

    Follows ATen's ``quantile_compute``: rank = q * (n - 1) computed in the values' dtype (float32 rounding of the
    rank matters for n ~ 10^6), ``lerp`` between the sorted values at floor(rank) and ceil(rank) with torch's
    two-sided formula. Only the top ``n - floor(rank)`` values are needed, so ``topk`` replaces a full sort.
    """
    flat = values.detach().reshape([-1])
    count = int(flat.shape[0])
    if count == 0:
        raise ValueError("quantile of an empty tensor")
    dtype = np.float64 if flat.dtype == paddle.float64 else np.float32
    rank = dtype(q) * dtype(count - 1)
    below = int(rank)
    above = int(np.ceil(rank))
    weight = rank - dtype(below)
    largest, _ = paddle.topk(flat, k=count - below, largest=True, sorted=True)   # descending
    value_below = largest[count - 1 - below]
    value_above = largest[count - 1 - above]
    # weights as tensors of the values' dtype: a Python float would go through a float32 ``scale`` attribute
    if weight < 0.5:
        return value_below + (value_above - value_below) * paddle.to_tensor(weight, dtype=flat.dtype)
    return value_above - (value_above - value_below) * paddle.to_tensor(dtype(1) - weight, dtype=flat.dtype)


def hard_feature_loss(teacher_features, student_features, q=HARD_QUANTILE):
    """Hard-feature student loss: ``(L_hard, d_hard, hard_count)``.

    ``teacher_features``: normalised teacher output (N, C, h, w); ``student_features``: the student's first C
    channels. ``d_hard`` is the ``q`` quantile of all squared differences, ``hard_count`` (int64 0-D) the number of
    elements ``>= d_hard`` whose mean is ``L_hard``.
    """
    distance = (teacher_features - student_features) ** 2
    d_hard = quantile(distance, q)
    hard = distance >= d_hard
    loss = mean_all(paddle.masked_select(distance, hard))
    return loss, d_hard, hard.astype("int64").sum()


def penalty_loss(student_penalty_features):
    """ImageNet penalty ``mean(S(P)[:, :C]**2)``; pass the student's first C channels on the penalty image."""
    return mean_all(student_penalty_features ** 2)


def autoencoder_loss(teacher_features, autoencoder_output):
    """``mean((T_hat(x') - A(x'))**2)`` with the normalised teacher output on the augmented image."""
    return mean_all((teacher_features - autoencoder_output) ** 2)


def student_autoencoder_loss(autoencoder_output, student_features):
    """``mean((A(x') - S(x')[:, C:])**2)``; ``autoencoder_output`` is not detached (reference behaviour)."""
    return mean_all((autoencoder_output - student_features) ** 2)


def pretraining_loss(target, prediction):
    """Teacher pretraining loss ``mean((target - prediction)**2)`` (normalised extractor target vs padded PDN)."""
    return mean_all((target - prediction) ** 2)


@dataclass
class TrainingLosses:
    """The terms of one training iteration; ``total`` is what is back-propagated."""

    total: paddle.Tensor
    student: paddle.Tensor                  # L_ST = L_hard (+ L_pen)
    hard: paddle.Tensor                     # L_hard
    penalty: Optional[paddle.Tensor]        # L_pen, None without a penalty image
    autoencoder: paddle.Tensor              # L_AE
    student_autoencoder: paddle.Tensor      # L_STAE
    d_hard: paddle.Tensor                   # the q-quantile threshold
    hard_count: paddle.Tensor               # elements >= d_hard

    def as_floats(self):
        """``{name: float}`` of every term (``penalty`` omitted when absent), for logging."""
        names = ("total", "student", "hard", "penalty", "autoencoder", "student_autoencoder", "d_hard",
                 "hard_count")
        return {n: float(getattr(self, n)) for n in names if getattr(self, n) is not None}


def training_losses(detector, image_st, image_ae, image_penalty=None, q=HARD_QUANTILE, teacher=None):
    """All loss terms of one iteration of nelson1425's training loop, for an :class:`EfficientADDetector`.

    ``image_st``: training images (N, 3, 256, 256); ``image_ae``: the same images colour-jittered (the
    autoencoder branch); ``image_penalty``: an ImageNet batch or None. The teacher runs without gradient; the
    student runs once per image batch (three times with a penalty image), as in the reference. ``teacher``: what
    runs the frozen teacher network (training passes a ``common.training.frozen.FrozenForward`` of it); default: the
    detector's teacher under ``paddle.no_grad()``.
    """
    channels = detector.out_channels
    if teacher is None:
        def teacher(images):
            with paddle.no_grad():
                return detector.teacher(images)

    def normalized_teacher(images):
        return (teacher(images) - detector.teacher_mean) / detector.teacher_std

    teacher_st = normalized_teacher(image_st)
    student_st = detector.student(image_st)[:, :channels]
    hard, d_hard, hard_count = hard_feature_loss(teacher_st, student_st, q)
    if image_penalty is not None:
        penalty = penalty_loss(detector.student(image_penalty)[:, :channels])
        loss_st = hard + penalty
    else:
        penalty = None
        loss_st = hard

    ae_output = detector.autoencoder(image_ae)
    teacher_ae = normalized_teacher(image_ae)
    student_ae = detector.student(image_ae)[:, channels:]
    loss_ae = autoencoder_loss(teacher_ae, ae_output)
    loss_stae = student_autoencoder_loss(ae_output, student_ae)
    total = loss_st + loss_ae + loss_stae
    return TrainingLosses(total, loss_st, hard, penalty, loss_ae, loss_stae, d_hard, hard_count)
