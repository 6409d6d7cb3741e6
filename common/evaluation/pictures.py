"""Pictures a person can look at: heatmap overlays, predicted masks, contours; and the predictions JSON lines."""
import os

import cv2
import numpy as np
from PIL import Image

PRED_COLOR = (255, 0, 0)   # RGB red: predicted defect outline
GT_COLOR = (0, 255, 0)     # RGB green: ground-truth outline


def normalize_map(amap, vmin=None, vmax=None):
    """Scale a map to [0, 1] with the given range (default: the map's own min and max)."""
    amap = np.asarray(amap, dtype=np.float64)
    vmin = float(amap.min()) if vmin is None else float(vmin)
    vmax = float(amap.max()) if vmax is None else float(vmax)
    return np.clip((amap - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)


def heatmap(amap, vmin=None, vmax=None):
    """Jet colour map of an anomaly map as uint8 RGB (H, W, 3)."""
    gray = (normalize_map(amap, vmin, vmax) * 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(gray, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def _fit(image, shape):
    """Resize a uint8 RGB image to ``shape`` (H, W) when the map has another size."""
    if image.shape[:2] == tuple(shape):
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def overlay(image, amap, vmin=None, vmax=None, alpha=0.5):
    """Blend the heatmap over a uint8 RGB image."""
    image = _fit(np.asarray(image, dtype=np.uint8), np.shape(amap))
    blended = (1 - alpha) * image.astype(np.float64) + alpha * heatmap(amap, vmin, vmax)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def draw_contours(image, pred_mask=None, gt_mask=None, thickness=1):
    """Outline the predicted mask (red) and the ground truth (green) on a uint8 RGB image."""
    shape = np.shape(pred_mask if pred_mask is not None else gt_mask)
    out = _fit(np.asarray(image, dtype=np.uint8), shape).copy()
    for mask, color in ((gt_mask, GT_COLOR), (pred_mask, PRED_COLOR)):
        if mask is None:
            continue
        contours, _ = cv2.findContours(np.asarray(mask, dtype=np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, thickness)
    return out


def save_png(path, array):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)


def save_prediction(out_dir, name, image, amap, score, image_threshold, pixel_threshold, vmin=None, vmax=None,
                    gt_mask=None, source=None):
    """Write the pictures of one prediction and return its JSON-able record.

    Files (``name`` may contain a sub-folder, e.g. ``broken_large/000``): ``NAME_heatmap.png`` (heatmap over the
    image), ``NAME_mask.png`` (pixels with map >= ``pixel_threshold``, 0/255) and ``NAME_contours.png`` (predicted
    outline red, ground truth green). The heatmap's colour range defaults to [min of the map, 2 x pixel threshold]
    so that colours mean the same thing across images.
    """
    amap = np.asarray(amap, dtype=np.float64)
    pred_mask = amap >= pixel_threshold
    if vmax is None:
        vmax = 2.0 * pixel_threshold if pixel_threshold > 0 else None
    base = os.path.join(out_dir, name)
    paths = {"heatmap": base + "_heatmap.png", "mask": base + "_mask.png", "contours": base + "_contours.png"}
    save_png(paths["heatmap"], overlay(image, amap, vmin, vmax))
    save_png(paths["mask"], pred_mask.astype(np.uint8) * 255)
    save_png(paths["contours"], draw_contours(image, pred_mask, gt_mask))
    return prediction_record(source or name, amap, score, image_threshold, pixel_threshold, paths)


def prediction_record(image, amap, score, image_threshold, pixel_threshold, pictures=None):
    """The JSON-able record of one prediction (the same keys for every method, with or without pictures)."""
    return {
        "image": image,
        "score": float(score),
        "threshold": float(image_threshold),
        "is_anomalous": bool(score >= image_threshold),
        "pixel_threshold": float(pixel_threshold),
        "defect_fraction": float((np.asarray(amap) >= pixel_threshold).mean()),
        "pictures": pictures or {},
    }


def save_test_pictures(dataset, maps, scores, thresholds, out_dir, masks=None):
    """Heatmap, predicted mask and contours (ground truth in green) for every test image (``--save_pic``).

    ``maps`` at the network's size are drawn over the preprocessed image, maps of another size over the original
    image (methods evaluated at the original resolution); ``masks`` default to the dataset's at the network size.
    """
    from common.data.samples import open_sample_image

    image_threshold = (thresholds or {}).get("image_threshold", float(np.median(scores)))
    pixel_threshold = (thresholds or {}).get("pixel_threshold") or image_threshold
    if masks is None and dataset.has_masks:
        masks = dataset.masks()
    shape = tuple(dataset.preprocess.output_shape)  # (height, width): non-square inputs too (KolektorSDD 704x256)
    for i, sample in enumerate(dataset.samples):
        picture = open_sample_image(sample)
        image = dataset.preprocess.resize_image(picture) if maps[i].shape == shape else np.asarray(picture)
        save_prediction(out_dir, sample.name, image, maps[i], float(scores[i]), image_threshold, pixel_threshold,
                        gt_mask=None if masks is None else masks[i], source=sample.path)
    print(f"pictures of {len(dataset)} test images in {out_dir}")
