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
- :func:`loco_reference`: MVTec's LOCO evaluation (``mvtec_loco_ad_evaluation``: ``evaluate_experiment.py``,
  ``src/aggregation.py``, ``src/metrics.py``, ``src/util.py``): one boolean map per threshold and image, recursive
  binary refinement, per-subset FPR and mean sPRO, ``util.trapz`` and ``util.compute_classification_roc``. The
  unseeded ``np.random.choice`` is a ``Generator`` passed in, and the min/max thresholds are float64 (NumPy 1).
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


# --------------------------------------------------------------------------------------------------------------
# (d) MVTec LOCO AD: AU-sPRO and image AUROC (mvtec_loco_ad_evaluation)
# --------------------------------------------------------------------------------------------------------------
def loco_saturation_area(mask, threshold, relative):
    """``GroundTruthChannel.get_saturation_area``."""
    defect_area = np.sum(mask)
    if relative:
        return int(threshold * defect_area)
    return np.minimum(threshold, defect_area)


def loco_initial_thresholds(maps, rng, max_num_scores=10_000_000, num_thresholds=50, epsilon=1e-6):
    """``MetricsAggregator._get_initial_thresholds`` (every map the same size, as in the official code)."""
    num_images = len(maps)
    num_scores_per_image = np.prod(maps[0].shape)
    if num_images * num_scores_per_image <= max_num_scores:
        num_sampled_per_image = num_scores_per_image
    else:
        num_sampled_per_image = int(np.floor(max_num_scores / num_images))
    sampled_scores = []
    min_score, max_score = float(maps[0][0, 0]), float(maps[0][0, 0])
    for amap in maps:
        min_score = min(min_score, float(np.min(amap)))
        max_score = max(max_score, float(np.max(amap)))
        flat_scores = amap.flatten()
        if num_sampled_per_image == num_scores_per_image:
            sampled_scores.append(flat_scores)       # the official draws a permutation here: sorted away below
        else:
            sampled_scores.append(rng.choice(flat_scores, size=num_sampled_per_image, replace=False))
    sampled_scores = np.concatenate(sampled_scores).flatten()
    sampled_scores.sort()
    equidistant_indices = np.linspace(0, len(sampled_scores) - 1, num=num_thresholds, endpoint=True, dtype=int)
    equiheight_scores = sampled_scores[equidistant_indices[1:-1]]
    thresholds = equiheight_scores.tolist()[::-1]
    return [max_score + epsilon] + thresholds + [min_score - epsilon]


def loco_per_image(gt_channels, amap, thresholds):
    """``get_spros_per_defect_for_thresholds`` and ``get_fp_areas/get_tn_areas_for_thresholds`` of one image.

    ``gt_channels``: list of (mask, saturation_threshold, relative_saturation), empty for a good image.
    """
    binary = np.greater(amap[np.newaxis, :, :], np.array(thresholds)[:, None, None])
    spros = []
    for mask, threshold, relative in gt_channels:
        tp_areas = np.sum(np.logical_and(binary, mask), axis=(1, 2))
        spros.append(np.minimum(tp_areas / loco_saturation_area(mask, threshold, relative), 1.0))
    if not gt_channels:
        fp_areas = np.sum(binary, axis=(1, 2))
        tn_areas = np.sum(np.logical_not(binary), axis=(1, 2))
    else:
        combined = np.sum([m for m, _, _ in gt_channels], axis=0).astype(bool)
        fp_areas = np.sum(np.logical_and(binary, np.logical_not(combined)), axis=(1, 2))
        tn_areas = np.sum(np.logical_not(combined)) - fp_areas
    return spros, fp_areas, tn_areas


