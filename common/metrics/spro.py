"""MVTec LOCO AD: AU-sPRO and image AUROC as MVTec's LOCO evaluation code (``mvtec_loco_ad_evaluation``) computes them.

The protocol (``evaluate_experiment.py`` with ``src/aggregation.py``, ``src/metrics.py``, ``src/util.py``):

- A ground-truth *channel* is one annotated defect of an image (one PNG of ``ground_truth/SUBSET/STEM/``); an
  anomalous image has one or more channels, a good image none.
- At a threshold ``t`` a pixel is predicted defective when its score is ``> t`` (strictly). The sPRO of a channel is
  ``min(TP area / saturation area, 1)``, where the saturation area is ``int(threshold * defect area)`` for a
  relative saturation and ``min(threshold, defect area)`` for an absolute one. The FPR is pooled over the images:
  false positives are predicted pixels outside *every* channel of their image, divided by all such pixels.
- The thresholds: 50 initial ones (the maximum score + 1e-6, 48 scores at equidistant ranks of the sorted pooled
  scores, the minimum - 1e-6), then up to 10 steps of binary refinement that add thresholds between neighbours whose
  (mean sPRO, FPR) points are more than 0.01 apart (20 to 100 new thresholds per step). The curve is built over all
  test images; each subset (``logical_anomalies`` + good images, ``structural_anomalies`` + good images) then gets
  its own FPRs and mean sPROs at those thresholds.
- AU-sPRO at a limit: trapezoidal area under (FPR, mean sPRO) up to the limit (the curve interpolated at the limit),
  divided by the limit. ``mean`` is the average of the logical and structural figures.
- Image AUROC: the image score is the maximum of its map; the ROC curve of ``util.compute_classification_roc``
  (with its own handling of tied scores) integrated by the trapezoidal rule, for logical + good, structural + good,
  their mean, and here also all anomalous + good.

Differences from the official code, both documented in ``docs/metrics.md``: above 10 million pooled scores the
official code draws the initial thresholds' sample with the unseeded ``np.random.choice``; here a generator seeded
with ``seed`` draws it, so a result repeats. Repeated initial thresholds (a score that fills more than ~2% of all
pixels) make the official code stop on an assertion; here they are kept once. The minimum and maximum thresholds
are computed in float64 (the official code under NumPy 1, for which it was written).

Speed: the official code thresholds every map at every threshold (one boolean array per threshold and image). Here
each image's normal-pixel scores and each channel's scores are sorted once, and the number of scores above a
threshold is a binary search, so a refinement step costs a few microseconds per image.
"""
import numpy as np

INTEGRATION_LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)
SUBSETS = ("logical_anomalies", "structural_anomalies")
GOOD = "good"
MAX_NUM_SCORES = 10_000_000          # official: at most this many scores are sorted for the initial thresholds
CURVE_MAX_DISTANCE = 0.01            # official default of --curve_max_distance
NUM_INITIAL_THRESHOLDS = 50
EPSILON = 1e-6
MIN_QUERIES_PER_STEP, MAX_QUERIES_PER_STEP, MAX_STEPS = 20, 100, 10


def saturation_area(channel):
    """The TP area at which ``channel`` (with ``mask``, ``saturation_threshold``, ``relative_saturation``) counts as
    fully found: ``int(threshold * defect area)`` when relative, ``min(threshold, defect area)`` when absolute."""
    defect_area = int(np.count_nonzero(channel.mask))
    if channel.relative_saturation:
        return int(channel.saturation_threshold * defect_area)
    return min(channel.saturation_threshold, defect_area)


def _count_above(sorted_scores, thresholds):
    """How many of ``sorted_scores`` (ascending) are strictly greater than each threshold."""
    return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="right")


