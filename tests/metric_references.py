"""Slow, plainly written reference versions of the localisation metrics in ``common.metrics``.

They restate, step by step, what the original evaluation code does, so the fast versions can be checked against
them and benchmarked. They are written for clarity, not speed, and are used only by tests and by
``scripts/benchmark_metrics.py``.

- :func:`mvtec_au_pro`: the official MVTec AD evaluation (``pro_curve_util.compute_pro`` followed by
  ``generic_util.trapezoid`` and the division by the integration limit), one full argsort of every pixel.
- :func:`rd4ad_pro_loop`: RD4AD's ``test.py::compute_pro`` (one threshold at a time, regions re-found with
  ``skimage.measure.regionprops`` at every threshold) called per anomalous image and averaged, as in RD4AD's
  ``evaluation``. ``np.bool`` is replaced by ``bool`` and the pandas ``DataFrame.append`` rows by a Python list; the
  arithmetic, the point order and the strict ``fpr < 0.3`` filter are unchanged. The original raises or returns
  NaN on degenerate images; here such an image gives ``None`` so callers can see it.
- :func:`naive_au_pro`: a third, independent formulation: one binary map per distinct score, FPR and PRO counted
  directly, and the piecewise-linear curve integrated segment by segment. Only for tiny inputs.
"""
import statistics
from bisect import bisect_right

import numpy as np
from scipy import ndimage
from skimage import measure
from sklearn.metrics import auc

EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


