"""Prediction on image files, shared by every method's ``predict`` (dygraph) and every ``infer.py`` (exported).

For every image of a file or folder: the anomaly score, the decision at the image threshold, the pictures of
:func:`common.evaluation.pictures.save_prediction` (unless ``save_pictures`` is False), one JSON line in
``OUT_DIR/predictions.jsonl`` and one console line ``IMAGE: score S -> anomalous|normal (threshold T)``.
"""
import os

import numpy as np

from common.core.errors import UserError
from common.core.files import atomic_write_text
from common.data.images import image_paths, open_image
from common.evaluation.pictures import prediction_record, save_prediction
from common.networks.postprocess import resize_to_image

PREDICTIONS = "predictions.jsonl"


def output_names(paths, root):
    """Output names (path relative to ``root`` without extension, so sub-folders never collide)."""
    if os.path.isfile(root):
        return [os.path.splitext(os.path.basename(root))[0]]
    return [os.path.splitext(os.path.relpath(p, root))[0] for p in paths]


def console_line(record):
    decision = "anomalous" if record["is_anomalous"] else "normal"
    return f"{record['image']}: score {record['score']:.4f} -> {decision} (threshold {record['threshold']:.4f})"


def _preprocessed(preprocess, picture, path):
    try:
        return preprocess.image(picture).astype(np.float32)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad file must end in one line naming it
        raise UserError(f"cannot preprocess {path}: {type(exc).__name__}: {exc}") from None


def predict_images(input_path, run_batch, preprocess, image_threshold, pixel_threshold, out_dir, batch_size=1,
                   timer=None, save_pictures=True, original_resolution=False, quiet=False):
    """Score every image of ``input_path`` with ``run_batch(x) -> (maps (N,1,S,S), scores (N,))``.

    ``x`` is a float32 batch made by ``preprocess``. With ``original_resolution`` each map is resized bilinearly to
    its image's own size before the pictures (methods that evaluate at the original resolution). Writes
    ``OUT_DIR/predictions.jsonl`` (replaced atomically at the end) and returns the records. ``timer`` (a
    :class:`common.deploy.benchmark.BenchmarkTimer`) gets the preprocess / inference / postprocess stamps.
    """
    import json

    paths = image_paths(input_path)
    names = output_names(paths, input_path)
    os.makedirs(out_dir, exist_ok=True)
    records = []
    for batch in batches(list(zip(paths, names)), batch_size):
        if timer:
            timer.start()
        pictures = [open_image(path) for path, _ in batch]
        x = np.stack([_preprocessed(preprocess, picture, path) for picture, (path, _) in zip(pictures, batch)])
        if timer:
            timer.stamp()
        maps, scores = run_batch(x)
        if timer:
            timer.stamp()
        for (path, name), picture, amap, score in zip(batch, pictures, maps, scores):
            amap = np.asarray(amap)[0]
            if original_resolution:
                amap, image = resize_to_image(amap, picture.size), np.asarray(picture)
            else:
                image = preprocess.resize_image(picture)
            if save_pictures:
                record = save_prediction(out_dir, name, image, amap, float(score), image_threshold,
                                         pixel_threshold, source=path)
            else:
                record = prediction_record(path, amap, float(score), image_threshold, pixel_threshold)
            records.append(record)
            if not quiet:
                print(console_line(record))
        if timer:
            timer.end(stamp=True)
    atomic_write_text(os.path.join(out_dir, PREDICTIONS), "".join(json.dumps(r) + "\n" for r in records))
    if not quiet:
        print(f"{len(records)} image(s) -> {os.path.join(out_dir, PREDICTIONS)}")
    return records


def batches(items, batch_size):
    """Split a list into consecutive batches."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
