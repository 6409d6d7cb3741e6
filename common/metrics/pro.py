"""AU-PRO, the official MVTec AD protocol (``pro_curve_util.compute_pro`` + ``generic_util.trapezoid``)."""
import numpy as np
from scipy import ndimage

from common.core.errors import UserError

from .checks import masks_and_maps

# In-plane 8-connectivity, no connection between images: one ndimage.label call labels a whole (N, H, W) stack
# with region ids that are unique across the test set.
_EIGHT_CONNECTED_STACK = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_STACK[1] = True


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
    masks, maps = masks_and_maps(masks, maps, names)
    curve = _official_pro_curve(masks, maps.ravel(), integration_limit)
    if curve is None:
        return None
    return _trapezoid_to_limit(*curve, integration_limit) / integration_limit


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