class _SortedScores:
    """Per image, the sorted scores of its defect-free pixels; per channel, the sorted scores inside it.

    Built once from the maps; every threshold query then counts by binary search.
    """

    def __init__(self):
        self.normal, self.channels, self.channel_image, self.saturation = [], [], [], []

    def add(self, amap, channels):
        """Add one image: its map and its channels (empty for a good image)."""
        index, amap = len(self.normal), np.asarray(amap)
        defect = np.zeros(amap.shape, dtype=bool)
        for channel in channels:
            if channel.mask.shape != amap.shape:
                raise ValueError(f"image {index}: channel mask {channel.mask.shape} and map {amap.shape} differ")
            defect |= channel.mask
            self.channels.append(np.sort(amap[channel.mask]))
            self.channel_image.append(index)
            self.saturation.append(saturation_area(channel))
        self.normal.append(np.sort(amap[~defect]))

    def finish(self):
        self.channel_image = np.asarray(self.channel_image, dtype=np.int64)
        self.saturation = np.asarray(self.saturation, dtype=np.float64)
        self.normal_area = np.array([len(s) for s in self.normal], dtype=np.int64)
        return self

    def fp_areas(self, thresholds):
        """(images, thresholds) int64: defect-free pixels scoring above each threshold."""
        return np.stack([_count_above(s, thresholds) for s in self.normal]).astype(np.int64)

    def spros(self, thresholds):
        """(channels, thresholds) float64: ``min(TP area / saturation area, 1)`` of every channel."""
        if not self.channels:
            return np.zeros((0, len(thresholds)))
        tp = np.stack([_count_above(s, thresholds) for s in self.channels]).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):   # a saturation area of 0 gives NaN/inf as official
            return np.minimum(tp / self.saturation[:, None], 1.0)


class _ThresholdSampler:
    """Collects the scores for the official initial thresholds one map at a time (see :func:`initial_thresholds`).

    As the official code, whether to subsample is decided from the number of maps and the first map's size.
    """

    def __init__(self, num_images, rng=None, max_num_scores=MAX_NUM_SCORES):
        self.num_images, self.rng, self.max_num_scores = num_images, rng, max_num_scores
        self.per_image = None
        self.low, self.high, self.sampled = np.inf, -np.inf, []

    def add(self, amap):
        flat = np.asarray(amap).ravel()
        if not self.sampled and self.num_images * flat.size > self.max_num_scores:
            self.per_image = int(np.floor(self.max_num_scores / self.num_images))
            self.rng = self.rng if self.rng is not None else np.random.default_rng(0)
        self.low, self.high = min(self.low, float(flat.min())), max(self.high, float(flat.max()))
        if self.per_image is None:
            self.sampled.append(flat.copy())
        else:
            self.sampled.append(self.rng.choice(flat, size=min(self.per_image, flat.size), replace=False))

    def thresholds(self, num=NUM_INITIAL_THRESHOLDS, epsilon=EPSILON):
        sampled = np.sort(np.concatenate(self.sampled))
        ranks = np.linspace(0, len(sampled) - 1, num=num, endpoint=True, dtype=int)[1:-1]
        return [self.high + epsilon] + sampled[ranks].tolist()[::-1] + [self.low - epsilon]


def initial_thresholds(maps, rng=None, max_num_scores=MAX_NUM_SCORES, num=NUM_INITIAL_THRESHOLDS, epsilon=EPSILON):
    """The official initial thresholds, in descending order (``MetricsAggregator._get_initial_thresholds``).

    The maximum score + ``epsilon``, ``num - 2`` scores at equidistant ranks of all pooled scores sorted, and the
    minimum score - ``epsilon``. Above ``max_num_scores`` pooled scores, ``floor(max_num_scores / images)`` scores
    are drawn from each map without replacement, with ``rng`` (a ``numpy.random.Generator``; seed 0 when None).
    """
    sampler = _ThresholdSampler(len(maps), rng, max_num_scores)
    for amap in maps:
        sampler.add(amap)
    return sampler.thresholds(num, epsilon)


def _unique_in_order(values):
    """``values`` without repeats, first occurrence kept (the official refinement asserts there are none)."""
    seen, out = set(), []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


