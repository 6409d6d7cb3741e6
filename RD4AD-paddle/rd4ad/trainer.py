"""Training of RD4AD for one class, as the official ``main.py``: Adam over OCBE + decoder, the teacher frozen.

Files per class (``OUTPUT_DIR/CLASS/``): ``rd4ad.pdparams`` (the model after the last epoch: the official code keeps
the last epoch too, there is no best-epoch selection), ``train_state.pdparams`` (model, optimiser, finished epochs,
NumPy RNG state that drives the shuffling; written atomically every ``save_interval`` epochs, continued by
``--resume``), ``thresholds.json`` (for predict/infer) and ``train_log.jsonl`` (one line per epoch).
"""
import os
import time
import warnings

import numpy as np
import paddle

from common import distributed
from common.backbones import load_state_dict_strict
from common.frozen import FrozenForward
from common.loader import Loader
from common.results import atomic_save
from common.thresholds import calibrate, write_thresholds
from common.training import (TrainingLog, adam, check_resume, load_state, onednn_convolutions,
                             train_epoch)

from . import checkpoint
from .data import dataset, training_split
from .detector import RD4ADDetector
from .loss import distillation_loss
from .model import ReverseDistillation

# Paddle warns on every BatchNorm forward in train mode that it tracks running statistics; that is expected here.
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

TRAIN_STATE = "train_state.pdparams"
TRAIN_LOG = "train_log.jsonl"
MONITORING_LABEL = "test-set monitoring only (no model selection; the final model is the last epoch)"
# Options a resumed run must share with the state it continues.
RESUME_MUST_MATCH = ("backbone", "backbone_weights", "image_size", "batch_size", "lr", "beta1", "beta2", "loss",
                     "seed", "calibration_fraction")


def train(config, cls, data_dir, output_dir, resume=None):
    """Train on the good training images of ``cls``; returns ``{"checkpoint", "final_loss", "seconds"}``.

    ``resume``: None, ``"auto"`` (``OUTPUT_DIR/CLASS/train_state.pdparams``) or a path to a training state.
    Parameter names are generated in a fresh ``unique_name`` scope so that optimiser states saved by one process
    load in another.
    """
    with paddle.utils.unique_name.guard():
        return _train(config, cls, data_dir, output_dir, resume)


