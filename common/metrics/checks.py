"""Validation of metric inputs: one-line ``UserError``s naming the image (by index, and by path when ``names`` is
given) for a shape mismatch, NaN or Inf, or labels that are not 0/1."""
import numpy as np

from common.core.errors import UserError


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def describe(index, names):
    return f"{index} ({names[index]})" if names is not None and index < len(names) else f"{index}"


def binary_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise UserError(f"image labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise UserError(f"image labels must be 0 (normal) or 1 (defective), got values {np.unique(labels)[:5]}")
        labels = labels == 1
    return labels


def finite_scores(scores, count, names):
    scores = np.asarray(scores)
    if scores.shape != (count,):
        raise UserError(f"image scores have shape {scores.shape} but there are {count} labels")
    if not np.issubdtype(scores.dtype, np.number) or np.issubdtype(scores.dtype, np.complexfloating):
        raise UserError(f"image scores must be real numbers, got dtype {scores.dtype}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if len(bad):
        raise UserError(f"image score {describe(int(bad[0]), names)} is NaN or Inf")
    return scores


def masks_and_maps(masks, maps, names):
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
        raise UserError(f"anomaly map {describe(bad, names)} contains NaN or Inf")
    return binary_masks(masks), maps


def binary_masks(masks):
    if masks.dtype == bool:
        return masks
    if np.issubdtype(masks.dtype, np.floating):
        return masks > 0.5
    if np.issubdtype(masks.dtype, np.integer):
        return masks > 0
    raise UserError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
