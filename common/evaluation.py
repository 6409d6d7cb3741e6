"""Plumbing of every method's ``evaluate.py``: maps over a dataset, the standard metrics, pictures, results JSON.

The standard MVTec metrics (``image_auroc``, ``pixel_auroc``, ``au_pro``: the official AU-PRO) are computed here the
same way for every method; a method adds its paper's own protocol under its own names.
"""
import os

import numpy as np
from tqdm import tqdm

from . import metrics as common_metrics
from .loader import Loader
from .visualize import save_prediction

STANDARD_PROTOCOLS = {
    "image_auroc": "sklearn roc_auc_score of the image scores",
    "pixel_auroc": "sklearn roc_auc_score over every test pixel, pooled over images",
    "au_pro": "official MVTec AD AU-PRO: PRO curve over the whole test set up to FPR 0.3, normalised by 0.3",
}


def collect(run_batch, dataset, batch_size, num_workers=0, desc="score"):
    """``(maps (N, S, S), scores (N,))`` of ``run_batch(images) -> (maps (B,S,S) ndarray, scores (B,))`` over
    ``dataset`` in order (no gradients; a progress bar on a terminal only)."""
    import paddle

    maps, scores = [], []
    loader = Loader(dataset, batch_size, num_workers=num_workers)
    with paddle.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None):
            batch_maps, batch_scores = run_batch(batch[0])
            maps.append(np.asarray(batch_maps))
            scores.append(np.asarray(batch_scores).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def standard_metrics(dataset, scores, maps, protocols=("image_auroc", "pixel_auroc", "au_pro")):
    """``(metrics, notes, masks)``: the requested ``common.metrics`` protocols on a test dataset (pixel metrics
    None with a note when the dataset has no masks); ``masks`` is returned for the method's own protocol."""
    masks = dataset.masks() if dataset.has_masks else None
    result = common_metrics.evaluate(dataset.labels, scores, masks, maps if masks is not None else None,
                                     protocols=tuple(protocols), names=[s.path for s in dataset.samples])
    notes = result.pop("notes")
    return result, notes, masks


def save_test_pictures(dataset, maps, scores, thresholds, out_dir, masks=None):
    """Heatmap, predicted mask and contours (ground truth in green) for every test image (``--save_pic``).

    ``maps`` at the network's size are drawn over the preprocessed image, maps of another size over the original
    image (methods evaluated at the original resolution); ``masks`` default to the dataset's at the network size.
    """
    from .mvtec import open_image

    image_threshold = (thresholds or {}).get("image_threshold", float(np.median(scores)))
    pixel_threshold = (thresholds or {}).get("pixel_threshold") or image_threshold
    if masks is None and dataset.has_masks:
        masks = dataset.masks()
    size = dataset.preprocess.output_size
    for i, sample in enumerate(dataset.samples):
        picture = open_image(sample.path)
        image = dataset.preprocess.resize_image(picture) if maps[i].shape == (size, size) else np.asarray(picture)
        save_prediction(out_dir, sample.name, image, maps[i], float(scores[i]), image_threshold, pixel_threshold,
                        gt_mask=None if masks is None else masks[i], source=sample.path)
    print(f"pictures of {len(dataset)} test images in {out_dir}")


def notes_list(notes):
    return [f"{name}: {text}" for name, text in notes.items()]


def results_dir(output_dir):
    return os.path.join(output_dir, "results")
