"""Evaluation of one EfficientAD class as nelson1425 reports it: maps at each test image's ORIGINAL resolution.

The reference (``efficientad.py::test``) pads the normalised 56x56 map by 4, bilinearly resizes it
(``align_corners=False``) to the image's own height and width, and scores the image with the map's maximum; its
numbers come from the official MVTec AD evaluation code on those full-size maps (``classification_au_roc``,
``au_pro`` to FPR 0.3). Here: the same maps, the masks read at full size (``> 127``), ``image_auroc`` and the
official ``au_pro`` (``common.metrics``), and ``pixel_auroc`` as an extra (the reference computes none).
"""
import time

import numpy as np
from tqdm import tqdm

from common.config import to_dict
from common.evaluation import STANDARD_PROTOCOLS, notes_list, results_dir, save_test_pictures
from common.loader import Loader
from common.metrics import evaluate as compute_metrics
from common.mvtec import image_size, open_mask
from common.results import write_results
from common.thresholds import summary

from .data import NO_PENALTY, test_dataset
from .detector import resize_map

MASK_LEVEL = 127   # 8-bit masks (0 / 255 in MVTec AD): a pixel is defective above 127
PROTOCOLS = {
    "image_auroc": STANDARD_PROTOCOLS["image_auroc"] + " (max of the map at the original image resolution), as "
                                                       "nelson1425 (classification_au_roc)",
    "pixel_auroc": STANDARD_PROTOCOLS["pixel_auroc"] + " at the original image resolution (not reported by "
                                                       "nelson1425 or the paper)",
    "au_pro": STANDARD_PROTOCOLS["au_pro"] + "; maps and masks at the original image resolution, as nelson1425",
}


def test_maps(detector, config, dataset):
    """``(maps, scores)``: each test image's map at its original size (a list, or one (N, H, W) float32 array when
    every image has the same size) and its score, the map maximum."""
    import paddle

    detector.eval()
    sizes = [image_size(s.path) for s in dataset.samples]          # (width, height)
    same = len(set(sizes)) == 1
    maps = np.empty((len(sizes), sizes[0][1], sizes[0][0]), np.float32) if same else [None] * len(sizes)
    scores = np.empty(len(sizes), np.float64)
    loader = Loader(dataset, config.eval_batch_size, num_workers=config.num_workers)
    with paddle.no_grad():
        for images, _, _, indices in tqdm(loader, desc="evaluate", leave=False, dynamic_ncols=True, disable=None):
            padded = detector.padded_map(images)
            for row, index in enumerate(indices.numpy().tolist()):
                width, height = sizes[index]
                full = resize_map(padded[row:row + 1], (height, width))[0, 0].numpy()
                maps[index] = full
                scores[index] = float(full.max())
    return maps, scores


def full_size_masks(dataset, maps):
    """Ground-truth masks at the original resolution (bool; zeros for good images), shaped like ``maps``."""
    masks = np.zeros(maps.shape, bool) if isinstance(maps, np.ndarray) else [np.zeros(m.shape, bool) for m in maps]
    for i, sample in enumerate(dataset.samples):
        if sample.mask_path:
            masks[i] = np.asarray(open_mask(sample.mask_path, image_size(sample.path))) > MASK_LEVEL
    return masks


def test_metrics(detector, config, dataset):
    """``(metrics, notes, maps, scores, masks)`` on a test dataset at the original resolution."""
    maps, scores = test_maps(detector, config, dataset)
    names = [s.path for s in dataset.samples]
    if not dataset.has_masks:
        result = compute_metrics(dataset.labels, scores, None, None, protocols=tuple(PROTOCOLS), names=names)
        masks = None
    elif not isinstance(maps, np.ndarray):
        result = compute_metrics(dataset.labels, scores, None, None, protocols=("image_auroc",), names=names)
        for name in ("pixel_auroc", "au_pro"):
            result[name] = None
            result["notes"][name] = "not computed: the test images have different sizes"
        masks = None
    else:
        masks = full_size_masks(dataset, maps)
        result = compute_metrics(dataset.labels, scores, masks, maps, protocols=tuple(PROTOCOLS), names=names)
    notes = result.pop("notes")
    metrics = {name: result[name] for name in PROTOCOLS}
    return metrics, notes, maps, scores, masks


def penalty_label(config):
    """Whether the model was trained with the ImageNet penalty: "on (FOLDER)", "off" or what a converter recorded."""
    if config.penalty_dir in NO_PENALTY:
        return "off"
    return config.penalty_dir if config.penalty_dir.startswith("unknown") else f"on ({config.penalty_dir})"


def evaluate(detector, config, thresholds, cls, data_dir, output_dir, pictures_dir=None):
    """Evaluate on the test set of ``cls``, write ``OUTPUT_DIR/results/EfficientAD_CLASS.json``, return the
    metrics."""
    start = time.time()
    dataset = test_dataset(config, data_dir, cls)
    metrics, notes, maps, scores, masks = test_metrics(detector, config, dataset)
    if pictures_dir:
        save_test_pictures(dataset, maps, scores, thresholds, pictures_dir, masks=masks)
    write_results(results_dir(output_dir), config.method_name, cls, metrics, PROTOCOLS,
                  dict(to_dict(config), model=config.model_label, penalty=penalty_label(config)),
                  seconds=time.time() - start,
                  threshold=summary(thresholds), notes=notes_list(notes))
    return metrics



