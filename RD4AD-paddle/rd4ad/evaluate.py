"""Evaluation of one RD4AD class as the official ``test.py``: the four metrics on the same maps -> results JSON.

The map is the summed cosine map smoothed with SciPy's ``gaussian_filter`` in float64 (the official evaluation);
``image_auroc``, ``pixel_auroc`` and ``rd4ad_pro`` are the paper's protocol, ``au_pro`` the standard MVTec one.
"""
import time

from common.config import to_dict
from common.evaluation import (STANDARD_PROTOCOLS, collect, notes_list, results_dir, save_test_pictures,
                               standard_metrics)
from common.postprocess import gaussian_smooth
from common.results import write_results
from common.thresholds import summary

from .data import test_dataset

PROTOCOLS = {
    "image_auroc": STANDARD_PROTOCOLS["image_auroc"] + " (max of the sigma-4 smoothed summed cosine map), "
                                                       "as RD4AD test.py",
    "pixel_auroc": STANDARD_PROTOCOLS["pixel_auroc"] + " at the network input size; masks bilinear-resized and "
                                                       "binarised at 0.5, as RD4AD test.py",
    "au_pro": STANDARD_PROTOCOLS["au_pro"],
    "rd4ad_pro": "RD4AD test.py compute_pro: per anomalous image, 200 thresholds over that image's map, "
                 "FPR < 0.3 rescaled by the largest kept FPR, AUC, averaged over images (the paper's PRO)",
}


def test_maps(detector, config, dataset):
    """Smoothed maps (N, S, S) float64 and image scores (N,), as the official evaluation computes them."""
    detector.eval()

    def run_batch(images):
        maps = gaussian_smooth(detector.raw_map(images)[:, 0].numpy(), sigma=detector.sigma)
        return maps, maps.reshape(len(maps), -1).max(axis=1)

    return collect(run_batch, dataset, config.eval_batch_size, config.num_workers, "evaluate")


def test_metrics(detector, config, dataset):
    """``(metrics, notes, maps, scores)`` on a test dataset."""
    maps, scores = test_maps(detector, config, dataset)
    metrics, notes, _ = standard_metrics(dataset, scores, maps, protocols=tuple(PROTOCOLS))
    return metrics, notes, maps, scores


def evaluate(detector, config, thresholds, cls, data_dir, output_dir, pictures_dir=None):
    """Evaluate on the test set of ``cls``, write ``OUTPUT_DIR/results/RD4AD_CLASS.json``, return the metrics."""
    start = time.time()
    dataset = test_dataset(config, data_dir, cls)
    metrics, notes, maps, scores = test_metrics(detector, config, dataset)
    if pictures_dir:
        save_test_pictures(dataset, maps, scores, thresholds, pictures_dir)
    write_results(results_dir(output_dir), config.method_name, cls, metrics, PROTOCOLS, to_dict(config),
                  seconds=time.time() - start, threshold=summary(thresholds), notes=notes_list(notes))
    return metrics