# --------------------------------------------------------------------------------------------------------------
# (a) official MVTec AD AU-PRO
# --------------------------------------------------------------------------------------------------------------
def mvtec_pro_curve(masks, maps):
    """The official PRO curve: (fprs, pros) with (0, 0) prepended and (1, 1) appended, float64 arrays."""
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    num_images = len(maps)
    fp_increments = np.zeros(maps.shape, dtype=np.uint32)
    pro_increments = np.zeros(maps.shape, dtype=np.float64)
    num_ok_pixels = 0
    num_regions = 0
    for index in range(num_images):
        labelled, count = ndimage.label(masks[index], EIGHT_CONNECTED)
        num_regions += count
        ok = labelled == 0
        num_ok_pixels += np.sum(ok)
        fp_increments[index][ok] = 1
        for region in range(1, count + 1):
            inside = labelled == region
            pro_increments[index][inside] = 1.0 / np.sum(inside)

    scores = np.array(maps).ravel()
    order = np.argsort(scores).astype(np.uint32)[::-1]
    scores = scores[order]
    fp_cumulative = np.cumsum(fp_increments.ravel()[order])
    fprs = fp_cumulative.astype(np.float32)
    np.divide(fprs, num_ok_pixels, out=fprs)
    pros = np.cumsum(pro_increments.ravel()[order])
    np.divide(pros, num_regions, out=pros)

    last_of_tie_group = np.append(np.diff(scores) != 0, True)
    fprs = np.clip(fprs[last_of_tie_group], None, 1.0)
    pros = np.clip(pros[last_of_tie_group], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def mvtec_trapezoid(x, y, x_max):
    """Area under the sampled curve up to ``x_max``; the value at ``x_max`` is interpolated linearly."""
    x = np.asarray(x)
    y = np.asarray(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect_right(list(x), x_max)
        assert 0 < ins < len(x)
        y_at_max = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at_max + y[ins - 1]) * (x_max - x[ins - 1])
    inside = x <= x_max
    x = x[inside]
    y = y[inside]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def mvtec_au_pro(masks, maps, integration_limit=0.3):
    """Official normalised AU-PRO: trapezoid of the PRO curve up to the limit, divided by the limit."""
    fprs, pros = mvtec_pro_curve(masks, maps)
    return float(mvtec_trapezoid(fprs, pros, integration_limit) / integration_limit)


# --------------------------------------------------------------------------------------------------------------
# (b) RD4AD test.py compute_pro, per anomalous image, averaged
# --------------------------------------------------------------------------------------------------------------
def rd4ad_compute_pro(masks, amaps, num_th=200):
    """RD4AD's ``compute_pro`` on one stack (RD4AD passes a single image as a (1, H, W) stack).

    Returns the area, or ``None`` where the original raises (constant map, fewer than two points kept) or returns
    NaN (every kept FPR is zero).
    """
    assert masks.shape == amaps.shape and masks.ndim == 3
    rows = []  # replaces the DataFrame: one (pro, fpr, threshold) row per threshold, in threshold order
    binary_amaps = np.zeros_like(amaps, dtype=bool)
    min_th = amaps.min()
    max_th = amaps.max()
    delta = (max_th - min_th) / num_th
    if delta == 0:
        return None  # np.arange raises here
    for th in np.arange(min_th, max_th, delta):
        binary_amaps[amaps <= th] = 0
        binary_amaps[amaps > th] = 1
        pros = []
        for binary_amap, mask in zip(binary_amaps, masks):
            for region in measure.regionprops(measure.label(mask)):
                tp_pixels = binary_amap[region.coords[:, 0], region.coords[:, 1]].sum()
                pros.append(tp_pixels / region.area)
        inverse_masks = 1 - masks
        fp_pixels = np.logical_and(inverse_masks, binary_amaps).sum()
        fpr = fp_pixels / inverse_masks.sum()
        rows.append((statistics.mean(pros), fpr, th))

    pro = np.array([row[0] for row in rows], dtype=np.float64)
    fpr = np.array([row[1] for row in rows], dtype=np.float64)
    kept = fpr < 0.3
    pro, fpr = pro[kept], fpr[kept]
    if len(fpr) < 2 or fpr.max() == 0:
        return None
    return float(auc(fpr / fpr.max(), pro))


def rd4ad_pro_loop(masks, maps, num_thresholds=200):
    """Mean of :func:`rd4ad_compute_pro` over the images whose mask has defect and normal pixels.

    Returns (mean, per_image_values); a per-image ``None`` is left out of the mean.
    """
    masks = (np.asarray(masks) > 0.5).astype(int)
    maps = np.asarray(maps)
    values = []
    for mask, amap in zip(masks, maps):
        if 0 < mask.sum() < mask.size:
            values.append(rd4ad_compute_pro(mask[np.newaxis], amap[np.newaxis], num_thresholds))
    defined = [value for value in values if value is not None]
    return (float(np.mean(defined)) if defined else None), values


# --------------------------------------------------------------------------------------------------------------
# (c) naive threshold-by-threshold AU-PRO (tiny inputs only)
# --------------------------------------------------------------------------------------------------------------
def naive_au_pro(masks, maps, integration_limit=0.3):
    """AU-PRO from one binary prediction per distinct score (pixel positive when score >= threshold)."""
    masks = np.asarray(masks) > 0.5
    maps = np.asarray(maps, dtype=np.float64)
    regions = []
    ok = np.zeros(maps.shape, dtype=bool)
    for index, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, EIGHT_CONNECTED)
        ok[index] = labelled == 0
        regions += [(index, labelled == k) for k in range(1, count + 1)]
    points = [(0.0, 0.0)]
    for threshold in np.unique(maps)[::-1]:
        positive = maps >= threshold
        fpr = (positive & ok).sum() / ok.sum()
        pro = np.mean([(positive[index] & region).sum() / region.sum() for index, region in regions])
        points.append((min(fpr, 1.0), min(pro, 1.0)))
    points.append((1.0, 1.0))

    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= integration_limit:
            break
        if x1 <= integration_limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:
            y_limit = y0 + (y1 - y0) * (integration_limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_limit) * (integration_limit - x0)
            break
    return area / integration_limit


def official_detection_test(class_labels, scores, target_class):
    """KDAD ``detection_test`` after the scores are computed, restated without scikit-learn: the normal class is
    marked 1 and the rest 0, the ROC has the anomalies (label 0) as positives and one point per distinct score
    (highest first) after (0, 0), its trapezoid area is rounded to 4 decimals."""
    labels = [1 if label == target_class else 0 for label in class_labels]
    positives = sum(1 for label in labels if label == 0)
    negatives = len(labels) - positives
    points = [(0.0, 0.0)]
    for threshold in sorted(set(scores), reverse=True):
        tp = sum(1 for label, score in zip(labels, scores) if score >= threshold and label == 0)
        fp = sum(1 for label, score in zip(labels, scores) if score >= threshold and label == 1)
        points.append((fp / negatives, tp / positives))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        area += (x1 - x0) * (y0 + y1) / 2
    return round(np.float64(area), 4)
