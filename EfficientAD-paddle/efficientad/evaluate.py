"""Evaluation of one EfficientAD class as nelson1425 reports it: maps at each test image's ORIGINAL resolution.

The reference (``efficientad.py::test``) pads the normalised 56x56 map by 4, bilinearly resizes it
(``align_corners=False``) to the image's own height and width, and scores the image with the map's maximum; its
numbers come from the official MVTec AD evaluation code on those full-size maps (``classification_au_roc``,
``au_pro`` to FPR 0.3). Here: the same maps, the masks read at full size (``> 127``), ``image_auroc`` and the
official ``au_pro`` (``common.metrics``), and ``pixel_auroc`` as an extra (the reference computes none).
"""
import numpy as np
from tqdm import tqdm

from common.core.config import to_dict
from common.data.loader import Loader
from common.data.samples import open_sample_mask, sample_size
from common.evaluation.evaluate import STANDARD_PROTOCOLS, TestResult
from common.metrics import evaluate as compute_metrics

from .data import NO_PENALTY
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
    sizes = [sample_size(s) for s in dataset.samples]          # (width, height)
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
        if sample.mask_paths:
            masks[i] = np.asarray(open_sample_mask(sample, sample_size(sample))) > MASK_LEVEL
    return masks


def test_metrics(detector, config, dataset):
    """The metrics at the original resolution: a :class:`TestResult` (masks at the maps' sizes, for pictures)."""
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
    return TestResult(metrics, notes, maps, scores, masks)


def penalty_label(config):
    """Whether the model was trained with the ImageNet penalty: "on (FOLDER)", "off" or what a converter recorded."""
    if config.penalty_dir in NO_PENALTY:
        return "off"
    return config.penalty_dir if config.penalty_dir.startswith("unknown") else f"on ({config.penalty_dir})"



def results_config(config):
    """What the results JSON records of the model: its configuration, the model label and the penalty."""
    return dict(to_dict(config), model=config.model_label, penalty=penalty_label(config))
