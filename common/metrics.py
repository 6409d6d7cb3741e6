"""Evaluation metrics shared by the four methods: AUROC, AU-PRO (official MVTec AD and RD4AD), thresholds.

Inputs
    ``labels``  (N,) image labels, 0 = normal, 1 = defective (bool or integer).
    ``scores``  (N,) image anomaly scores.
    ``masks``   (N, H, W) ground-truth masks. bool masks are used as they are; integer masks mark a defect where the
                value is > 0 (so 0/1 and 0/255 both work); float masks where the value is > 0.5 (masks resized to
                [0, 1] with interpolation, as RD4AD binarises them).
    ``maps``    (N, H, W) anomaly maps, any real dtype; float maps are used in their own dtype so ties are the ties
                of the stored values.
    ``names``   optional list of N image paths; validation errors then name the file, not only the index.

A metric that is not defined for the input (one class only, no defect region) returns ``None``; a user mistake
(shape mismatch, NaN or Inf, bad option) raises :class:`common.errors.UserError`. See ``docs/metrics.md``.
"""
import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from .errors import UserError

PROTOCOLS = ("image_auroc", "pixel_auroc", "au_pro", "rd4ad_pro")

# In-plane 8-connectivity, no connection between images: one ndimage.label call labels a whole (N, H, W) stack
# with region ids that are unique across the test set.
_EIGHT_CONNECTED_2D = np.ones((3, 3), dtype=bool)
_EIGHT_CONNECTED_STACK = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_STACK[1] = True

RD4AD_FPR_LIMIT = 0.3


# ----------------------------------------------------------------------------------------------------------------
# Public metrics
# ----------------------------------------------------------------------------------------------------------------
def image_auroc(labels, scores, names=None):
    """Image-level AUROC (``sklearn.metrics.roc_auc_score``); ``None`` when ``labels`` hold a single class."""
    labels = _binary_labels(labels)
    scores = _finite_scores(scores, len(labels), names)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks, maps, names=None):
    """Pixel-level AUROC over all pixels of all images pooled (``roc_auc_score``); ``None`` for a single class.

    The pixels are passed to sklearn as flat views (bool masks, maps in their own dtype), without float64 copies.
    """
    masks, maps = _masks_and_maps(masks, maps, names)
    defect_pixels = np.count_nonzero(masks)
    if defect_pixels == 0 or defect_pixels == masks.size:
        return None
    return float(roc_auc_score(masks.ravel(), maps.ravel()))


def au_pro(masks, maps, integration_limit=0.3, names=None):
    """Normalised area under the PRO curve up to ``integration_limit``, the official MVTec AD protocol.

    Same value (to rounding) as MVTec's ``pro_curve_util.compute_pro`` + ``generic_util.trapezoid`` divided by the
    limit: regions are the 8-connected components of every mask, counted over the whole test set; every normal pixel
    (normal images included) is a negative; a pixel is predicted defective when its score is >= the threshold, and
    every distinct score is a threshold; FPR is computed in float32 like the official code; the area up to the
    limit uses the curve interpolated linearly at the limit. A perfect map gives 1.0.

    Only the top of the score ranking matters (the points up to the limit and one beyond), so the curve is built
    from the normal pixels above the score where the FPR passes the limit, plus the region pixels: one partition,
    one sort of that part and a merge, instead of an argsort of every pixel.
    Returns ``None`` when the masks hold no defect region or no normal pixel.
    """
    if not 0 < integration_limit <= 1:
        raise UserError(f"integration_limit must be in (0, 1], got {integration_limit}")
    masks, maps = _masks_and_maps(masks, maps, names)
    curve = _official_pro_curve(masks, maps.ravel(), integration_limit)
    if curve is None:
        return None
    return _trapezoid_to_limit(*curve, integration_limit) / integration_limit


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
    masks, maps = _masks_and_maps(masks, maps, names)
    values = []
    for mask, amap in zip(masks, maps):
        defect_pixels = np.count_nonzero(mask)
        if 0 < defect_pixels < mask.size:
            region_ids, num_regions = ndimage.label(mask, _EIGHT_CONNECTED_2D, output=np.int32)
            values.append(_rd4ad_image_pro(amap.ravel(), region_ids.ravel(), num_regions, num_thresholds))
    return float(np.mean(values)) if values else None


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


