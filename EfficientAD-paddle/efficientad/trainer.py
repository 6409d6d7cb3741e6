"""Training of EfficientAD for one class, as nelson1425 ``efficientad.py::main``.

1. 90/10 split of ``train/good`` (seed 42; or ``--val_list``); the teacher from ``teacher_weights`` (or distilled
   first, ``distill``; or random for tests); its channel mean/std over the training split (``teacher_normalization``);
2. ``train_steps`` iterations of :func:`train_step` at batch 1 over an endless shuffled stream of training images
   (each with its colour-jittered copy for the autoencoder) and, with ``--penalty_dir``, penalty images; Adam
   (student + autoencoder) lr 1e-4, weight decay 1e-5; StepLR x0.1 at ``int(0.95 * train_steps)``, stepped every
   iteration; the final weights are kept (no model selection);
3. q_a/q_b of the ST and AE maps over the validation split (``map_normalization``); mean, std and quantiles are
   buffers of the saved detector; thresholds for predict/infer from the same validation images (held out).

Files per class (``OUTPUT_DIR/CLASS/``): ``efficientad.pdparams``, ``train_state.pdparams`` (resumable: weights,
optimiser with the lr schedule, steps done, the loaders' generator states, Paddle's RNG state for the autoencoder's
dropout; written atomically every ``save_interval`` steps), ``thresholds.json``, ``train_log.jsonl`` (a line per
``print_steps``), and with ``teacher_weights distill`` ``teacher_distilled.pdparams``.
"""
import math
import os
import time

import paddle
from tqdm import tqdm

from common.core.errors import UserError
from common.data.loader import Loader
from common.networks.backbones import load_state_dict_strict
from common.training.frozen import FrozenForward
from common.training.log import TRAIN_LOG, TrainingLog
from common.training.loop import MONITORING_LABEL, TrainingDiverged
from common.training.onednn import onednn_convolutions
from common.training.optimizer import adam
from common.training.state import (
    TRAIN_STATE,
    finish_class,
    finished_class,
    is_finished,
    resume_point,
    save_state,
    thresholds_saved,
)

from . import checkpoint
from .checkpoint import pack_object, unpack_object
from .config import DISTILL_TEACHER, RANDOM_TEACHER
from .data import (
    PENALTY_GRAYSCALE,
    PenaltyItems,
    TrainingItems,
    dataset,
    grayscale_stream,
    jitter_stream,
    penalty_paths,
    training_split,
)
from .detector import map_normalization, teacher_normalization
from .loss import training_losses

DISTILLED_TEACHER = "teacher_distilled.pdparams"
# Options a resumed run must share with the state it continues.
RESUME_MUST_MATCH = ("dataset", "fold", "model_size", "out_channels", "width_divisor", "teacher_weights", "backbone",
                     "train_steps", "batch_size", "lr", "weight_decay", "lr_step_fraction", "lr_gamma",
                     "hard_quantile", "seed", "validation_fraction", "val_list", "penalty_dir")


def lr_schedule(config):
    """``StepLR(step_size=int(0.95 * train_steps), gamma=0.1)`` stepped per iteration (reference)."""
    step_size = max(1, int(config.lr_step_fraction * config.train_steps))
    return paddle.optimizer.lr.StepDecay(learning_rate=config.lr, step_size=step_size, gamma=config.lr_gamma)


def build_optimizer(detector, config):
    """``(Adam over student + autoencoder with coupled L2 weight decay, its StepLR)``."""
    scheduler = lr_schedule(config)
    optimizer = adam(detector.trainable_parameters(), scheduler, weight_decay=config.weight_decay)
    return optimizer, scheduler


def train_step(detector, optimizer, scheduler, image_st, image_ae, image_penalty=None, q=0.999, teacher=None):
    """One iteration of the reference loop: all loss terms, backward, Adam step, StepLR step; returns the terms.

    ``teacher``: what runs the frozen teacher (see :func:`efficientad.loss.training_losses`). The student's and
    the autoencoder's convolutions run on oneDNN (``common.training.onednn.onednn_convolutions``)."""
    with onednn_convolutions(detector):
        losses = training_losses(detector, image_st, image_ae, image_penalty, q, teacher)
        optimizer.clear_grad()
        losses.total.backward()
    optimizer.step()
    scheduler.step()
    return losses


