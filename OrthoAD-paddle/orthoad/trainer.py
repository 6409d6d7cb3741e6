"""Fit, save, load, score and evaluate one class; the steps behind train.py, eval.py, predict.py and main.py.

Files of a class (``OUTPUT_DIR/CLASS/``):

- ``projection.npy`` W (c, k), ``mean.npy`` (P, k), ``precision_factor.npy`` A (P, k, k) with precision AᵀA
  (float32, P = H·W positions row-major);
- ``model.json``: everything needed to rebuild the model (backbone, method, k, grid, preprocessing, estimator);
- ``thresholds.json``: image and pixel thresholds calibrated on the held-out normal training images.

``OUTPUT_DIR/results/METHOD_CLASS.json`` holds the metrics (``common.results.write_results``).
"""
import json
import os
import time

import numpy as np
import paddle
from tqdm import tqdm

from common import metrics as common_metrics
from common.errors import UserError
from common.mvtec import MVTecDataset, test_samples, train_samples
from common.results import atomic_write_json, write_results
from common.splits import orthoad_split
from common.transforms import Preprocess

from . import metric as orthoad_metric
from .gaussian import StreamingGaussian
from .model import MahalanobisScorer, OrthoAD, ProjectedEmbedding
from .projection import canonical_method
from .storage import NpyRows, save_array

PROJECTION_FILE, MEAN_FILE, FACTOR_FILE = "projection.npy", "mean.npy", "precision_factor.npy"
CONFIG_FILE, THRESHOLDS_FILE = "model.json", "thresholds.json"
FEATURE_STRIDE = 4  # layer1 of a ResNet
METHOD_NAMES = {"ortho": "OrthoAD", "padim": "PaDiM", "gaussian": "OrthoAD-gaussian"}
STANDARD_PROTOCOLS = {
    "image_auroc": "sklearn roc_auc_score of image scores (max of the smoothed map)",
    "pixel_auroc": "sklearn roc_auc_score over all test pixels pooled",
    "au_pro": "MVTec AD official AU-PRO up to FPR 0.3, normalised (common.metrics.au_pro)",
}


def result_method_name(method):
    """Name used in results files: OrthoAD, PaDiM or OrthoAD-gaussian."""
    return METHOD_NAMES[canonical_method(method)]


def make_preprocess(pipeline="official", mask_threshold=None, image_size=256):
    """``official``: PIL pre-resize 320, resize 256, crop 256, masks > 0.5995; ``simple``: resize 256, > 0.5."""
    if pipeline == "official":
        threshold = 0.5995 if mask_threshold is None else mask_threshold
        return Preprocess(resize=image_size, crop=image_size, pre_resize=round(image_size * 1.25), keep_aspect=True,
                          mask_threshold=threshold)
    if pipeline == "simple":
        return Preprocess(resize=image_size, mask_threshold=0.5 if mask_threshold is None else mask_threshold)
    raise UserError(f"--pipeline must be 'official' or 'simple', got '{pipeline}'")


def preprocess_from_dict(values):
    return Preprocess(**values)


def _loader(dataset, batch_size, num_workers=0):
    return paddle.io.DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                                num_workers=num_workers)


def build_embedder(arch, projection, image_size, backbone_weights, seed):
    """Backbone + projection; random backbone weights are drawn from ``seed`` so fit and eval share them."""
    paddle.seed(seed)
    return ProjectedEmbedding(arch, projection, image_size, weights=backbone_weights)


def fit_split(samples, train_split):
    """``official``: the 90 % fit split (held-out = sorted index % 10 == 0); ``all``: every image."""
    fit, held_out = orthoad_split(samples)
    if train_split == "all":
        return list(samples), held_out
    if train_split != "official":
        raise UserError(f"--train_split must be 'official' or 'all', got '{train_split}'")
    if not fit:
        raise UserError(f"the official 90 % split of {len(samples)} training image(s) is empty; "
                        "use --train_split all")
    return fit, held_out


def fit_statistics(embedder, loader, positions, eps=0.01, unbiased=False, stats_dtype="auto", desc="fit"):
    """Stream the training batches through ``embedder``; returns ``(mean, factor, count)``."""
    stats = StreamingGaussian(positions, embedder.k, dtype=stats_dtype)
    with paddle.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False):
            stats.update(embedder(batch[0]).numpy())
    count = stats.count
    mean, factor = stats.finalize(eps=eps, unbiased=unbiased)
    return mean, factor, count


def fit_class(cls, config, projection, progress=True):
    """Fit the Gaussian of one class, calibrate thresholds on the held-out split, save; returns the class folder."""
    start = time.time()
    preprocess = preprocess_from_dict(config["preprocess"])
    fit_samples, held_out = fit_split(train_samples(config["data_dir"], cls), config["train_split"])
    embedder = build_embedder(config["arch"], projection, preprocess.output_size, config["backbone_weights"],
                              config["seed"])
    loader = _loader(MVTecDataset(fit_samples, preprocess), config["batch_size"], config["num_workers"])
    mean, factor, count = fit_statistics(embedder, loader, config["grid"] ** 2, config["eps"],
                                         config["unbiased"], config["stats_dtype"], desc=f"[{cls}] fit")
    folder = os.path.join(config["output_dir"], cls)
    model_config = dict(config, cls=cls, num_fit_images=count, num_held_out=len(held_out),
                        fit_seconds=round(time.time() - start, 3))
    model_config.pop("output_dir")
    save_array(os.path.join(folder, PROJECTION_FILE), projection)
    save_array(os.path.join(folder, MEAN_FILE), mean)
    save_array(os.path.join(folder, FACTOR_FILE), factor)
    atomic_write_json(os.path.join(folder, CONFIG_FILE), model_config)
    del factor  # read back in chunks: the (P, k, k) factor never exists twice in memory
    scorer = MahalanobisScorer(mean, NpyRows(os.path.join(folder, FACTOR_FILE)), (config["grid"],) * 2)
    model = OrthoAD(embedder, scorer, preprocess.output_size, config["sigma"])
    model.eval()
    thresholds = calibrate(model, held_out, preprocess, config, leaky=config["train_split"] == "all")
    atomic_write_json(os.path.join(folder, THRESHOLDS_FILE), thresholds)
    if progress:
        print(f"[{cls}] fitted on {count} images in {time.time() - start:.1f} s; image threshold "
              f"{thresholds['image_threshold']:.4f} from {thresholds['num_normal_images']} held-out images")
    return model


