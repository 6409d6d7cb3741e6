"""The official OrthoAD evaluation protocol (``metric.py::evaluate`` of jnhwkim/orthoad), re-implemented.

The paper's "PRO" (.942) and "ROC" (.982) are computed this way, which is not the MVTec AU-PRO nor the pooled
pixel AUROC:

- thresholds: the test map with the largest maximum is picked and its k-th smallest values at ranks
  ``max(1, floor(numel·i / num_samples))`` for i = num_samples … 1 are used (descending); for image detection the
  thresholds are every image score, descending; a pixel is positive when its score is ``> threshold``;
- x = FPR averaged over the images that have normal pixels (per-image FPR);
  y = per-image PRO (mean overlap of that image's 8-connected defect regions) or per-image TPR, averaged over the
  images that have defect pixels;
- the sweep stops after the first point with FPR > ``at_fpr`` (that point is kept);
- points are keyed by FPR: for equal FPRs the later (larger) y wins;
- area ("slope" rule): trapezoids from (0, 0); the last segment spans [x_{n−2}, at_fpr] with heights y_{n−2} and
  (y_{n−2} + y_{n−1}) / 2; the sum is divided by ``at_fpr``.

Named protocols: ``orthoad_pro`` (PRO, at_fpr 0.3), ``orthoad_pixel_roc`` (TPR, at_fpr 1.0), ``orthoad_image_roc``
(image max scores, at_fpr 1.0).

KolektorSDD / KolektorSDD2 (script/run_kolektor.sh: ``--metric auroc --fpr 1.0``, ``--nSamples`` 1000) report
exactly two of them: "SEG AUROC" = ``orthoad_pixel_roc`` (the number of the README's Kolektor table) and
"DET AUROC" = ``orthoad_image_roc`` (train.py passes the map maxima as (N, 1, 1) maps, for which every score is a
threshold). Both are computed on the 704 x 256 maps and masks.
"""
import numpy as np
from scipy import ndimage

from common.core.errors import UserError

