"""Decision thresholds from normal images: a quantile of their scores or map pixels."""
import numpy as np

from common.core.errors import UserError


# ----------------------------------------------------------------------------------------------------------------
# Thresholds and classification metrics
# ----------------------------------------------------------------------------------------------------------------
def calibrate_threshold(normal_values, quantile=0.99):
    """Decision threshold from held-out normal data: the ``quantile`` of ``normal_values`` (``np.quantile``, linear).

    Pass normal image scores for an image threshold, or normal anomaly maps (any shape, all pixels pooled) for a
    pixel threshold. With ``quantile=0.99`` about 1% of normal images (pixels) are flagged.
    """
    if not 0 <= quantile <= 1:
        raise UserError(f"quantile must be in [0, 1], got {quantile}")
    values = np.asarray(normal_values)
    if values.size == 0:
        raise UserError("cannot calibrate a threshold: no normal values given")
    if not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise UserError("cannot calibrate a threshold: the normal values contain NaN or Inf")
    return float(np.quantile(values, quantile))
