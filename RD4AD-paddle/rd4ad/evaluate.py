"""Evaluation of one RD4AD class as the official ``test.py``: the four metrics on the same maps (the shared
:func:`common.evaluation.evaluate.evaluate` writes them to the results JSON).

The map is the summed cosine map smoothed with SciPy's ``gaussian_filter`` in float64 (the official evaluation);
``image_auroc``, ``pixel_auroc`` and ``rd4ad_pro`` are the paper's protocol, ``au_pro`` the standard MVTec one.
"""
from sklearn.metrics import roc_auc_score

from common.data.readers import dataset_format
from common.evaluation.collect import collect
from common.evaluation.evaluate import STANDARD_PROTOCOLS, TestResult, standard_metrics
from common.networks.postprocess import gaussian_smooth

from .metric import rd4ad_pro

PROTOCOLS = {
    "image_auroc": STANDARD_PROTOCOLS["image_auroc"] + " (max of the sigma-4 smoothed summed cosine map), "
                                                       "as RD4AD test.py",
    "pixel_auroc": STANDARD_PROTOCOLS["pixel_auroc"] + " at the network input size; masks bilinear-resized and "
                                                       "binarised at 0.5, as RD4AD test.py",
    "au_pro": STANDARD_PROTOCOLS["au_pro"],
    "image_auroc_sum": "one-class sets only: sklearn roc_auc_score of the sum of the smoothed map (the second "
                       "value of RD4AD test.py detection, named 'mean' there)",
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
    """The paper's metrics and the standard ones on the same maps: a :class:`TestResult`. On the one-class sets
    also ``image_auroc_sum``: the second score of the official ``test.py::detection`` (the map's sum)."""
    maps, scores = test_maps(detector, config, dataset)
    metrics, notes, masks = standard_metrics(dataset, scores, maps)
    if dataset_format(config.dataset).kind == "one_class":
        labels = dataset.labels
        sums = maps.reshape(len(maps), -1).sum(axis=1)
        metrics["image_auroc_sum"] = float(roc_auc_score(labels, sums)) if labels.min() != labels.max() else None
        if metrics["image_auroc_sum"] is None:
            notes["image_auroc_sum"] = "needs images of the normal class and of other classes"
    if masks is None:
        metrics["rd4ad_pro"], notes["rd4ad_pro"] = None, "not available: no ground-truth masks"
    else:
        metrics["rd4ad_pro"] = rd4ad_pro(masks, maps, names=[s.path for s in dataset.samples])
        if metrics["rd4ad_pro"] is None:
            notes["rd4ad_pro"] = "not defined: no image has both defect and normal pixels"
    return TestResult(metrics, notes, maps, scores, masks)
