"""RD4AD's own PRO protocol (hq-deng/RD4AD ``test.py::compute_pro``): per image, averaged over the anomalous images.

Not comparable with the standard AU-PRO (``common.metrics.au_pro``); both are reported, labelled.
"""
import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

from common.core.errors import UserError
from common.metrics.checks import masks_and_maps

# In-plane 8-connectivity, no connection between images: one ndimage.label call labels a whole (N, H, W) stack
# with region ids that are unique across the test set.
_EIGHT_CONNECTED_2D = np.ones((3, 3), dtype=bool)
RD4AD_FPR_LIMIT = 0.3


def rd4ad_pro(masks, maps, num_thresholds=200, names=None):
    """Per-image PRO of the RD4AD code (``test.py::compute_pro``), averaged over the anomalous images.

    For each image with defect and normal pixels: thresholds ``np.arange(min, max, (max - min) / num_thresholds)``
    of that image's map; prediction ``map > threshold``; PRO = mean over the image's 8-connected regions of the
    fraction of the region predicted; FPR = false positives / normal pixels of the image; the points with
    FPR < 0.3 are kept in threshold order, their FPR divided by the largest kept FPR, and
    ``sklearn.metrics.auc`` taken. Same values as RD4AD's loop, computed with one ``searchsorted`` and one
    ``bincount`` per image.

    Where RD4AD's code fails the image still gets a value (documented in ``docs/metrics.md``): a constant map, or no
    kept point, gives 0.0; kept points that all have FPR 0 (e.g. a perfect map, where RD4AD divides 0 by 0) give
    the largest kept PRO; a single kept point with FPR > 0 gives 0.0, as RD4AD gives for several points at one FPR.
    Images whose mask covers every pixel have no FPR and are left out. ``None`` when no image is left.
    """
    if not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 1:
        raise UserError(f"num_thresholds must be a positive integer, got {num_thresholds!r}")
    masks, maps = masks_and_maps(masks, maps, names)
    values = []
    for mask, amap in zip(masks, maps):
        defect_pixels = np.count_nonzero(mask)
        if 0 < defect_pixels < mask.size:
            region_ids, num_regions = ndimage.label(mask, _EIGHT_CONNECTED_2D, output=np.int32)
            values.append(_rd4ad_image_pro(amap.ravel(), region_ids.ravel(), num_regions, num_thresholds))
    return float(np.mean(values)) if values else None


def _rd4ad_image_pro(values, region_ids, num_regions, num_thresholds):
    """RD4AD's per-image PRO area (see :func:`rd4ad_pro`) for one flattened map and its region ids (0 = normal)."""
    low, high = values.min(), values.max()
    step = (high - low) / num_thresholds
    if not step > 0:
        return 0.0
    thresholds = np.arange(low, high, step)
    num_bins = len(thresholds) + 1
    # Pixel p is predicted defective at threshold t exactly when t < thresholds_below[p].
    thresholds_below = np.searchsorted(thresholds, values, side="left")
    counts = np.bincount(region_ids * num_bins + thresholds_below, minlength=(num_regions + 1) * num_bins)
    counts = counts.reshape(num_regions + 1, num_bins)
    region_sizes = counts.sum(axis=1)
    predicted = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [region, threshold]: pixels above threshold
    fpr = predicted[0] / region_sizes[0]
    pro = (predicted[1:] / region_sizes[1:, np.newaxis]).mean(axis=0)

    kept = fpr < RD4AD_FPR_LIMIT
    fpr, pro = fpr[kept], pro[kept]
    if len(fpr) == 0:
        return 0.0
    if fpr.max() == 0:
        return float(pro.max())
    if len(fpr) == 1:
        return 0.0
    return float(auc(fpr / fpr.max(), pro))
