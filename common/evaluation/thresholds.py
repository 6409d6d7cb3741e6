"""``thresholds.json``: the image and pixel decision thresholds of a trained class model, one schema for every method.

Keys: ``image_threshold``, ``pixel_threshold``, ``image_quantile``, ``pixel_quantile``, ``num_images``,
``held_out`` (True when the calibration images were not used for training), ``source`` (one sentence saying which
images), ``calibration_images`` (their paths). Thresholds are quantiles of normal images' scores and map pixels
(:func:`common.metrics.calibrate_threshold`); they serve predict and infer, never the metrics.
"""
import json
import os

from common.core.errors import UserError
from common.core.files import atomic_write_json
from common.metrics import calibrate_threshold

THRESHOLDS_FILE = "thresholds.json"


def calibration_record(scores, maps, samples, held_out, image_quantile=0.99, pixel_quantile=0.99):
    """The thresholds of normal images ``samples`` from their ``scores`` (N,) and ``maps`` (N, S, S); ``maps`` None:
    the image threshold only (``pixel_threshold`` None)."""
    if held_out:
        source = f"{len(samples)} good training images held out from training"
    else:
        source = f"{len(samples)} good training images that were also used for training (not held out)"
    return {
        "image_threshold": calibrate_threshold(scores, image_quantile),
        "pixel_threshold": None if maps is None else calibrate_threshold(maps, pixel_quantile),
        "image_quantile": float(image_quantile),
        "pixel_quantile": float(pixel_quantile),
        "num_images": len(samples),
        "held_out": bool(held_out),
        "source": source,
        "calibration_images": [s.path for s in samples],
    }


def calibrate(detector, dataset, config, held_out, scores_only=False):
    """The thresholds of ``detector`` (images -> (maps (B, 1, S, S), scores (B,))) on the good images ``dataset``:
    exactly the maps and scores predict and infer compute. ``config`` gives ``eval_batch_size``, ``num_workers``,
    ``image_quantile`` and ``pixel_quantile``; ``held_out`` says whether training saw these images.

    ``scores_only``: the image threshold alone, from ``detector.scores(images)`` (a method whose maps cost far more
    than its scores, on a dataset without masks: KDAD's saliency on the one-class sets)."""
    from .collect import collect, collect_scores

    detector.eval()
    if scores_only:
        maps, scores = None, collect_scores(lambda images: detector.scores(images).numpy(), dataset,
                                            config.eval_batch_size, config.num_workers, "calibrate")
    else:
        def run_batch(images):
            maps, scores = detector(images)
            return maps.numpy()[:, 0], scores.numpy()

        maps, scores = collect(run_batch, dataset, config.eval_batch_size, config.num_workers, "calibrate")
    return calibration_record(scores, maps, dataset.samples, held_out, config.image_quantile, config.pixel_quantile)


def write_thresholds(class_dir, record):
    path = os.path.join(class_dir, THRESHOLDS_FILE)
    atomic_write_json(path, record)
    return path


def read_thresholds(class_dir):
    """The stored record of ``class_dir``, or None when there is none."""
    path = os.path.join(class_dir, THRESHOLDS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def summary(record):
    """The record without the file list (what results JSON and exported folders keep)."""
    return None if record is None else {k: v for k, v in record.items() if k != "calibration_images"}


def resolve_thresholds(stored, image_threshold=None, pixel_threshold=None, where=""):
    """``(image_threshold, pixel_threshold)``: command-line values win over the stored calibration.

    Without a pixel threshold the image threshold serves the mask too (the image score is the map maximum, so an
    image is then anomalous exactly when its mask is not empty).
    """
    stored = stored or {}
    image = image_threshold if image_threshold is not None else stored.get("image_threshold")
    if image is None:
        raise UserError(f"no calibrated threshold ({THRESHOLDS_FILE} not found{where}); pass --threshold VALUE")
    pixel = pixel_threshold if pixel_threshold is not None else stored.get("pixel_threshold")
    if pixel is None or (image_threshold is not None and pixel_threshold is None):
        pixel = image
    return float(image), float(pixel)
