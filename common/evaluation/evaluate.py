"""One evaluation for every method: the test set through the method's own metric step, the F1 at the calibrated
threshold, the pictures and the results JSON.

A method's ``evaluate`` module gives ``PROTOCOLS`` (metric name -> the protocol it follows) and ``test_metrics(
detector, config, dataset) -> TestResult``; its ``data`` module gives ``test_dataset(config, data_dir, cls)``. The
standard MVTec metrics (``image_auroc``, ``pixel_auroc``, ``au_pro``: the official AU-PRO) are computed by
:func:`standard_metrics` the same way for every method; a method adds its paper's own protocol under its own names.
"""
import collections
import os
import time

from common import metrics as common_metrics
from common.core.config import to_dict

from . import loco
from .pictures import save_test_pictures
from .results import write_results
from .thresholds import summary

STANDARD_PROTOCOLS = {
    "image_auroc": "sklearn roc_auc_score of the image scores",
    "pixel_auroc": "sklearn roc_auc_score over every test pixel, pooled over images",
    "au_pro": "official MVTec AD AU-PRO: PRO curve over the whole test set up to FPR 0.3, normalised by 0.3",
}
F1_PROTOCOL = "F1 of score >= the calibrated image threshold (thresholds.json)"

# What a method's test_metrics returns: metric name -> value (None when not defined), metric name -> why it is
# None, the maps (N, S, S) and scores (N,) they were computed on (maps None: a score-only evaluation), and the
# ground-truth masks at the maps' size
# (None: the dataset's own at the network size, or no masks)
TestResult = collections.namedtuple("TestResult", "metrics notes maps scores masks")


def evaluate(method, detector, config, thresholds, cls, data_dir, output_dir, pictures_dir=None, save_maps=None,
             maps_dir=None):
    """Evaluate ``detector`` on the test set of ``cls`` in ``config.dataset``; writes the results JSON
    (``OUTPUT_DIR/results/METHOD_CLASS.json``, ``METHOD_DATASET_CLASS.json`` for datasets other than MVTec AD) and
    returns the metrics.

    On MVTec LOCO AD the evaluator's figures (AU-sPRO per subset and limit, image AUROC per subset) are added for
    every method (:mod:`common.evaluation.loco`). ``save_maps="tiff"`` writes every test map at its image's size
    to ``maps_dir`` (default ``OUTPUT_DIR/anomaly_maps``) in the layout of MVTec's LOCO evaluator."""
    start = time.time()
    dataset = method.data.test_dataset(config, data_dir, cls)
    result = method.evaluate.test_metrics(detector, config, dataset)
    metrics, notes, protocols = dict(result.metrics), dict(result.notes), dict(method.evaluate.PROTOCOLS)
    if thresholds:
        prf = common_metrics.precision_recall_f1(dataset.labels, result.scores, thresholds["image_threshold"])
        metrics["image_f1_at_threshold"] = prf["f1"]
        protocols["image_f1_at_threshold"] = F1_PROTOCOL
        if not thresholds.get("held_out", True):
            notes["image_f1_at_threshold"] = "threshold calibrated on images also used for training"
    if getattr(config, "dataset", None) == loco.DATASET:
        loco_values, loco_protocols = loco.loco_metrics(dataset, result.maps)
        metrics.update(loco_values)
        protocols.update(loco_protocols)
    if save_maps:
        loco.save_maps(dataset, result.maps, maps_dir or os.path.join(output_dir, "anomaly_maps"), cls, save_maps)
    if pictures_dir and result.maps is not None:  # score-only sets (one-class novelty) have no maps to draw
        save_test_pictures(dataset, result.maps, result.scores, thresholds, pictures_dir, masks=result.masks)
    describe = getattr(method.evaluate, "results_config", None)  # optional: facts beyond the config
    write_results(results_dir(output_dir), config.method_name, cls, metrics, protocols,
                  describe(config) if describe else to_dict(config), seconds=time.time() - start,
                  threshold=summary(thresholds), notes=notes_list(notes), dataset=config.dataset)
    return metrics


def standard_metrics(dataset, scores, maps, protocols=("image_auroc", "pixel_auroc", "au_pro")):
    """``(metrics, notes, masks)``: the requested ``common.metrics`` protocols on a test dataset (pixel metrics
    None with a note when the dataset has no masks); ``masks`` is returned for the method's own protocol."""
    masks = dataset.masks() if dataset.has_masks else None
    result = common_metrics.evaluate(dataset.labels, scores, masks, maps if masks is not None else None,
                                     protocols=tuple(protocols), names=[s.path for s in dataset.samples])
    notes = result.pop("notes")
    return result, notes, masks


def notes_list(notes):
    return [f"{name}: {text}" for name, text in notes.items()]


def results_dir(output_dir):
    return os.path.join(output_dir, "results")
