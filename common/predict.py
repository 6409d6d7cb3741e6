"""Prediction on image files, shared by every method's ``predict`` (dygraph) and ``infer.py`` (Paddle Inference).

For every image of a file or folder: the anomaly score, the label at the image threshold, the pictures of
:func:`common.visualize.save_prediction` and one JSON line in ``OUT_DIR/predictions.jsonl``.
"""
import json
import os

import numpy as np

from .inference import batches
from .mvtec import image_paths, open_image
from .visualize import append_jsonl, save_prediction

PREDICTIONS = "predictions.jsonl"


def output_names(paths, root):
    """Output names (path relative to ``root`` without extension, so sub-folders never collide)."""
    if os.path.isfile(root):
        return [os.path.splitext(os.path.basename(root))[0]]
    return [os.path.splitext(os.path.relpath(p, root))[0] for p in paths]


def print_json(record):
    print(json.dumps(record))


def predict_images(input_path, run_batch, preprocess, image_threshold, pixel_threshold, out_dir, batch_size=1,
                   timer=None, on_record=print_json):
    """Score every image of ``input_path`` with ``run_batch(x) -> (maps (N,1,S,S), scores (N,))``.

    ``x`` is a float32 batch made by ``preprocess``. Writes the pictures and ``OUT_DIR/predictions.jsonl``
    (replaced), calls ``on_record(record)`` per image (default: print it as JSON; None for silence) and returns the
    records. ``timer`` (a :class:`common.inference.BenchmarkTimer`) gets the preprocess / inference /
    postprocess stamps.
    """
    paths = image_paths(input_path)
    names = output_names(paths, input_path)
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
            if on_record:
                on_record(record)
        if timer:
            timer.end(stamp=True)
    return records
