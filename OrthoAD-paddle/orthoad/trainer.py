"""Fitting of one OrthoAD / PaDiM class: stream the fit images through the embedding, accumulate the per-position
Gaussian, invert it, save, calibrate the thresholds on the held-out images.

There is no gradient training: the "training objective" is the Gaussian fit of :mod:`orthoad.loss`.
"""
import os
import time

import numpy as np
from tqdm import tqdm

from common.core.errors import UserError
from common.core.files import remove_temporaries
from common.data.loader import Loader
from common.evaluation.collect import collect
from common.evaluation.thresholds import calibration_record, write_thresholds
from common.training.frozen import FrozenForward
from common.training.state import AUTO, summary, thresholds_saved

from . import checkpoint
from .data import dataset, training_split
from .detector import OrthoADDetector
from .loss import StreamingGaussian
from .model import EMBEDDING_CHANNELS, MahalanobisScorer, load_projection, make_projection

# options that change how a fit runs, not what it produces
RUNTIME_OPTIONS = ("batch_size", "eval_batch_size", "num_workers", "backbone_weights")


def projection_for(config):
    """W of the run: from ``config.projection`` (a .npy file) or drawn from the seed."""
    channels = EMBEDDING_CHANNELS[config.backbone]
    if config.projection:
        return load_projection(config.projection, channels, config.k)
    return make_projection(config.method, channels, config.k, config.seed)


def embedding_forward(embedder):
    """The frozen ``embedder`` as a Paddle Inference predictor with oneDNN (dygraph on a GPU)."""
    return FrozenForward(embedder, (3, *embedder.input_shape))


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
    """Fit ``cls``, save the model and its thresholds in ``OUTPUT_DIR/CLASS``; returns
    :func:`common.training.state.summary` (``final_loss`` None: a fit has no loss).

    A fit is one pass with no intermediate state, so there is nothing to continue: ``--resume`` reports a class
    whose model and thresholds exist (fitted with these options) as done and leaves it, and fits the others from the
    start with one line saying so; ``--resume STATE`` is refused in one line.
    """
    start = time.time()
    class_dir = os.path.join(output_dir, cls)
    remove_temporaries(class_dir)  # what a fit killed in the middle of a save left behind
    if resume not in (None, AUTO):
        raise UserError(f"--resume {resume}: {config.method_name}'s fit is one pass with no training state to "
                        "continue; use --resume without a path (finished classes are kept, the others refitted)")
    if resume == AUTO:
        if _fitted_with(class_dir, config) and thresholds_saved(class_dir):
            path = os.path.join(class_dir, checkpoint.MODEL_FILE)
            print(f"[{cls}] already fitted ({path}): the model and its thresholds are left as they are")
            return summary(path, None, 0.0, status="done")
        print(f"[{cls}] --resume: a fit has no intermediate state; fitting {cls} from the start")
    fit_samples, calibration_samples = training_split(config, data_dir, cls)
    held_out = not {s.path for s in fit_samples} & {s.path for s in calibration_samples}
    projection = projection_for(config)
    embedder = checkpoint.build_embedder(config, projection)
    loader = Loader(dataset(fit_samples, config), config.batch_size, num_workers=config.num_workers)
    forward = embedding_forward(embedder)  # for the fit and the calibration
    mean, factor, count = fit_statistics(embedder, loader, config.positions, config.eps, config.unbiased,
                                         config.stats_dtype, desc=f"[{cls}] fit", forward=forward)
    # the detector takes the fitted factor without a copy (1.5 GB for WRN50 k=300)
    detector = OrthoADDetector(embedder, MahalanobisScorer(mean, factor, config.grid), config.input_shape,
                               config.sigma)
    del factor
    detector.eval()
    path = checkpoint.save(class_dir, detector, config,
                           {"num_fit_images": count, "num_held_out": len(calibration_samples),
                            "fit_seconds": round(time.time() - start, 3)})
    thresholds = calibrate(detector, calibration_samples, config, held_out, forward)
    write_thresholds(class_dir, thresholds)
    print(f"[{cls}] {config.method_name} fitted on {count} images in {time.time() - start:.1f} s; image threshold "
          f"{thresholds['image_threshold']:.4f} ({thresholds['source']})")
    return summary(path, None, time.time() - start)


def _fitted_with(class_dir, config):
    """True when ``class_dir`` holds a model fitted with the options of ``config`` (a model fitted with other
    options is refused, as a training state of other options is)."""
    from common.core.config import to_dict

    if not checkpoint.exists(class_dir):
        return False
    saved, _ = checkpoint.read_model_file(class_dir)
    changed = [f"{k} {v!r} -> {getattr(config, k)!r}" for k, v in to_dict(saved).items()
               if k not in RUNTIME_OPTIONS and v != getattr(config, k)]
    if changed:
        raise UserError(f"--resume: {class_dir} was fitted with other options ({'; '.join(changed)})")
    return True


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
