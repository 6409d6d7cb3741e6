"""Evaluation of one OrthoAD / PaDiM class: the standard MVTec metrics and the official OrthoAD protocol on the
same maps -> results JSON (``OrthoAD_CLASS.json`` or ``PaDiM_CLASS.json``)."""
import time

from common import metrics as common_metrics
from common.config import to_dict
from common.evaluation import (STANDARD_PROTOCOLS, collect, notes_list, results_dir, save_test_pictures,
                               standard_metrics)
from common.results import write_results
from common.thresholds import summary

from . import metric as orthoad_metric
from .data import test_dataset

PROTOCOLS = dict(STANDARD_PROTOCOLS, **orthoad_metric.PROTOCOLS)


def test_maps(detector, config, dataset):
    """Maps (N, S, S) and image scores (N,) of the exported pipeline (the same in dygraph and Paddle Inference)."""
    detector.eval()

    def run_batch(images):
        maps, scores = detector(images)
        return maps.numpy()[:, 0], scores.numpy()

    return collect(run_batch, dataset, config.eval_batch_size, config.num_workers, "evaluate")


def evaluate(detector, config, thresholds, cls, data_dir, output_dir, pictures_dir=None):
    """Evaluate on the test set of ``cls``, write the results JSON, return the metrics."""
    start = time.time()
    dataset = test_dataset(config, data_dir, cls)
    maps, scores = test_maps(detector, config, dataset)
    metrics, notes, masks = standard_metrics(dataset, scores, maps)
    metrics.update(orthoad_metric.evaluate_official(dataset.labels, scores, masks, maps))
    protocols = dict(PROTOCOLS)
    if thresholds:
        prf = common_metrics.precision_recall_f1(dataset.labels, scores, thresholds["image_threshold"])
        metrics["image_f1_at_threshold"] = prf["f1"]
        protocols["image_f1_at_threshold"] = "F1 of score >= the calibrated image threshold (thresholds.json)"
        if not thresholds.get("held_out", True):
            notes["image_f1_at_threshold"] = "threshold calibrated on images also used for fitting"
    if pictures_dir:
        save_test_pictures(dataset, maps, scores, thresholds, pictures_dir)
    write_results(results_dir(output_dir), config.method_name, cls, metrics, protocols, to_dict(config),
                  seconds=time.time() - start, threshold=summary(thresholds), notes=notes_list(notes))
    return metrics