def calibrate(model, held_out, preprocess, config, leaky=False):
    """Image/pixel thresholds = 99th percentiles of the held-out normal images' scores and map pixels."""
    if not held_out:
        raise UserError("no held-out training image to calibrate the thresholds on")
    maps, scores = predict_maps(model, MVTecDataset(held_out, preprocess), config["batch_size"], desc="calibrate")
    thresholds = common_metrics.calibrate_thresholds(scores, maps)
    thresholds["held_out_used_in_fit"] = bool(leaky)
    thresholds["held_out"] = [os.path.basename(s.path) for s in held_out]
    return thresholds


def predict_maps(model, dataset, batch_size, desc="score"):
    """Anomaly maps (N, S, S) float32 and scores (N,) for a dataset whose items start with the image."""
    maps, scores = [], []
    with paddle.no_grad():
        for batch in tqdm(_loader(dataset, batch_size), desc=desc, leave=False):
            amap, score = model(batch[0])
            maps.append(amap.numpy()[:, 0])
            scores.append(score.numpy())
    return np.concatenate(maps), np.concatenate(scores)


def load_model(folder, backbone_weights=None):
    """Rebuild the fitted :class:`OrthoAD` of a class folder; returns ``(model, config, thresholds)``."""
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise UserError(f"no fitted model in {folder} (missing {CONFIG_FILE}); run train.py first")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    projection = NpyRows(os.path.join(folder, PROJECTION_FILE)).read()
    mean = NpyRows(os.path.join(folder, MEAN_FILE)).read()
    weights = backbone_weights or config["backbone_weights"]
    image_size = preprocess_from_dict(config["preprocess"]).output_size
    embedder = build_embedder(config["arch"], projection, image_size, weights, config["seed"])
    scorer = MahalanobisScorer(mean, NpyRows(os.path.join(folder, FACTOR_FILE)), (config["grid"],) * 2)
    model = OrthoAD(embedder, scorer, image_size, config["sigma"])
    model.eval()
    thresholds_path = os.path.join(folder, THRESHOLDS_FILE)
    thresholds = None
    if os.path.isfile(thresholds_path):
        with open(thresholds_path, encoding="utf-8") as handle:
            thresholds = json.load(handle)
    return model, config, thresholds


def compute_metrics(labels, scores, masks, maps, with_pixels):
    """Standard metrics and the official OrthoAD protocols on the same maps: ``(metrics, protocols)``."""
    metrics = {"image_auroc": common_metrics.image_auroc(labels, scores)}
    official = orthoad_metric.evaluate_official(labels, scores, masks if with_pixels else None, maps)
    if with_pixels:
        metrics["pixel_auroc"] = common_metrics.pixel_auroc(masks, maps)
        metrics["au_pro"] = common_metrics.au_pro(masks, maps)
    else:
        metrics["pixel_auroc"] = metrics["au_pro"] = None
    metrics.update(official)
    protocols = dict(STANDARD_PROTOCOLS, **orthoad_metric.PROTOCOLS)
    return metrics, protocols


def evaluate_class(cls, output_dir, data_dir, model=None, config=None, thresholds=None, batch_size=None,
                   backbone_weights=None):
    """Score the test set of ``cls`` and write ``OUTPUT_DIR/results/METHOD_CLASS.json``; returns the metrics."""
    start = time.time()
    folder = os.path.join(output_dir, cls)
    if model is None:
        model, config, thresholds = load_model(folder, backbone_weights)
    preprocess = preprocess_from_dict(config["preprocess"])
    dataset = MVTecDataset(test_samples(data_dir, cls), preprocess)
    maps, scores = predict_maps(model, dataset, batch_size or config["batch_size"], desc=f"[{cls}] eval")
    with_pixels = dataset.has_masks
    masks = dataset.masks() if with_pixels else None
    metrics, protocols = compute_metrics(dataset.labels, scores, masks, maps, with_pixels)
    notes = []
    if thresholds:
        prf = common_metrics.precision_recall_f1(dataset.labels, scores, thresholds["image_threshold"])
        metrics["image_f1_at_threshold"] = prf["f1"]
        protocols["image_f1_at_threshold"] = ("F1 of score >= the image threshold calibrated on the held-out "
                                              "normal training images (99th percentile)")
        if thresholds.get("held_out_used_in_fit"):
            notes.append("threshold calibrated on images that were also used for fitting (--train_split all)")
    if not with_pixels:
        notes.append("no ground-truth masks: pixel metrics not available")
    run_config = {key: config[key] for key in ("arch", "method", "k", "seed", "eps", "unbiased", "train_split",
                                               "pipeline", "num_fit_images") if key in config}
    run_config.update(backbone=config["arch"], backbone_weights=config["backbone_weights"],
                      image_size=preprocess.output_size,
                      mask_threshold=preprocess.mask_threshold)
    write_results(os.path.join(output_dir, "results"), result_method_name(config["method"]), cls, metrics,
                  protocols, run_config, seconds=time.time() - start, threshold=thresholds, notes=notes)
    return metrics
