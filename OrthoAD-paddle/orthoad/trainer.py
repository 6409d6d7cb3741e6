"""Fitting of one OrthoAD / PaDiM class: stream the fit images through the embedding, accumulate the per-position
Gaussian, invert it, save, calibrate the thresholds on the held-out images.

There is no gradient training: the "training objective" is the Gaussian fit of :mod:`orthoad.loss`.
"""
import os
import time

import numpy as np
import paddle
from tqdm import tqdm

from common.errors import UserError

from common.evaluation import collect
from common.loader import Loader
from common.thresholds import calibration_record, write_thresholds

from . import checkpoint
from .data import dataset, fit_split
from .detector import OrthoADDetector
from .loss import StreamingGaussian
from .model import EMBEDDING_CHANNELS, MahalanobisScorer, load_projection, make_projection


def projection_for(config):
    """W of the run: from ``config.projection`` (a .npy file) or drawn from the seed."""
    channels = EMBEDDING_CHANNELS[config.backbone]
    if config.projection:
        return load_projection(config.projection, channels, config.k)
    return make_projection(config.method, channels, config.k, config.seed)


def fit_statistics(embedder, loader, positions, eps=0.01, unbiased=False, stats_dtype="auto", desc="fit"):
    """Stream the batches of ``loader`` through ``embedder``; returns ``(mean, factor, count)``."""
    stats = StreamingGaussian(positions, embedder.k, dtype=stats_dtype)
    with paddle.no_grad():
        for step, batch in enumerate(tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None), 1):
            features = embedder(batch[0]).numpy()
            if not np.isfinite(features).all():  # the fit's "NaN loss": stop before it poisons the statistics
                raise UserError(f"fit stopped: the embedding holds nan or inf values at batch {step}; check "
                                "--backbone_weights and the input images")
            stats.update(features)
    count = stats.count
    mean, factor = stats.finalize(eps=eps, unbiased=unbiased)
    return mean, factor, count


def train(config, cls, data_dir, output_dir, resume=None):
    """Fit ``cls``, save the model and its thresholds in ``OUTPUT_DIR/CLASS``; returns a summary.

    ``resume`` is accepted for the shared contract: a fit is one pass without intermediate state, so a resumed fit
    starts again.
    """
    start = time.time()
    fit_samples, calibration_samples, held_out = fit_split(config, data_dir, cls)
    projection = projection_for(config)
    embedder = checkpoint.build_embedder(config, projection)
    loader = Loader(dataset(fit_samples, config), config.batch_size, num_workers=config.num_workers)
    mean, factor, count = fit_statistics(embedder, loader, config.grid ** 2, config.eps, config.unbiased,
                                         config.stats_dtype, desc=f"[{cls}] fit")
    class_dir = os.path.join(output_dir, cls)
    checkpoint.save(class_dir, config, projection, mean, factor,
                    {"num_fit_images": count, "num_held_out": len(calibration_samples),
                     "fit_seconds": round(time.time() - start, 3)})
    del factor  # read back in chunks: the (P, k, k) factor never exists twice in memory
    scorer = MahalanobisScorer(mean, checkpoint.NpyRows(os.path.join(class_dir, checkpoint.FACTOR_FILE)),
                               (config.grid,) * 2)
    detector = OrthoADDetector(embedder, scorer, config.image_size, config.sigma)
    detector.eval()
    thresholds = calibrate(detector, calibration_samples, config, held_out)
    write_thresholds(class_dir, thresholds)
    print(f"[{cls}] {config.method_name} fitted on {count} images in {time.time() - start:.1f} s; image threshold "
          f"{thresholds['image_threshold']:.4f} ({thresholds['source']})")
    return {"class_dir": class_dir, "num_fit_images": count, "seconds": time.time() - start}


def calibrate(detector, samples, config, held_out):
    """Image/pixel thresholds = quantiles of the held-out normal images' scores and map pixels."""
    if not samples:
        raise UserError("no held-out training image to calibrate the thresholds on")

    def run_batch(images):
        maps, scores = detector(images)
        return maps.numpy()[:, 0], scores.numpy()

    maps, scores = collect(run_batch, dataset(samples, config), config.eval_batch_size, config.num_workers,
                           "calibrate")
    return calibration_record(scores, maps, samples, held_out, config.image_quantile, config.pixel_quantile)
