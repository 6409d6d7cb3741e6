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


def _cosine_from_sums(dot, tt, ss):
    """``dot / max(||t|| ||s||, eps)``, as torch's cosine_similarity clamps the product of the norms."""
    return dot / paddle.sqrt(paddle.clip(tt * ss, min=COSINE_EPS * COSINE_EPS))


def _flat_sums(x):
    """Per-sample sum of an (N, C, H, W) tensor: float32 sums over W (at most 64 terms), then float64 over H and C.

    A float32 reduction over the 10^6 elements of a flattened WRN50 map loses about 1e-4 of the loss (5e-3 once the
    student has converged and 1 - cos is small); summing rows in float32 and the rest in float64 keeps the loss
    within 1e-7 of a float64 computation at the cost of a float32 one.
    """
    return x.sum(axis=3).astype("float64").sum(axis=2).sum(axis=1)


def flattened_cosine_loss(teacher_features, student_features):
    """Sum over scales of the batch mean of ``1 - cos(flatten(t_i), flatten(s_i))``."""
    total = 0.0
    for teacher, student in zip(teacher_features, student_features):
        cosine = _cosine_from_sums(_flat_sums(teacher * student), _flat_sums(teacher * teacher),
                                   _flat_sums(student * student))
        total = total + paddle.mean(1.0 - cosine)
    return total.astype("float32")


def per_pixel_cosine_loss(teacher_features, student_features):
    """Sum over scales of the mean over batch and pixels of ``1 - cos`` along channels (mean in float64)."""
    total = 0.0
    for teacher, student in zip(teacher_features, student_features):
        distance = 1.0 - F.cosine_similarity(teacher, student, axis=1, eps=COSINE_EPS)
        total = total + paddle.mean(distance.astype("float64"))
    return total.astype("float32")


def distillation_loss(teacher_features, student_features, kind="flattened"):
    """The loss named by ``kind`` (one of :data:`LOSSES`)."""
    if kind == "flattened":
        return flattened_cosine_loss(teacher_features, student_features)
    if kind == "per_pixel":
        return per_pixel_cosine_loss(teacher_features, student_features)
    raise ValueError(f"unknown loss '{kind}', choose from {LOSSES}")
