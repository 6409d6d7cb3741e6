"""Evaluation of one KDAD class: the official MKD metrics and the standard MVTec ones on the same maps (the shared
:func:`common.evaluation.evaluate.evaluate` writes them to the results JSON).

One pass over the test set gives each image its detection score (pool3..pool5 loss, grad-free eval mode) and its
saliency map (``config.localization``: vanilla gradients, SmoothGrad or guided backprop; grayscale p99 clip,
min-max where the official method does it, Gaussian sigma 4). Then:

- ``kdad_detection_auroc``: official ``detection_test`` (defects positive, rounded to 4 decimals), all test images;
- ``kdad_localization_auroc``: official ``compute_localization_auc`` on the defective images only, soft masks,
  3x3-cross opening, 1000 fixed thresholds;
- ``image_auroc``, ``pixel_auroc``, ``au_pro``: the standard protocols (common.evaluation) on all test images,
  masks binarised at 0.5.

On the one-class sets (``--dataset cifar10|mnist|fashionmnist|retina``) only the detection score is computed, as
the official ``test.py`` with ``localization_test: False``: ``kdad_detection_auroc`` and ``image_auroc`` (the same
ranking, unrounded); the pixel metrics and ``kdad_localization_auroc`` are None with a note (no masks).
"""
import numpy as np

from common.data.readers import dataset_format
from common.evaluation.collect import collect, collect_scores
from common.evaluation.evaluate import STANDARD_PROTOCOLS, TestResult, standard_metrics

from .data import soft_masks
from .metric import kdad_detection_auroc, kdad_localization_auroc

PROTOCOLS = {
    "image_auroc": STANDARD_PROTOCOLS["image_auroc"] + " (the MKD detection score: pool3..pool5 loss)",
    "pixel_auroc": STANDARD_PROTOCOLS["pixel_auroc"] + " on the saliency maps at the network input size; masks "
                                                       "bilinear-resized and binarised at 0.5",
    "au_pro": STANDARD_PROTOCOLS["au_pro"],
    "kdad_detection_auroc": "MKD test_functions.detection_test: sklearn auc(roc_curve(labels, scores, pos_label=0))"
                            " with good = 1, rounded to 4 decimals, all test images",
    "kdad_localization_auroc": "MKD compute_localization_auc: defective test images only, soft masks (RGB mean of "
                               "the bilinear-resized mask), 3x3-cross opening, thresholds 0.000..0.999, pooled "
                               "TPR/FPR, trapezoid AUC",
}


def test_maps(detector, config, dataset):
    """Saliency maps (N, S, S) float32 and detection scores (N,) over ``dataset`` (gradients enabled inside)."""
    detector.eval()

    def run_batch(images):
        maps, scores = detector(images)
        return maps.numpy()[:, 0], scores.numpy()

    return collect(run_batch, dataset, config.eval_batch_size, config.num_workers, "evaluate")


def test_scores(detector, config, dataset):
    """Detection scores (N,) over ``dataset`` without saliency maps (no input gradients): the official
    ``detection_test`` pass, used on the one-class sets."""
    detector.eval()
    return collect_scores(lambda images: detector.scores(images).numpy(), dataset, config.eval_batch_size,
                          config.num_workers, "evaluate")


def score_only(config):
    """True on the one-class novelty sets (CIFAR-10, MNIST, Fashion-MNIST, Retinal-OCT): they have no masks and the
    official code runs only ``detection_test`` on them, so no saliency map is computed."""
    return dataset_format(config.dataset).kind == "one_class"


def test_metrics(detector, config, dataset):
    """The official MKD metrics and the standard ones on the same maps: a :class:`TestResult` (maps None and the
    pixel metrics None with a note on the one-class sets, which are scored only)."""
    if score_only(config):
        scores = test_scores(detector, config, dataset)
        metrics, notes, _ = standard_metrics(dataset, scores, None, protocols=("image_auroc", "pixel_auroc",
                                                                                "au_pro"))
        metrics["kdad_detection_auroc"] = _detection_auroc(scores, dataset.labels, notes)
        metrics["kdad_localization_auroc"] = None
        notes["kdad_localization_auroc"] = "one-class set: no masks (the official code runs detection_test only)"
        return TestResult(metrics, notes, None, scores, None)
    maps, scores = test_maps(detector, config, dataset)
    metrics, notes, _ = standard_metrics(dataset, scores, maps, protocols=("image_auroc", "pixel_auroc", "au_pro"))
    labels = dataset.labels
    metrics["kdad_detection_auroc"] = _detection_auroc(scores, labels, notes)
    defective = np.flatnonzero(labels == 1)
    if dataset.has_masks and len(defective):
        gt = soft_masks([dataset.samples[i] for i in defective], maps.shape[-1])
        try:
            metrics["kdad_localization_auroc"] = kdad_localization_auroc(maps[defective], gt)
        except ValueError as exc:  # e.g. masks that cover every pixel or none
            metrics["kdad_localization_auroc"] = None
            notes["kdad_localization_auroc"] = str(exc)
    else:
        metrics["kdad_localization_auroc"] = None
        notes["kdad_localization_auroc"] = "needs defective test images with masks"
    return TestResult(metrics, notes, maps, scores, None)


def _detection_auroc(scores, labels, notes):
    if labels.min() != labels.max():
        return kdad_detection_auroc(scores, labels == 1)
    notes["kdad_detection_auroc"] = "needs good and defective test images"
    return None

