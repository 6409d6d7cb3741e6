"""Image and pixel AUROC (scikit-learn), and precision / recall / F1 at a decision threshold."""
import numpy as np
from sklearn.metrics import roc_auc_score

from .checks import binary_labels, finite_scores, masks_and_maps


# ----------------------------------------------------------------------------------------------------------------
# Public metrics
# ----------------------------------------------------------------------------------------------------------------
def image_auroc(labels, scores, names=None):
    """Image-level AUROC (``sklearn.metrics.roc_auc_score``); ``None`` when ``labels`` hold a single class."""
    labels = binary_labels(labels)
    scores = finite_scores(scores, len(labels), names)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks, maps, names=None):
    """Pixel-level AUROC over all pixels of all images pooled (``roc_auc_score``); ``None`` for a single class.

    The pixels are passed to sklearn as flat views (bool masks, maps in their own dtype), without float64 copies.
    """
    masks, maps = masks_and_maps(masks, maps, names)
    defect_pixels = np.count_nonzero(masks)
    if defect_pixels == 0 or defect_pixels == masks.size:
        return None
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def precision_recall_f1(labels, scores, threshold, names=None):
    """Precision, recall and F1 of the rule "defective when score >= threshold".

    A ratio whose denominator is zero is 0.0 (no image predicted defective: precision 0; no defective image: recall
    0), as sklearn's ``zero_division=0``. Returns ``{"precision", "recall", "f1", "threshold", "tp", "fp", "fn",
    "tn"}``.
    """
    labels = binary_labels(labels)
    scores = finite_scores(scores, len(labels), names)
    predicted = scores >= threshold
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = int(np.count_nonzero(~predicted & labels))
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": float(threshold),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}