def calibrate_thresholds(normal_image_scores, normal_maps=None, image_quantile=0.99, pixel_quantile=0.99):
    """Image and pixel thresholds from held-out normal images (see :func:`calibrate_threshold`).

    Returns ``{"image_threshold", "image_quantile", "pixel_threshold", "pixel_quantile", "num_normal_images"}``;
    the pixel entries are ``None`` when ``normal_maps`` is ``None``.
    """
    pixel_threshold = None if normal_maps is None else calibrate_threshold(normal_maps, pixel_quantile)
    return {
        "image_threshold": calibrate_threshold(normal_image_scores, image_quantile),
        "image_quantile": image_quantile,
        "pixel_threshold": pixel_threshold,
        "pixel_quantile": pixel_quantile if normal_maps is not None else None,
        "num_normal_images": int(np.size(normal_image_scores)),
    }


def precision_recall_f1(labels, scores, threshold, names=None):
    """Precision, recall and F1 of the rule "defective when score >= threshold".

    A ratio whose denominator is zero is 0.0 (no image predicted defective: precision 0; no defective image: recall
    0), as sklearn's ``zero_division=0``. Returns ``{"precision", "recall", "f1", "threshold", "tp", "fp", "fn",
    "tn"}``.
    """
    labels = _binary_labels(labels)
    scores = _finite_scores(scores, len(labels), names)
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


