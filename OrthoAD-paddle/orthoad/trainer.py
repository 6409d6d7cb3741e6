"""Fitting of one OrthoAD / PaDiM class: stream the fit images through the embedding, accumulate the per-position
Gaussian, invert it, save, calibrate the thresholds on the held-out images.

There is no gradient training: the "training objective" is the Gaussian fit of :mod:`orthoad.loss`.
"""
import os
import time

import numpy as np
from tqdm import tqdm

from common.errors import UserError
from common.evaluation import collect
from common.frozen import FrozenForward
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


def embedding_forward(embedder):
    """The frozen ``embedder`` as a Paddle Inference predictor with oneDNN (dygraph on a GPU)."""
    return FrozenForward(embedder, (3, embedder.image_size, embedder.image_size))


MERGE_IMAGES = 32  # features of this many images are merged into the statistics at once (157 MB for WRN50 k=300)


def fit_statistics(embedder, loader, positions, eps=0.01, unbiased=False, stats_dtype="auto", desc="fit",
                   forward=None):
    """Stream the batches of ``loader`` through ``embedder``; returns ``(mean, factor, count)``.

    The frozen embedder runs through Paddle Inference with oneDNN on the CPU (:func:`embedding_forward`, 2-4x
    faster than dygraph here; pass ``forward`` to reuse one). Features are merged into the statistics every
    :data:`MERGE_IMAGES` images rather than every batch: a merge reads and writes the whole (P, k, k) buffer
    whatever the number of images in it, so larger merges cost less per image (WRN50 k=300: 0.14 s per image in
    merges of 8, 0.05 s in merges of 32).
    """
    stats = StreamingGaussian(positions, embedder.k, dtype=stats_dtype)
    if forward is None:
        forward = embedding_forward(embedder)
    pending = []
    for step, batch in enumerate(tqdm(loader, desc=desc, leave=False, dynamic_ncols=True, disable=None), 1):
        features = forward(batch[0]).numpy()
        if not np.isfinite(features).all():  # the fit's "NaN loss": stop before it poisons the statistics
            raise UserError(f"fit stopped: the embedding holds nan or inf values at batch {step}; check "
                            "--backbone_weights and the input images")
        pending.append(features)
        if sum(len(f) for f in pending) >= MERGE_IMAGES:
            stats.update(np.concatenate(pending))
            pending = []
    if pending:
        stats.update(np.concatenate(pending))
    del forward, pending  # unless the caller keeps it, the predictor's copy of the backbone goes before finalising
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
    forward = embedding_forward(embedder)  # for the fit and the calibration
    mean, factor, count = fit_statistics(embedder, loader, config.grid ** 2, config.eps, config.unbiased,
                                         config.stats_dtype, desc=f"[{cls}] fit", forward=forward)
    class_dir = os.path.join(output_dir, cls)
    checkpoint.save(class_dir, config, projection, mean, factor,
                    {"num_fit_images": count, "num_held_out": len(calibration_samples),
                     "fit_seconds": round(time.time() - start, 3)})
    del factor  # read back in chunks: the (P, k, k) factor never exists twice in memory
    scorer = MahalanobisScorer(mean, checkpoint.NpyRows(os.path.join(class_dir, checkpoint.FACTOR_FILE)),
                               (config.grid,) * 2)
    detector = OrthoADDetector(embedder, scorer, config.image_size, config.sigma)
    detector.eval()
    thresholds = calibrate(detector, calibration_samples, config, held_out, forward)
    write_thresholds(class_dir, thresholds)
    print(f"[{cls}] {config.method_name} fitted on {count} images in {time.time() - start:.1f} s; image threshold "
          f"{thresholds['image_threshold']:.4f} ({thresholds['source']})")
    return {"class_dir": class_dir, "num_fit_images": count, "seconds": time.time() - start}


def calibrate(detector, samples, config, held_out, forward=None):
    """Image/pixel thresholds = quantiles of the held-out normal images' scores and map pixels.

    ``forward``: the fit's :func:`embedding_forward`, which then replaces the detector's dygraph embedding.
    """
    if not samples:
        raise UserError("no held-out training image to calibrate the thresholds on")

    def run_batch(images):
        if forward is None:
            maps, scores = detector(images)
        else:
            maps, scores = detector.postprocess(detector.scorer(forward(images)))
        return maps.numpy()[:, 0], scores.numpy()

    maps, scores = collect(run_batch, dataset(samples, config), config.eval_batch_size, config.num_workers,
                           "calibrate")
    return calibration_record(scores, maps, samples, held_out, config.image_quantile, config.pixel_quantile)