def _train(config, cls, data_dir, output_dir, resume):
    start_time = time.time()
    rank, world = distributed.init()  # (0, 1) unless started by paddle.distributed.launch
    out_dir = os.path.join(output_dir, cls)
    train_samples, calibration_samples = training_split(config, data_dir, cls)
    train_set = dataset(train_samples, config)
    calibration_set = dataset(calibration_samples or train_samples, config)
    test_set = None
    if config.eval_interval:
        from .data import test_dataset

        test_set = test_dataset(config, data_dir, cls)

    model = ReverseDistillation(config.backbone, config.backbone_weights)
    optimizer = adam(model.trainable_parameters(), config.lr, config.beta1, config.beta2)
    first_epoch = _resume(model, optimizer, config, out_dir, resume, cls) if resume else 0
    main = rank == 0  # in a data-parallel run only the first process writes and prints
    if main:
        print(f"[{cls}] training RD4AD ({config.backbone}, {config.image_size} px) on {len(train_samples)} images, "
              f"{len(calibration_samples)} held out for thresholds; epochs {first_epoch + 1}..{config.epochs}"
              + (f"; {world} processes" if world > 1 else ""))
    log = TrainingLog(os.path.join(out_dir, TRAIN_LOG), "epoch")
    if main:
        os.makedirs(out_dir, exist_ok=True)
        log.trim(first_epoch)
    if world > 1:
        sharded = distributed.ShardedBatches(len(train_set), config.batch_size, rank, world, shuffle=True)
        loader = Loader(train_set, batch_sampler=sharded, num_workers=config.num_workers)
    else:
        loader = Loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers)
    # The frozen teacher runs as a Paddle Inference graph with oneDNN, outside autograd (the official code lets
    # gradients reach it but never applies them, so no number changes); the student's convolutions run on oneDNN
    # during the epochs (common.training.onednn_convolutions), under DataParallel in a multi-process run.
    teacher = FrozenForward(model.teacher, (3, config.image_size, config.image_size))
    student_loss = StudentLoss(model, config.loss)
    step_loss = distributed.data_parallel(student_loss) if world > 1 else student_loss
    detector = RD4ADDetector(model, config.image_size, config.sigma)
    epoch_loss = float("nan")
    for epoch in range(first_epoch + 1, config.epochs + 1):
        with onednn_convolutions(student_loss):  # plain layers again for the monitoring and everything after
            epoch_loss = _train_epoch(model, teacher, step_loss, optimizer, loader, config, epoch, cls)
        if not main:
            continue
        record = {"epoch": epoch, "loss": epoch_loss}
        if epoch % config.save_interval == 0 or epoch == config.epochs:
            state = _state_for_resume(model, optimizer, epoch, config)
            atomic_save(lambda tmp, state=state: paddle.save(state, tmp), os.path.join(out_dir, TRAIN_STATE))
        if test_set is not None and epoch % config.eval_interval == 0:
            from .evaluate import test_metrics

            record["test_metrics"] = {"label": MONITORING_LABEL, **test_metrics(detector, config, test_set)[0]}
            print(f"[{cls}] epoch {epoch} {MONITORING_LABEL}: {record['test_metrics']}")
            model.train()
        log.append(record)
        print(f"[{cls}] epoch [{epoch}/{config.epochs}] loss {epoch_loss:.4f}")

    model.eval()
    if not main:
        distributed.barrier()  # wait for the first process's checkpoint and thresholds
        return {"checkpoint": os.path.join(out_dir, checkpoint.CHECKPOINT), "final_loss": epoch_loss,
                "seconds": time.time() - start_time}
    path = checkpoint.save(os.path.join(out_dir, checkpoint.CHECKPOINT), model, config, config.epochs)
    thresholds = calibrate(detector, calibration_set, config, held_out=bool(calibration_samples))
    write_thresholds(out_dir, thresholds)
    seconds = time.time() - start_time
    print(f"[{cls}] saved {path}; image threshold {thresholds['image_threshold']:.4f} ({thresholds['source']}); "
          f"{seconds:.1f} s")
    distributed.barrier()
    return {"checkpoint": path, "final_loss": epoch_loss, "seconds": seconds}


class StudentLoss(paddle.nn.Layer):
    """The trained part of a step: the teacher's three maps -> the student's -> the distillation loss."""

    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, layer1, layer2, layer3):
        features = [layer1, layer2, layer3]
        return distillation_loss(features, self.model.student(features), self.kind)


def _train_epoch(model, teacher, step_loss, optimizer, loader, config, epoch, cls):
    """One epoch (teacher in eval mode, OCBE and decoder in train mode); returns the mean loss.

    ``teacher`` maps images to the teacher's features; ``step_loss`` maps those to the loss (a
    :class:`StudentLoss`, or its ``paddle.DataParallel`` wrapper in a multi-process run: gradients averaged over
    the processes, the logged loss the mean over them).
    """
    model.train()
    return train_epoch(loader, lambda batch: step_loss(*teacher(batch[0])), optimizer, cls, epoch, config.epochs,
                       config.lr, config.print_steps)


# -- resumable state -----------------------------------------------------------------------------------------------
def _state_for_resume(model, optimizer, epochs_done, config):
    from common.config import to_dict

    state = dict(model.student_state_dict(), optimizer=optimizer.state_dict(), epochs_done=int(epochs_done),
                 numpy_rng=np.random.get_state(), config=to_dict(config))
    if config.backbone_weights in (None, "random"):
        state["teacher"] = model.teacher.state_dict()
    return state


def _resume(model, optimizer, config, out_dir, resume, cls):
    """Load the training state named by ``resume`` into ``model``/``optimizer``; returns the epochs done."""
    path = os.path.join(out_dir, TRAIN_STATE) if resume == "auto" else resume
    state = load_state(path, "training state (--resume)")
    epochs_done = check_resume(state, config, RESUME_MUST_MATCH, path, "epochs_done", config.epochs)
    model.load_student_state_dict(state)
    if "teacher" in state:
        load_state_dict_strict(model.teacher, state["teacher"])
    optimizer.set_state_dict(state["optimizer"])
    np.random.set_state(state["numpy_rng"])
    print(f"[{cls}] resuming from {path} after epoch {epochs_done}")
    return epochs_done
