"""MKD's own evaluation metrics, as ``test_functions.py`` of Niousha12/Knowledge_Distillation_AD computes them.

- :func:`kdad_detection_auroc` (``detection_test``): ``sklearn.metrics.auc`` of ``roc_curve(labels, scores,
  pos_label=0)`` with good = 1 and defective = 0, i.e. the ordinary image AUROC with defects as positives,
  rounded to 4 decimals as the official code prints it.
- :func:`kdad_localization_auroc` (``compute_localization_auc``), computed on the *defective* test images only
  (the official README has ``test/good`` deleted), with *soft* ground truth (the mean of the three RGB channels
  of the mask resized to 128 px, not binarised):

  for t in 0.000, 0.001, ..., 0.999: binary = ``saliency >= t``; a morphological opening of every image with
  ``cv2.getStructuringElement(MORPH_ELLIPSE, (3, 3))`` (a 3x3 cross); TPR = sum(binary * gt) / sum(gt),
  FPR = sum(binary * (1 - gt)) / sum(1 - gt), pooled over all pixels of all images; AUC = trapezoid
  (``sklearn.metrics.auc``) over these 1000 points (the curve need not reach (0, 0) or (1, 1)).

Vectorised without changing the value: an opening with a flat structuring element commutes with thresholding,
so ``opening(saliency >= t) == (grey_opening(saliency) >= t)`` pixel for pixel. One grey opening per image
(``scipy.ndimage.grey_opening``, border mode ``nearest``, which for a 3x3 element containing its centre equals
OpenCV's default border that ignores outside pixels) and one histogram of the opened values over the 1000
thresholds give every TP/FP count. The thresholds are the official ``0.001 * i`` compared in the saliency's
dtype, as NumPy compares a float32 array with a Python float. Sums are float64; the official code sums
float32 products of a float32 mask (``np.sum``), so its rates carry ~1e-7 relative rounding that these do not.
"""
import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, roc_curve

THRESHOLD_COUNT = 1000
THRESHOLD_STEP = 0.001
# cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
CROSS_3X3 = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def kdad_detection_auroc(scores, is_anomalous, decimals=4):
    """Official detection AUROC: defects are the positive class; rounded to ``decimals`` (None: not rounded)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    is_anomalous = np.asarray(is_anomalous).astype(bool).ravel()
    if scores.shape != is_anomalous.shape:
        raise ValueError(f"{scores.size} scores for {is_anomalous.size} labels")
    if is_anomalous.all() or not is_anomalous.any():
        raise ValueError("detection AUROC needs both good and defective images")
    labels = np.where(is_anomalous, 0, 1)  # official: good -> 1, every defect type -> 0, pos_label=0
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=0)
    value = float(auc(fpr, tpr))
    return value if decimals is None else round(value, decimals)


def localization_thresholds(dtype=np.float64):
    """The official grid ``[0.001 * i for i in range(1000)]``, as the saliency dtype compares it."""
    return (THRESHOLD_STEP * np.arange(THRESHOLD_COUNT, dtype=np.float64)).astype(dtype)


def soft_ground_truth(masks):
    """(N, H, W) soft masks from (N, H, W, 3) RGB masks (official: mean over the last axis), (N, 1, H, W) or
    (N, H, W); values are kept as given (not binarised)."""
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 3:
        return np.mean(masks, axis=3)
    if masks.ndim == 4 and masks.shape[1] == 1:
        return masks[:, 0]
    if masks.ndim == 3:
        return masks
    raise ValueError(f"ground truth must be (N,H,W), (N,1,H,W) or (N,H,W,3), got shape {masks.shape}")


def _as_maps(saliency):
    saliency = np.asarray(saliency)
    if saliency.ndim == 4 and saliency.shape[1] == 1:
        saliency = saliency[:, 0]
    if saliency.ndim != 3:
        raise ValueError(f"saliency must be (N,H,W) or (N,1,H,W), got shape {saliency.shape}")
    if not np.issubdtype(saliency.dtype, np.floating):
        saliency = saliency.astype(np.float64)
    if not np.all(np.isfinite(saliency)):
        raise ValueError("saliency maps contain NaN or infinite values")
    return saliency


def open_maps(saliency, structure=CROSS_3X3):
    """Grey opening of every (H, W) map of ``saliency`` (N, H, W) with the flat ``structure`` (3x3, centre set)."""
    structure = np.asarray(structure, dtype=bool)
    if structure.shape != (3, 3) or not structure[1, 1]:
        raise ValueError("structure must be a 3x3 boolean element containing its centre")
    return ndimage.grey_opening(saliency, footprint=structure[None], mode="nearest")


def localization_rates(saliency, ground_truth, structure=CROSS_3X3):
    """``(fpr, tpr)``: two (1000,) float64 arrays, one point per official threshold (decreasing rates)."""
    saliency = _as_maps(saliency)
    gt = soft_ground_truth(ground_truth).astype(np.float64)
    if gt.shape != saliency.shape:
        raise ValueError(f"saliency {saliency.shape} and ground truth {gt.shape} differ in shape")
    opened = open_maps(saliency, structure).ravel()
    gt = gt.ravel()
    # Number of thresholds each opened pixel reaches: the pixel is in the binary map of threshold k iff k < count.
    count = np.searchsorted(localization_thresholds(opened.dtype), opened, side="right")
    positive = np.bincount(count, weights=gt, minlength=THRESHOLD_COUNT + 1)
    negative = np.bincount(count, weights=1.0 - gt, minlength=THRESHOLD_COUNT + 1)
    total_positive, total_negative = positive.sum(), negative.sum()
    if total_positive <= 0 or total_negative <= 0:
        raise ValueError("localization AUROC needs both defective and normal pixels in the ground truth")
    # Suffix sums: the mass of pixels reaching threshold k (count > k).
    tp = np.cumsum(positive[::-1])[::-1][1:]
    fp = np.cumsum(negative[::-1])[::-1][1:]
    return fp / total_negative, tp / total_positive


def kdad_localization_auroc(saliency, ground_truth, structure=CROSS_3X3):
    """Official localisation AUROC of saliency maps (N, H, W) in [0, 1] against soft masks of defective images.

    ``ground_truth``: (N, H, W, 3) RGB masks as the official loader gives them, or already averaged (N, H, W).
    ``structure`` other than the official cross is for experiments only.
    """
    fpr, tpr = localization_rates(saliency, ground_truth, structure)
    return float(auc(fpr, tpr))