def train(config, cls, data_dir, output_dir, resume=None):
    """Train on the good training images of ``cls``; returns ``{"checkpoint", "final_loss", "seconds"}``.

    ``resume``: None, ``"auto"`` (``OUTPUT_DIR/CLASS/train_state.pdparams``) or a path to a training state.
    """
    with paddle.utils.unique_name.guard():
        return _train(config, cls, data_dir, output_dir, resume)


def _train(config, cls, data_dir, output_dir, resume):
    start_time = time.time()
    checkpoint.check_image_size(config)
    if min(config.train_steps, config.batch_size, config.save_interval) < 1:
        raise UserError("train_steps, batch_size and save_interval must be positive")
    out_dir = os.path.join(output_dir, cls)
    log = TrainingLog(os.path.join(out_dir, TRAIN_LOG), "step")
    point = resume_point(resume, out_dir, cls, config, RESUME_MUST_MATCH, "steps_done", config.train_steps,
                         unit="steps")
    if is_finished(point, config.train_steps, checkpoint.exists(out_dir), thresholds_saved(out_dir)):
        return finished_class(cls, out_dir, checkpoint, point, "steps", log, loss_field="total")
    train_samples, validation_samples = training_split(config, data_dir, cls)
    penalty = penalty_paths(config.penalty_dir)
    train_set = dataset(train_samples, config)   # verifies every file's header before any model work
    validation_set = dataset(validation_samples, config)
    train_paths = [s.path for s in train_samples]
    os.makedirs(out_dir, exist_ok=True)

    detector = checkpoint.build_detector_for(config)
    optimizer, scheduler = build_optimizer(detector, config)
    streams = {"train": jitter_stream(len(train_paths), config.seed)}
    if penalty:
        streams["penalty"] = grayscale_stream(len(penalty), config.seed + 1, PENALTY_GRAYSCALE)
    done = point.done
    if point.state is not None:
        _restore(detector, optimizer, streams, point, cls)
    else:
        _prepare_teacher(detector, config, train_paths, out_dir, cls, resume=bool(resume))
        mean, std = teacher_normalization(detector.teacher, _plain_batches(train_set, config.batch_size, config))
        detector.set_teacher_statistics(mean, std)
    print(f"[{cls}] training {config.model_label} on {len(train_samples)} images, {len(validation_samples)} "
          f"validation images; penalty {'on: ' + str(len(penalty)) + ' images' if penalty else 'off'}; "
          f"steps {done + 1}..{config.train_steps}")
    log.trim(done)
    test_set = None
    if config.eval_interval:
        from .data import test_dataset

        test_set = test_dataset(config, data_dir, cls)

    detector.train()
    # the frozen teacher runs as a Paddle Inference graph with oneDNN, outside autograd
    teacher = FrozenForward(detector.teacher, (3, config.image_size, config.image_size))
    bar = tqdm(total=config.train_steps, initial=done, desc=f"[{cls}] train", dynamic_ncols=True, disable=None)
    value = float("nan")
    while done < config.train_steps:
        chunk = min(config.train_steps - done, config.save_interval - done % config.save_interval)
        for image_st, image_ae, image_penalty in _training_batches(train_paths, penalty, streams, chunk, config):
            losses = train_step(detector, optimizer, scheduler, image_st, image_ae, image_penalty,
                                config.hard_quantile, teacher)
            value = float(losses.total)
            if not math.isfinite(value):
                bar.close()
                raise TrainingDiverged(f"training stopped: loss is {value} at step {done + 1} (lr "
                                       f"{optimizer.get_lr():g}); check the teacher weights and the images, or "
                                       "--resume from the last saved state")
            done += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if done % config.print_steps == 0 or done == config.train_steps:
                record = {"step": done, "lr": optimizer.get_lr(), **losses.as_floats()}
                log.append(record)
                bar.write(f"[{cls}] step {done}/{config.train_steps} loss {value:.4f}")
            if test_set is not None and done % config.eval_interval == 0:
                _monitor(detector, config, validation_set, test_set, cls, done, log)
        save_state(os.path.join(out_dir, TRAIN_STATE), {
            "detector": detector.state_dict(), "optimizer": optimizer.state_dict(),
            "streams": pack_object({k: stream.state() for k, stream in streams.items()}),
            "paddle_rng": pack_object(paddle.get_rng_state())}, "steps_done", done, config)
    bar.close()

    detector.eval()
    detector.set_map_quantiles(*map_normalization(detector, _plain_batches(validation_set, config.eval_batch_size,
                                                                           config)))
    meta = {"steps_done": done, "source": "trained with this repository",
            "penalty": f"on ({len(penalty)} images from {config.penalty_dir})" if penalty else "off",
            "validation_images": [s.path for s in validation_samples]}
    # thresholds from the validation split, held out from training
    return finish_class(cls, out_dir, checkpoint, detector, config, meta, validation_set, True, start_time, value)


