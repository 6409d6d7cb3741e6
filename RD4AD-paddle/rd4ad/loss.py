"""RD4AD distillation loss: the official code's form, and the paper's per-pixel form behind ``loss: per_pixel``.

- ``flattened`` (official ``main.py::loss_fucntion``, used for the published numbers): per scale, each sample's
  map is flattened to one C*H*W vector, the loss is ``1 - cosine`` of the two vectors averaged over the batch;
  the three scales are summed.
- ``per_pixel`` (paper Eq. 1-2): per scale, ``1 - cosine`` along channels at every pixel, averaged over the
  batch and the H*W positions; the three scales are summed. Reported to lower carpet image AUROC (issue
  hq-deng/RD4AD#22), so it is an option, not the default.
"""
import paddle
import paddle.nn.functional as F

LOSSES = ("flattened", "per_pixel")
COSINE_EPS = 1e-8


def flattened_cosine_loss(teacher_features, student_features):
    """Sum over scales of the batch mean of ``1 - cos(flatten(t_i), flatten(s_i))``."""
    total = 0.0
    for teacher, student in zip(teacher_features, student_features):
        batch = teacher.shape[0]
        cosine = F.cosine_similarity(teacher.reshape([batch, -1]), student.reshape([batch, -1]), axis=1,
                                     eps=COSINE_EPS)
        total = total + paddle.mean(1.0 - cosine)
    return total


def per_pixel_cosine_loss(teacher_features, student_features):
    """Sum over scales of the mean over batch and pixels of ``1 - cos`` along channels."""
    total = 0.0
    for teacher, student in zip(teacher_features, student_features):
        total = total + paddle.mean(1.0 - F.cosine_similarity(teacher, student, axis=1, eps=COSINE_EPS))
    return total


def distillation_loss(teacher_features, student_features, kind="flattened"):
    """The loss named by ``kind`` (one of :data:`LOSSES`)."""
    if kind == "flattened":
        return flattened_cosine_loss(teacher_features, student_features)
    if kind == "per_pixel":
        return per_pixel_cosine_loss(teacher_features, student_features)
    raise ValueError(f"unknown loss '{kind}', choose from {LOSSES}")
