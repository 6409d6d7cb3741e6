"""Training of RD4AD for one class, as the official ``main.py``: Adam over OCBE + decoder, the teacher frozen.

Files per class (``OUTPUT_DIR/CLASS/``): ``rd4ad.pdparams`` (the model after the last epoch: the official code keeps
the last epoch too, there is no best-epoch selection), ``train_state.pdparams`` (model, optimiser, finished epochs,
NumPy RNG state that drives the shuffling; written every ``save_interval`` epochs, continued by ``--resume``,
:mod:`common.training.state`), ``thresholds.json`` (for predict/infer) and ``train_log.jsonl`` (one line per epoch).
"""
import os
import time
import warnings

import paddle

from common.data.loader import Loader
from common.networks.backbones import load_state_dict_strict
from common.training import distributed
from common.training.frozen import FrozenForward
from common.training.log import TRAIN_LOG, TrainingLog
from common.training.loop import run_epochs, train_epoch
from common.training.onednn import onednn_convolutions
from common.training.optimizer import adam
from common.training.state import (
    TRAIN_STATE,
    finish_class,
    finished_class,
    is_finished,
    restore_numpy_random_state,
    resume_point,
    save_state,
    summary,
    thresholds_saved,
)

from . import checkpoint
from .data import dataset, training_split
from .loss import distillation_loss
from .model import ReverseDistillation

# Paddle warns on every BatchNorm forward in train mode that it tracks running statistics; that is expected here.
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

# Options a resumed run must share with the state it continues.
RESUME_MUST_MATCH = ("dataset", "fold", "backbone", "backbone_weights", "image_size", "batch_size", "lr", "beta1",
                     "beta2", "loss", "seed", "validation_fraction")


def train(config, cls, data_dir, output_dir, resume=None):
    """Train on the good training images of ``cls``; returns :func:`common.training.state.summary`.

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
    log = TrainingLog(os.path.join(out_dir, TRAIN_LOG), "epoch")
    point = resume_point(resume, out_dir, cls, config, RESUME_MUST_MATCH, "epochs_done", config.epochs)
    if is_finished(point, config.epochs, checkpoint.exists(out_dir), thresholds_saved(out_dir)):
        return finished_class(cls, out_dir, checkpoint, point, "epochs", log)
    train_samples, calibration_samples = training_split(config, data_dir, cls)
    train_set = dataset(train_samples, config)
    calibration_set = dataset(calibration_samples or train_samples, config)
    test_set = None
    if config.eval_interval:
        from .data import test_dataset

        test_set = test_dataset(config, data_dir, cls)

    model = ReverseDistillation(config.backbone, config.backbone_weights)
    optimizer = adam(model.trainable_parameters(), config.lr, config.beta1, config.beta2)
    if point.state is not None:
        _restore(model, optimizer, point, cls)
    main = rank == 0  # in a data-parallel run only the first process writes and prints
    if main:
        print(f"[{cls}] training RD4AD ({config.backbone}, {config.image_size} px) on {len(train_samples)} images, "
              f"{len(calibration_samples)} held out for thresholds; epochs {point.done + 1}..{config.epochs}"
              + (f"; {world} processes" if world > 1 else ""))
        os.makedirs(out_dir, exist_ok=True)
        log.trim(point.done)
    if world > 1:
        sharded = distributed.ShardedBatches(len(train_set), config.batch_size, rank, world, shuffle=True)
        loader = Loader(train_set, batch_sampler=sharded, num_workers=config.num_workers)
    else:
        loader = Loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers)
    # The frozen teacher runs as a Paddle Inference graph with oneDNN, outside autograd (the official code lets
    # gradients reach it but never applies them, so no number changes); the student's convolutions run on oneDNN
    # during the epochs (common.training.onednn.onednn_convolutions), under DataParallel in a multi-process run.
    teacher = FrozenForward(model.teacher, (3, config.image_size, config.image_size))
    student_loss = StudentLoss(model, config.loss)
    step_loss = distributed.data_parallel(student_loss) if world > 1 else student_loss
    detector = checkpoint.make_detector(model, config)

    def run_epoch(epoch):
        model.train()
        with onednn_convolutions(student_loss):  # plain layers again for the monitoring and everything after
            return train_epoch(loader, lambda batch: step_loss(*teacher(batch[0])), optimizer, cls, epoch,
                               config.epochs, config.lr, config.print_steps)

    def monitor():
        from .evaluate import test_metrics

        metrics = test_metrics(detector, config, test_set).metrics
        model.train()
        return metrics

    def save(epochs_done):
        save_state(os.path.join(out_dir, TRAIN_STATE), checkpoint.model_state(model, config) | {
            "optimizer": optimizer.state_dict()}, "epochs_done", epochs_done, config)

    final_loss = run_epochs(run_epoch, cls=cls, config=config, log=log, total=config.epochs, done=point.done,
                            first_label=1, save_state=save, monitor=monitor if test_set else None, main=main)
    if not main:
        distributed.barrier()  # wait for the first process's checkpoint and thresholds
        return summary(os.path.join(out_dir, checkpoint.CHECKPOINT), final_loss, time.time() - start_time)
    result = finish_class(cls, out_dir, checkpoint, detector, config,
                          {"epochs_done": config.epochs, "source": "trained with this repository"}, calibration_set,
                          bool(calibration_samples), start_time, final_loss)
    distributed.barrier()
    return result


class StudentLoss(paddle.nn.Layer):
    """The trained part of a step: the teacher's three maps -> the student's -> the distillation loss."""

    def __init__(self, model, kind):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, layer1, layer2, layer3):
        features = [layer1, layer2, layer3]
        return distillation_loss(features, self.model.student(features), self.kind)


def _restore(model, optimizer, point, cls):
    """Load the training state of ``point`` into ``model``/``optimizer`` and the random state."""
    model.load_student_state_dict(point.state)
    if "teacher" in point.state:
        load_state_dict_strict(model.teacher, point.state["teacher"])
    optimizer.set_state_dict(point.state["optimizer"])
    restore_numpy_random_state(point.state)
    print(f"[{cls}] resuming from {point.path} after epoch {point.done}")