NUM_THRESHOLDS = 1000
PROTOCOLS = {
    "orthoad_pro": "official OrthoAD metric.py: per-image PRO averaged over defective images vs per-image FPR "
                   "averaged over images, 1000 thresholds from the top-scoring map, FPR-keyed 'slope' area to 0.3",
    "orthoad_pixel_roc": "official OrthoAD metric.py: per-image TPR vs per-image FPR (each averaged over images), "
                         "1000 thresholds from the top-scoring map, FPR-keyed 'slope' area to 1.0 (the paper's "
                         "MVTec 'ROC' and Kolektor 'SEG AUROC')",
    "orthoad_image_roc": "official OrthoAD metric.py: image max scores, every score a threshold, FPR-keyed "
                         "'slope' area to 1.0 (the official Kolektor 'DET AUROC')",
}
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def official_thresholds(maps, num_samples=NUM_THRESHOLDS):
    """Thresholds (descending) from the map with the largest maximum, at ranks floor(numel·i/num_samples)."""
    worst = maps[int(np.argmax(maps.reshape(len(maps), -1).max(axis=1)))].ravel()
    ordered = np.sort(worst)
    ranks = [max(1, (worst.size * i) // num_samples) for i in range(num_samples, 0, -1)]
    return ordered[np.asarray(ranks) - 1]


def _counts_above(values, thresholds):
    """Number of ``values`` strictly greater than each threshold."""
    ordered = np.sort(values)
    return ordered.size - np.searchsorted(ordered, thresholds, side="right")


def _curve(maps, masks, thresholds, y_kind):
    """Per-threshold (mean per-image FPR, mean per-image y) for ``y_kind`` in {"pro", "tpr"}."""
    fpr_rows, y_rows = [], []
    for amap, mask in zip(maps, masks):
        values, mask = amap.ravel(), mask.ravel()
        negatives = values[~mask]
        if negatives.size:
            fpr_rows.append(_counts_above(negatives, thresholds) / negatives.size)
        if not mask.any():
            continue
        if y_kind == "tpr":
            y_rows.append(_counts_above(values[mask], thresholds) / np.count_nonzero(mask))
        else:
            regions, count = ndimage.label(mask.reshape(amap.shape), _EIGHT_CONNECTED)
            regions = regions.ravel()
            overlaps = [_counts_above(values[regions == r], thresholds) / np.count_nonzero(regions == r)
                        for r in range(1, count + 1)]
            y_rows.append(np.mean(overlaps, axis=0))
    fpr = np.mean(fpr_rows, axis=0) if fpr_rows else np.zeros(len(thresholds))
    y = np.mean(y_rows, axis=0) if y_rows else None
    return fpr, y


def keyed_curve(fprs, ys, at_fpr):
    """Points up to and including the first FPR > ``at_fpr``, keyed by FPR (last wins), sorted by FPR."""
    points = {}
    for fpr, y in zip(fprs.tolist(), ys.tolist()):
        points[fpr] = y
        if fpr > at_fpr:
            break
    keys = sorted(points)
    return np.array(keys), np.array([points[k] for k in keys])


def slope_area(fprs, ys, at_fpr):
    """The official "slope" area of the keyed curve divided by ``at_fpr`` (see module docstring)."""
    area = 0.0
    n = len(fprs)
    for i in range(n):
        if i == 0:
            area += fprs[0] * ys[0] / 2
        elif i == n - 1:
            middle = (ys[i] + ys[i - 1]) / 2
            area += (at_fpr - fprs[i - 1]) * (middle + ys[i - 1]) / 2
        else:
            area += (fprs[i] - fprs[i - 1]) * (ys[i] + ys[i - 1]) / 2
    return area / at_fpr


def _check(masks, maps):
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if maps.shape != masks.shape or maps.ndim != 3:
        raise UserError(f"maps {maps.shape} and masks {masks.shape} must both be (N, H, W)")
    if not np.all(np.isfinite(maps)):
        raise UserError("anomaly maps contain NaN or Inf")
    return masks.astype(bool) if masks.dtype != bool else masks, maps


def orthoad_pro(masks, maps, at_fpr=0.3, num_samples=NUM_THRESHOLDS):
    """The paper's "PRO": official per-image-averaged PRO area up to ``at_fpr``; None without defect regions."""
    masks, maps = _check(masks, maps)
    if not masks.any():
        return None
    fpr, y = _curve(maps, masks, official_thresholds(maps, num_samples), "pro")
    return float(slope_area(*keyed_curve(fpr, y, at_fpr), at_fpr))


def orthoad_pixel_roc(masks, maps, at_fpr=1.0, num_samples=NUM_THRESHOLDS):
    """The paper's "ROC": official per-image-averaged TPR area up to ``at_fpr``; None without defect pixels."""
    masks, maps = _check(masks, maps)
    if not masks.any():
        return None
    fpr, y = _curve(maps, masks, official_thresholds(maps, num_samples), "tpr")
    return float(slope_area(*keyed_curve(fpr, y, at_fpr), at_fpr))


def orthoad_image_roc(labels, scores):
    """Official image-detection ROC: every score (descending) a threshold, keyed 'slope' area to 1.0."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.all() or not labels.any():
        return None
    thresholds = np.sort(scores)[::-1]
    fpr = _counts_above(scores[~labels], thresholds) / np.count_nonzero(~labels)
    tpr = _counts_above(scores[labels], thresholds) / np.count_nonzero(labels)
    return float(slope_area(*keyed_curve(fpr, tpr, 1.0), 1.0))


def evaluate_official(labels, scores, masks=None, maps=None):
    """All three official OrthoAD protocols as ``{name: value or None}`` (pixel ones None without masks)."""
    results = {"orthoad_image_roc": orthoad_image_roc(labels, scores)}
    pixel = masks is not None and maps is not None
    results["orthoad_pro"] = orthoad_pro(masks, maps) if pixel else None
    results["orthoad_pixel_roc"] = orthoad_pixel_roc(masks, maps) if pixel else None
    return results