def binary_refinement(queries, values, get_values, max_distance=CURVE_MAX_DISTANCE,
                      min_queries=MIN_QUERIES_PER_STEP, max_queries=MAX_QUERIES_PER_STEP, max_steps=MAX_STEPS):
    """The official ``aggregation.binary_refinement``, as a loop: refine sorted ``queries`` (descending here) until
    neighbouring ``values`` (2-vectors) are at most ``max_distance`` apart or ``max_steps`` calls were made.

    Each step takes the intervals further apart than ``max_distance`` (the farthest ``max_queries``, ties in their
    original order), puts one query inside each and shares the rest up to ``min_queries`` by distance.
    """
    queries, values = list(queries), [np.asarray(v, dtype=np.float64) for v in values]
    for _ in range(max_steps):
        gaps = np.linalg.norm(np.diff(np.asarray(values), axis=0), axis=1)
        wide = np.flatnonzero(gaps > max_distance)
        if wide.size == 0:
            break
        order = wide[np.argsort(-gaps[wide], kind="stable")][:max_queries]
        remaining = max(min_queries - len(order), 0)
        total = sum(float(gaps[i]) for i in order)   # left to right, as the official sum()
        new = []
        for i in order:
            extra = int(np.round(gaps[i] / total * remaining))
            new.extend(np.linspace(queries[i], queries[i + 1], num=3 + extra)[1:-1].tolist())
            remaining -= extra
            total -= gaps[i]
        new_values = get_values(new)
        merged = sorted(zip(queries + new, values + list(new_values)), key=lambda pair: pair[0], reverse=True)
        queries, values = [q for q, _ in merged], [v for _, v in merged]
    return queries, values


