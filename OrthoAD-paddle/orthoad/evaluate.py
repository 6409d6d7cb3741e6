"""Evaluation of one OrthoAD / PaDiM class: the standard MVTec metrics and the official OrthoAD protocol on the
same maps (the shared :func:`common.evaluation.evaluate.evaluate` writes them to ``OrthoAD_CLASS.json`` or
``PaDiM_CLASS.json``)."""
from common.evaluation.collect import collect
from common.evaluation.evaluate import STANDARD_PROTOCOLS, TestResult, standard_metrics

from . import metric as orthoad_metric

PROTOCOLS = dict(STANDARD_PROTOCOLS, **orthoad_metric.PROTOCOLS)


def test_maps(detector, config, dataset):
    """Maps (N, S, S) and image scores (N,) of the exported pipeline (the same in dygraph and Paddle Inference)."""
    detector.eval()

    def run_batch(images):
        maps, scores = detector(images)
        return maps.numpy()[:, 0], scores.numpy()

    return collect(run_batch, dataset, config.eval_batch_size, config.num_workers, "evaluate")


def test_metrics(detector, config, dataset):
    """The standard metrics and the official OrthoAD protocol on the same maps: a :class:`TestResult`."""
    maps, scores = test_maps(detector, config, dataset)
    metrics, notes, masks = standard_metrics(dataset, scores, maps)
    metrics.update(orthoad_metric.evaluate_official(dataset.labels, scores, masks, maps))
    return TestResult(metrics, notes, maps, scores, masks)
