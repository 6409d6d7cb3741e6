"""Thresholds for ``main.py --mode predict`` and ``infer.py``; the prediction loop is ``common.predict``."""
import json
import os

from common.errors import UserError

from .trainer import THRESHOLDS


def read_thresholds(path):
    """``thresholds.json`` written after training, or None when absent."""
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def resolve_thresholds(stored, image_threshold=None, pixel_threshold=None, where=""):
    """``(image_threshold, pixel_threshold)``: command-line values win over the stored calibration.

    Without a pixel threshold the image threshold is used for the mask too (the image score is the map maximum,
    so an image is then anomalous exactly when its mask is not empty).
    """
    stored = stored or {}
    image = image_threshold if image_threshold is not None else stored.get("image_threshold")
    if image is None:
        raise UserError(f"no calibrated threshold ({THRESHOLDS} not found{where}); pass --threshold VALUE")
    pixel = pixel_threshold if pixel_threshold is not None else stored.get("pixel_threshold")
    if pixel is None or (image_threshold is not None and pixel_threshold is None):
        pixel = image
    return float(image), float(pixel)