def evaluate(labels, scores, masks=None, maps=None, protocols=PROTOCOLS, integration_limit=0.3, names=None):
    """Compute the requested ``protocols`` (names in :data:`PROTOCOLS`).

    Returns ``{protocol: value or None, ..., "notes": {protocol: why it is None}}``. Pixel protocols are ``None``
    with a note when ``masks`` or ``maps`` is missing.
    """
    unknown = [name for name in protocols if name not in PROTOCOLS]
    if unknown:
        raise UserError(f"unknown metric protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
    undefined = {
        "image_auroc": "not defined: the test labels hold only one class",
        "pixel_auroc": "not defined: the masks hold only defect or only normal pixels",
        "au_pro": "not defined: the masks hold no defect region or no normal pixel",
        "rd4ad_pro": "not defined: no image has both defect and normal pixels",
    }
    results, notes = {}, {}
    for name in protocols:
        if name == "image_auroc":
            results[name] = image_auroc(labels, scores, names=names)
        elif masks is None or maps is None:
            results[name] = None
            notes[name] = "not available: no " + ("ground-truth masks" if masks is None else "anomaly maps")
            continue
        elif name == "pixel_auroc":
            results[name] = pixel_auroc(masks, maps, names=names)
        elif name == "au_pro":
            results[name] = au_pro(masks, maps, integration_limit, names=names)
        else:
            results[name] = rd4ad_pro(masks, maps, names=names)
        if results[name] is None:
            notes[name] = undefined[name]
    results["notes"] = notes
    return results


# ----------------------------------------------------------------------------------------------------------------
# Internals
# ----------------------------------------------------------------------------------------------------------------
def _false_positive_rates(fp_counts, num_ok):
    """FPR exactly as the official code: counts cast to float32, divided in place by the (int64) OK-pixel count."""
    rates = np.asarray(fp_counts).astype(np.float32)
    np.divide(rates, np.int64(num_ok), out=rates)
    return np.clip(rates, None, 1.0, out=rates)


def _first_fp_count_beyond(limit, num_ok):
    """Smallest false-positive count whose FPR exceeds ``limit``, or ``None`` when no count does (bisection)."""
    def rate(count):
        return float(_false_positive_rates([count], num_ok)[0])

    if rate(num_ok) <= limit:
        return None
    low, high = 0, int(num_ok)  # rate(low) <= limit < rate(high)
    while high - low > 1:
        middle = (low + high) // 2
        if rate(middle) <= limit:
            low = middle
        else:
            high = middle
    return high


def _official_pro_curve(masks, scores, limit):
    """The official PRO curve (with (0, 0) and (1, 1) added), cut after its first point beyond ``limit``.

    ``masks`` is the bool (N, H, W) stack and ``scores`` the flat maps. Each curve point is one distinct score d, in
    descending order: FPR = normal pixels >= d / normal pixels, PRO = sum over region pixels >= d of 1 / region size,
    divided by the number of regions: the official cumulative sums read at the last pixel of each group of tied
    scores. Returns ``None`` when there is no region or no normal pixel.
    """
    region_ids, num_regions = ndimage.label(masks, _EIGHT_CONNECTED_STACK, output=np.int32)
    region_ids = region_ids.ravel()
    region_index = np.flatnonzero(region_ids)
    num_ok = len(scores) - len(region_index)
    if num_regions == 0 or num_ok == 0:
        return None
    region_of_pixel = region_ids[region_index]
    region_scores = scores[region_index]
    ok_scores = scores[region_ids == 0]
    del region_ids, region_index
    region_sizes = np.bincount(region_of_pixel, minlength=num_regions + 1)

    count_beyond = _first_fp_count_beyond(limit, num_ok)
    if count_beyond is not None:
        # Points after the one at `cut` (the count_beyond-th largest normal score) lie beyond the limit.
        kth = num_ok - count_beyond
        ok_scores.partition(kth)
        cut = ok_scores[kth]
        ok_scores = ok_scores[ok_scores >= cut]
        above_cut = region_scores >= cut
        region_of_pixel, region_scores = region_of_pixel[above_cut], region_scores[above_cut]
    ok_scores.sort()
    order = np.argsort(region_scores)
    region_scores = region_scores[order]
    region_weights = 1.0 / region_sizes[region_of_pixel[order]]
    num_region_pixels = len(region_scores)

    # Merge the two ascending lists; region_positions are the region pixels' places in the merged list.
    region_positions = np.searchsorted(ok_scores, region_scores, side="left") + np.arange(num_region_pixels)
    merged = np.empty(len(ok_scores) + num_region_pixels, dtype=scores.dtype)
    is_region = np.zeros(len(merged), dtype=bool)
    is_region[region_positions] = True
    merged[region_positions] = region_scores
    merged[~is_region] = ok_scores
    num_merged = len(merged)
    del is_region, ok_scores, region_scores

    # First index of each group of equal scores, highest score first: a curve point counts everything from there up.
    group_starts = np.flatnonzero(np.concatenate(([True], merged[1:] != merged[:-1])))[::-1]
    del merged
    regions_from = np.searchsorted(region_positions, group_starts, side="left")
    weight_from = np.append(np.cumsum(region_weights[::-1])[::-1], 0.0)  # weight of region pixels from index on
    pros = weight_from[regions_from]
    np.divide(pros, num_regions, out=pros)
    np.clip(pros, None, 1.0, out=pros)
    fp_counts = regions_from  # in place: pixels from the group start on, minus the region pixels among them
    fp_counts += num_merged - num_region_pixels
    fp_counts -= group_starts
    del group_starts
    fprs = _false_positive_rates(fp_counts, num_ok)
    del fp_counts
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def _trapezoid_to_limit(x, y, limit):
    """Trapezoid area of the sampled curve up to ``limit``, the value at the limit interpolated (official rule)."""
    end = int(np.searchsorted(x, limit, side="right"))  # points with x <= limit
    area = float(np.sum(0.5 * (y[1:end] + y[:end - 1]) * (x[1:end] - x[:end - 1])))
    if x[end - 1] != limit:
        y_at_limit = y[end - 1] + (y[end] - y[end - 1]) * (limit - x[end - 1]) / (x[end] - x[end - 1])
        area += 0.5 * (y_at_limit + y[end - 1]) * (limit - x[end - 1])
    return area


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


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def _describe(index, names):
    return f"{index} ({names[index]})" if names is not None and index < len(names) else f"{index}"


def _binary_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise UserError(f"image labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise UserError(f"image labels must be 0 (normal) or 1 (defective), got values {np.unique(labels)[:5]}")
        labels = labels == 1
    return labels


def _finite_scores(scores, count, names):
    scores = np.asarray(scores)
    if scores.shape != (count,):
        raise UserError(f"image scores have shape {scores.shape} but there are {count} labels")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise UserError(f"image scores must be real numbers, got dtype {scores.dtype}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise UserError(f"image score {_describe(int(bad[0]), names)} is NaN or Inf")
    return scores


def _masks_and_maps(masks, maps, names):
    """Validate a (masks, maps) pair; return bool masks and real-valued maps, both (N, H, W)."""
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise UserError(f"anomaly maps must be a non-empty (N, H, W) stack, got shape {maps.shape}")
    if masks.shape != maps.shape:
        raise UserError(f"masks have shape {masks.shape} but anomaly maps have shape {maps.shape}; "
                        "they must match (resize the masks with nearest-neighbour)")
    if names is not None and len(names) != len(maps):
        raise UserError(f"{len(names)} image names given for {len(maps)} anomaly maps")
    if maps.dtype == bool or not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise UserError(f"anomaly maps must hold real numbers, got dtype {maps.dtype}")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if not (np.isfinite(maps.min()) and np.isfinite(maps.max())):
        bad = next(index for index, amap in enumerate(maps) if not np.isfinite(amap).all())
        raise UserError(f"anomaly map {_describe(bad, names)} contains NaN or Inf")
    return _binary_masks(masks), maps


def _binary_masks(masks):
    if masks.dtype == bool:
        return masks
    if np.issubdtype(masks.dtype, np.floating):
        return masks > 0.5
    if np.issubdtype(masks.dtype, np.integer):
        return masks > 0
    raise UserError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