def loco_fp_rates(fp_areas_per_image, tn_areas_per_image):
    """``metrics.get_fp_rates`` (raises ZeroDivisionError without a defect-free pixel)."""
    total_fp = np.zeros_like(fp_areas_per_image[0], dtype=np.int64)
    total_tn = np.zeros_like(fp_areas_per_image[0], dtype=np.int64)
    for fp_areas, tn_areas in zip(fp_areas_per_image, tn_areas_per_image):
        total_fp += fp_areas
        total_tn += tn_areas
    if total_tn[0] + total_fp[0] == 0:
        raise ZeroDivisionError
    return total_fp / (total_tn + total_fp)


def loco_binary_refinement(init_queries, init_values, max_distance, get_values, min_queries_per_step,
                           max_queries_per_step, max_steps):
    """``aggregation.binary_refinement``, recursive as written."""
    assert len(init_queries) == len(init_values)
    assert len(set(init_queries)) == len(init_queries)
    pairwise_less = [init_queries[i] < init_queries[i + 1] for i in range(len(init_queries) - 1)]
    ascending = all(pairwise_less)
    assert ascending or not any(pairwise_less)
    candidates = []
    for i in range(len(init_queries) - 1):
        distance = np.linalg.norm(init_values[i] - init_values[i + 1])
        if distance <= max_distance:
            continue
        candidates.append((distance, (init_queries[i], init_queries[i + 1])))
    if len(candidates) == 0 or max_steps < 1:
        return init_queries, init_values
    candidates = sorted(candidates, key=lambda c: c[0], reverse=True)[:max_queries_per_step]
    num_remaining = max(min_queries_per_step - len(candidates), 0)
    total_distance_remaining = sum(distance for distance, _ in candidates)
    queries = []
    for distance, (query_left, query_right) in candidates:
        additional = int(np.round(distance / total_distance_remaining * num_remaining))
        queries.extend(np.linspace(query_left, query_right, num=3 + additional)[1:-1])
        num_remaining -= additional
        total_distance_remaining -= distance
    queried_values = get_values(queries)
    all_queries = list(init_queries) + list(queries)
    all_values = list(init_values) + list(queried_values)
    sort_indices = np.argsort(all_queries)
    all_queries = [all_queries[i] for i in sort_indices]
    all_values = [all_values[i] for i in sort_indices]
    if not ascending:
        all_queries, all_values = list(reversed(all_queries)), list(reversed(all_values))
    return loco_binary_refinement(all_queries, all_values, max_distance, get_values, min_queries_per_step,
                                  max_queries_per_step, max_steps - 1)


def loco_trapz(x, y, x_max=None):
    """``util.trapz``."""
    x, y = np.array(x), np.array(y)
    finite_mask = np.logical_and(np.isfinite(x), np.isfinite(y))
    x, y = x[finite_mask], y[finite_mask]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = bisect_right(x, x_max)
            assert 0 < ins < len(x)
            y_interp = y[ins - 1] + ((y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1]))
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        mask = x <= x_max
        x, y = x[mask], y[mask]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


def loco_classification_auc_roc(scores_ok, scores_nok):
    """``util.compute_classification_roc`` + ``trapz``."""
    anomaly_scores = [(x, 0) for x in scores_ok] + [(x, 1) for x in scores_nok]
    anomaly_scores = sorted(anomaly_scores, key=lambda x: x[0])
    num_scores, num_nok, num_ok = len(anomaly_scores), len(scores_nok), len(scores_ok)
    fprs, tprs = [1.0], [1.0]
    num_fp, num_tp = num_ok, num_nok
    prev_score = None
    for i, (score, label) in enumerate(anomaly_scores):
        if label == 0:
            num_fp -= 1
        else:
            num_tp -= 1
        if (prev_score is None) or (score != prev_score) or (i == num_scores - 1):
            fprs.append(num_fp / num_ok)
            tprs.append(num_tp / num_nok)
            prev_score = score
    return loco_trapz(fprs[::-1], tprs[::-1])


