"""Prediction on image files, shared by ``main.py --mode predict`` (dygraph) and ``infer.py`` (Paddle Inference).

For every image: the anomaly score, the label at the image threshold, a heatmap overlay, the predicted mask (map
>= pixel threshold) and one JSON line in ``OUTPUT/predictions.jsonl`` (also printed).
"""
import json
import os

import numpy as np

from common.errors import UserError
from common.inference import batches
from common.mvtec import image_paths, open_image
from common.visualize import append_jsonl, save_prediction

from .trainer import THRESHOLDS, preprocess_for

PREDICTIONS = "predictions.jsonl"


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


def output_names(paths, root):
    """Output names (relative path without extension) for image ``paths`` found under ``root``."""
    if os.path.isfile(root):
        return [os.path.splitext(os.path.basename(root))[0]]
    return [os.path.splitext(os.path.relpath(p, root))[0] for p in paths]


def predict_images(input_path, run_batch, image_size, image_threshold, pixel_threshold, out_dir, batch_size=1,
                   timer=None, quiet=False):
    """Score every image of ``input_path`` (file or folder) with ``run_batch(x) -> (maps (N,1,S,S), scores (N,))``.

    Writes the pictures and ``OUT_DIR/predictions.jsonl`` (replaced), prints one JSON line per image unless
    ``quiet``, and returns the records. ``timer`` (a :class:`common.inference.BenchmarkTimer`) gets the
    preprocess / inference / postprocess stamps.
    """
    paths = image_paths(input_path)
    names = output_names(paths, input_path)
    preprocess = preprocess_for(image_size)
    jsonl = os.path.join(out_dir, PREDICTIONS)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(jsonl):
        os.remove(jsonl)
    records = []
    for batch in batches(list(zip(paths, names)), batch_size):
        if timer:
            timer.start()
        pictures = [open_image(path) for path, _ in batch]
        x = np.stack([preprocess.image(picture) for picture in pictures]).astype(np.float32)
        if timer:
            timer.stamp()
        maps, scores = run_batch(x)
        if timer:
            timer.stamp()
        for (path, name), picture, amap, score in zip(batch, pictures, maps, scores):
            record = save_prediction(out_dir, name, preprocess.resize_image(picture), np.asarray(amap)[0],
                                     float(score), image_threshold, pixel_threshold, source=path)
            append_jsonl(jsonl, record)
            records.append(record)
            if not quiet:
                print(json.dumps(record))
        if timer:
            timer.end(stamp=True)
    return records