# -- data --------------------------------------------------------------------------------------------------------
def _plain_batches(mvtec_dataset, batch_size, config):
    """Re-iterable batches of preprocessed images (no augmentation) in file order."""

    class Batches:
        def __iter__(self):
            for batch in Loader(mvtec_dataset, batch_size, num_workers=config.num_workers):
                yield batch[0]

    return Batches()


def _take(stream, count):
    entries = []
    while len(entries) < count:
        entries += stream.take(count - len(entries))
    return entries


def _training_batches(train_paths, penalty, streams, steps, config):
    """``steps`` batches of (image, jittered image, penalty image or None) from the endless streams."""
    produced = 0
    while produced < steps:
        # one shuffled pass (or what is left of it) at a time; its last batch may be smaller, as a DataLoader's
        entries = streams["train"].take(config.batch_size * (steps - produced))
        loader = Loader(TrainingItems(train_paths, entries, config.image_size), config.batch_size,
                        num_workers=config.num_workers)
        count = len(loader)
        penalties = iter(Loader(PenaltyItems(penalty, _take(streams["penalty"], count), config.image_size), 1,
                                num_workers=config.num_workers)) if penalty else None
        for image_st, image_ae in loader:
            yield image_st, image_ae, (next(penalties)[0] if penalties else None)
        produced += count


# -- teacher -----------------------------------------------------------------------------------------------------
def _prepare_teacher(detector, config, train_paths, out_dir, cls, resume=False):
    weights = config.teacher_weights
    if weights == RANDOM_TEACHER:
        print(f"[{cls}] note: random teacher (tests only; results are meaningless)")
        return
    if weights == DISTILL_TEACHER:
        from .pretrain import distill_teacher

        path = os.path.join(out_dir, DISTILLED_TEACHER)
        if not (resume and os.path.isfile(path)):
            print(f"[{cls}] distilling the teacher from {config.backbone} on the {len(train_paths)} training images "
                  f"({config.distill_steps} steps)")
            with paddle.utils.unique_name.guard():
                distill_teacher(train_paths, config, path, config.distill_steps, config.distill_batch_size,
                                config.distill_norm_images, config.lr, config.weight_decay, config.seed,
                                config.save_interval, resume, config.num_workers, desc=f"[{cls}] distill")
        weights = path
    checkpoint.load_teacher_file(detector.teacher, weights)


# -- monitoring --------------------------------------------------------------------------------------------------
def _monitor(detector, config, validation_set, test_set, cls, step, log):
    """Test metrics with the current weights (quantiles from the validation set), logged only."""
    from .evaluate import test_metrics

    detector.eval()
    detector.set_map_quantiles(*map_normalization(detector, _plain_batches(validation_set, config.eval_batch_size,
                                                                           config)))
    metrics = test_metrics(detector, config, test_set).metrics
    log.append({"step": step, "test_metrics": {"label": MONITORING_LABEL.format(unit="step"), **metrics}})
    print(f"[{cls}] step {step} {MONITORING_LABEL.format(unit='step')}: {metrics}")
    detector.train()


# -- resumable state -----------------------------------------------------------------------------------------------
def _restore(detector, optimizer, streams, point, cls):
    """Load the training state of ``point`` into the detector, the optimiser, the data streams and Paddle's RNG."""
    try:
        saved_streams = unpack_object(point.state["streams"])
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file
        raise UserError(f"--resume: cannot read {point.path} ({type(exc).__name__}: {exc})") from None
    load_state_dict_strict(detector, point.state["detector"])
    optimizer.set_state_dict(point.state["optimizer"])
    for name, stream in streams.items():
        stream.set_state(saved_streams[name])
    paddle.set_rng_state(unpack_object(point.state["paddle_rng"]))
    print(f"[{cls}] resuming from {point.path} after step {point.done}")