def loco_reference(maps, gt_channels, defect_types, rng=None, max_num_scores=10_000_000, curve_max_distance=0.01,
                   limits=(0.01, 0.05, 0.1, 0.3, 1.0), initial_thresholds=None):
    """The LOCO evaluator's ``localization.auc_spro`` and ``classification.auc_roc`` (plus ``all``: good against
    every anomalous image, same ROC code) for float maps, per-image channel lists of (mask, threshold, relative)
    and per-image defect types. ``initial_thresholds`` replaces the sampled ones (tests with repeated scores)."""
    maps = [np.asarray(m) for m in maps]
    if initial_thresholds is None:
        initial_thresholds = loco_initial_thresholds(maps, rng if rng is not None else np.random.default_rng(0),
                                                     max_num_scores)
    store = {"thresholds": [], "spros": [], "fp": [], "tn": []}

    def callback(anomaly_thresholds):
        sort_indices = np.argsort(anomaly_thresholds)[::-1]
        unsort_indices = np.empty_like(sort_indices)
        unsort_indices[sort_indices] = np.arange(len(sort_indices))
        thresholds_sorted = np.take(anomaly_thresholds, sort_indices)
        per_image = [loco_per_image(c, m, thresholds_sorted) for c, m in zip(gt_channels, maps)]
        store["thresholds"].append(np.array(thresholds_sorted))
        store["spros"].append([p[0] for p in per_image])
        store["fp"].append([p[1] for p in per_image])
        store["tn"].append([p[2] for p in per_image])
        all_spros = [s for p in per_image for s in p[0]]
        mean_spros = np.mean(all_spros, axis=0)
        fp_rates = loco_fp_rates([p[1] for p in per_image], [p[2] for p in per_image])
        values_sorted = [np.array([s, f]) for s, f in zip(mean_spros, fp_rates)]
        return np.take(values_sorted, unsort_indices, axis=0)

    loco_binary_refinement(initial_thresholds, callback(initial_thresholds), curve_max_distance, callback, 20, 100,
                           10)
    thresholds = np.concatenate(store["thresholds"])
    sort_indices = np.argsort(thresholds)[::-1]
    n = len(maps)
    fp = [np.concatenate([step[i] for step in store["fp"]])[sort_indices] for i in range(n)]
    tn = [np.concatenate([step[i] for step in store["tn"]])[sort_indices] for i in range(n)]
    spros = [[np.concatenate([step[i][c] for step in store["spros"]])[sort_indices]
              for c in range(len(gt_channels[i]))] for i in range(n)]

    good = [i for i in range(n) if defect_types[i] == "good"]
    auc_spro, auc_roc = {}, {}
    scores = [float(np.max(m)) for m in maps]
    for subset in ("logical_anomalies", "structural_anomalies"):
        images = [i for i in range(n) if defect_types[i] == subset] + good
        fp_rates = loco_fp_rates([fp[i] for i in images], [tn[i] for i in images])
        mean_spros = np.mean([s for i in images for s in spros[i]], axis=0)
        auc_spro[subset] = {}
        for limit in limits:
            assert fp_rates[0] == 0 and fp_rates[-1] == 1
            auc_spro[subset][limit] = loco_trapz(fp_rates, mean_spros, limit) / limit
        auc_roc[subset] = loco_classification_auc_roc([scores[i] for i in good],
                                                      [scores[i] for i in range(n) if defect_types[i] == subset])
    auc_spro["mean"] = {limit: 0.5 * (auc_spro["logical_anomalies"][limit] + auc_spro["structural_anomalies"][limit])
                        for limit in limits}
    auc_roc["mean"] = 0.5 * (auc_roc["logical_anomalies"] + auc_roc["structural_anomalies"])
    auc_roc["all"] = loco_classification_auc_roc([scores[i] for i in good],
                                                 [scores[i] for i in range(n) if defect_types[i] != "good"])
    return {"au_spro": auc_spro, "image_auroc": auc_roc, "num_thresholds": len(thresholds)}


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