def trapezoid(x, y, x_max=None):
    """The official ``util.trapz``: area under ``y(x)`` (``x`` ascending) up to ``x_max``, non-finite points dropped,
    the curve interpolated linearly at ``x_max`` when it is not one of the ``x``."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    correction = 0.0
    if x_max is not None:
        if x_max not in x:
            ins = int(np.searchsorted(x, x_max, side="right"))
            assert 0 < ins < len(x), "x_max outside the curve"
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def classification_auroc(scores_good, scores_anomalous):
    """Image AUROC as the official ``util.compute_classification_auc_roc``.

    Scores are sorted ascending (stable, good images first among equal scores) and taken out one at a time; a curve
    point is recorded at the first image of each new score and at the last one, so tied scores give the official
    (not sklearn's) curve.
    """
    good = np.asarray(scores_good, dtype=np.float64)
    bad = np.asarray(scores_anomalous, dtype=np.float64)
    if good.size == 0 or bad.size == 0:
        return None
    scores = np.concatenate([good, bad])
    is_bad = np.concatenate([np.zeros(good.size, bool), np.ones(bad.size, bool)])
    order = np.argsort(scores, kind="stable")
    scores, is_bad = scores[order], is_bad[order]
    fp = good.size - np.cumsum(~is_bad)
    tp = bad.size - np.cumsum(is_bad)
    record = np.ones(scores.size, dtype=bool)
    record[1:] = scores[1:] != scores[:-1]
    record[-1] = True
    fprs = np.concatenate([[1.0], fp[record] / good.size])[::-1]
    tprs = np.concatenate([[1.0], tp[record] / bad.size])[::-1]
    return trapezoid(fprs, tprs)


def au_spro(fprs, mean_spros, limit):
    """Normalised AU-sPRO of one curve (FPR ascending) up to ``limit``, as ``util.get_auc_for_max_fpr``."""
    assert fprs[0] == 0 and fprs[-1] == 1, "the curve must run from FPR 0 to FPR 1"
    return trapezoid(fprs, mean_spros, x_max=limit) / limit


def loco_metrics(maps, channels_per_image, defect_types, seed=0, max_num_scores=MAX_NUM_SCORES,
                 curve_max_distance=CURVE_MAX_DISTANCE, limits=INTEGRATION_LIMITS):
    """The MVTec LOCO AD figures of one object, as MVTec's LOCO evaluator computes them from the same maps.

    ``maps``: sequence of (H, W) anomaly maps at the images' original size (read once, in order, one at a time);
    ``channels_per_image``: per image a list of channels (objects with ``mask`` (H, W) bool,
    ``saturation_threshold``, ``relative_saturation``), empty for good images (a sequence read once, in order, so
    it may load each image's channels when indexed); ``defect_types``: per image
    ``good``, ``logical_anomalies`` or ``structural_anomalies``. ``seed`` seeds the initial thresholds' sample
    (used only above ``max_num_scores`` pooled scores).

    Returns ``{"au_spro": {subset: {limit: value}}, "image_auroc": {subset: value}, "num_thresholds": n}`` with
    subsets ``logical_anomalies``, ``structural_anomalies`` (each with the good images), ``mean`` and, for the image
    AUROC, ``all``. A subset without images is left out; a value that cannot be defined is None.
    """
    defect_types = list(defect_types)
    if not (len(maps) == len(channels_per_image) == len(defect_types)):
        raise ValueError("maps, channels_per_image and defect_types differ in length")
    sampler = _ThresholdSampler(len(maps), np.random.default_rng(seed), max_num_scores)
    counts, image_scores = _SortedScores(), np.empty(len(maps))
    for index, (amap, channels) in enumerate(zip(maps, channels_per_image)):
        amap = np.asarray(amap)
        image_scores[index] = float(np.max(amap))
        sampler.add(amap)
        counts.add(amap, list(channels))        # only sorted scores are kept, not the masks
    counts.finish()
    thresholds0 = _unique_in_order(sampler.thresholds())

    tried_thresholds, tried_fp, tried_spros = [], [], []

    def get_values(thresholds):
        """(mean sPRO, FPR) over all images at each threshold; keeps the per-image counts for the subsets."""
        thresholds = np.asarray(thresholds, dtype=np.float64)
        fp, spros = counts.fp_areas(thresholds), counts.spros(thresholds)
        tried_thresholds.append(thresholds)
        tried_fp.append(fp)
        tried_spros.append(spros)
        mean_spros = spros.mean(axis=0) if len(spros) else np.full(len(thresholds), np.nan)
        fprs = fp.sum(axis=0) / counts.normal_area.sum()
        return [np.array([s, f]) for s, f in zip(mean_spros, fprs)]

    binary_refinement(thresholds0, get_values(thresholds0), get_values, max_distance=curve_max_distance)

    thresholds = np.concatenate(tried_thresholds)
    order = np.argsort(thresholds)[::-1]          # descending: the curve starts at FPR 0
    fp = np.concatenate(tried_fp, axis=1)[:, order]
    spros = np.concatenate(tried_spros, axis=1)[:, order]

    types = np.asarray(defect_types)
    good = types == GOOD
    au_spros, aurocs = {}, {}
    for subset in SUBSETS:
        if not np.any(types == subset):
            continue
        images = good | (types == subset)
        normal_area = int(counts.normal_area[images].sum())
        channel_rows = images[counts.channel_image] if len(counts.channel_image) else np.zeros(0, bool)
        if normal_area == 0 or not channel_rows.any():
            au_spros[subset] = {limit: None for limit in limits}
        else:
            fprs = fp[images].sum(axis=0) / normal_area
            mean_spros = spros[channel_rows].mean(axis=0)
            au_spros[subset] = {limit: au_spro(fprs, mean_spros, limit) for limit in limits}
        aurocs[subset] = classification_auroc(image_scores[good], image_scores[types == subset])
    if all(subset in au_spros for subset in SUBSETS):
        au_spros["mean"] = {limit: _mean(au_spros[SUBSETS[0]][limit], au_spros[SUBSETS[1]][limit])
                            for limit in limits}
        aurocs["mean"] = _mean(aurocs[SUBSETS[0]], aurocs[SUBSETS[1]])
    aurocs["all"] = classification_auroc(image_scores[good], image_scores[~good])
    return {"au_spro": au_spros, "image_auroc": aurocs, "num_thresholds": int(len(thresholds))}


def _mean(a, b):
    return None if a is None or b is None else 0.5 * (a + b)
