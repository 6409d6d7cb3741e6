"""Training of KDAD/MKD for one class, as the official ``train.py``: Adam over the cloner, the VGG16 expert frozen.

The official loop is ``for epoch in range(num_epochs + 1)``: ``num_epochs: 601`` runs 602 passes (epochs 0..601).
The model kept is the one after the last epoch. The official code evaluates on the test set every 10 epochs and the
earlier Paddle port kept the test-set-best ``best_model`` (a selection on the test set); here ``eval_interval`` only
logs those numbers (``train_log.jsonl``), it never chooses a checkpoint.

Files per class (``OUTPUT_DIR/CLASS/``): ``kdad.pdparams`` (the final model), ``train_state.pdparams`` (cloner,
optimiser, epochs done, NumPy RNG state that drives the shuffling; written every ``save_interval`` epochs,
continued by ``--resume``, :mod:`common.training.state`), ``thresholds.json`` (for predict/infer) and ``train_log.jsonl``.
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
from .evaluate import score_only
from .loss import MseDirectionLoss
from .model import trainable_parameters

warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

RESUME_MUST_MATCH = ("dataset", "fold", "train_classes", "backbone", "backbone_weights", "cloner_config", "image_size",
                     "resize", "interpolation", "normalize", "batch_size", "lr", "lamda", "loss_form", "seed",
                     "validation_fraction")


def train(config, cls, data_dir, output_dir, resume=None):
    """Train on the good training images of ``cls``; returns :func:`common.training.state.summary`.

    ``resume``: None, ``"auto"`` (``OUTPUT_DIR/CLASS/train_state.pdparams``) or a path to a training state.
    """
    with paddle.utils.unique_name.guard():
        return _train(config, cls, data_dir, output_dir, resume)


def _train(config, cls, data_dir, output_dir, resume):
    start_time = time.time()
    rank, world = distributed.init()
    out_dir = os.path.join(output_dir, cls)
    total = config.total_epochs
    log = TrainingLog(os.path.join(out_dir, TRAIN_LOG), "epoch")
    point = resume_point(resume, out_dir, cls, config, RESUME_MUST_MATCH, "epochs_done", total, unit="passes")
    if is_finished(point, total, checkpoint.exists(out_dir), thresholds_saved(out_dir)):
        return finished_class(cls, out_dir, checkpoint, point, "passes", log)
    train_samples, calibration_samples = training_split(config, data_dir, cls)
    train_set = dataset(train_samples, config)
    # thresholds from normal images only (--train_classes all trains on other classes too)
    calibration_set = dataset(calibration_samples or [s for s in train_samples if s.label == 0], config)
    test_set = None
    if config.eval_interval:
        from .data import test_dataset

        test_set = test_dataset(config, data_dir, cls)

    network = checkpoint.build_network(config)
    # official: optim.Adam(model.parameters(), lr=learning_rate) over the cloner only (betas/eps are torch's)
    optimizer = adam(trainable_parameters(network.cloner), config.lr)
    criterion = MseDirectionLoss(config.lamda, config.loss_form)
    if point.state is not None:
        _restore(network, optimizer, point, cls)
    main = rank == 0
    if main:
        print(f"[{cls}] training KDAD (cloner {config.cloner_config}, {config.image_size} px) on "
              f"{len(train_samples)} images, {len(calibration_samples)} held out for thresholds; epochs "
              f"{point.done}..{config.epochs}" + (f"; {world} processes" if world > 1 else ""))
        os.makedirs(out_dir, exist_ok=True)
        log.trim(point.done - 1)  # the log counts epochs from 0, as the official prints
    if world > 1:
        sharded = distributed.ShardedBatches(len(train_set), config.batch_size, rank, world, shuffle=True)
        loader = Loader(train_set, batch_sampler=sharded, num_workers=config.num_workers)
    else:
        loader = Loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers)
    parallel = distributed.data_parallel(network.cloner)
    # the frozen expert runs as a Paddle Inference graph with oneDNN (3-4x faster than dygraph on the CPU)
    expert = FrozenForward(network.expert, (3, config.image_size, config.image_size))
    detector = checkpoint.make_detector(network, config)

    def run_epoch(epoch):
        """One epoch (expert in eval mode, cloner in train mode: BatchNorm with batch statistics); the cloner's
        convolutions on oneDNN (``common.training.onednn.onednn_convolutions``)."""
        network.train()  # the expert stays in eval mode (frozen layer)

        def batch_loss(batch):
            x = batch[0]
            return criterion(expert(x), parallel(x))  # the frozen expert needs no graph

        with onednn_convolutions(network.cloner):
            return train_epoch(loader, batch_loss, optimizer, cls, epoch, config.epochs, config.lr,
                               config.print_steps, decimals=6)

    def monitor():
        from .evaluate import test_metrics

        network.eval()
        return test_metrics(detector, config, test_set).metrics

    def save(epochs_done):
        save_state(os.path.join(out_dir, TRAIN_STATE), checkpoint.network_state(network, config) | {
            "optimizer": optimizer.state_dict()}, "epochs_done", epochs_done, config)

    # official epoch numbers 0..epochs (epochs + 1 passes)
    final_loss = run_epochs(run_epoch, cls=cls, config=config, log=log, total=total, done=point.done, first_label=0,
                            save_state=save, monitor=monitor if test_set else None, decimals=6, main=main)
    network.eval()
    if not main:
        distributed.barrier()
        return summary(os.path.join(out_dir, checkpoint.CHECKPOINT), final_loss, time.time() - start_time)
    result = finish_class(cls, out_dir, checkpoint, detector, config,
                          {"epochs_done": total, "source": "trained with this repository"}, calibration_set,
                          bool(calibration_samples), start_time, final_loss, scores_only=score_only(config))
    distributed.barrier()
    return result


def _restore(network, optimizer, point, cls):
    """Load the training state of ``point`` into the network, the optimiser and the random state."""
    load_state_dict_strict(network.cloner, point.state["cloner"])
    if "expert" in point.state:
        load_state_dict_strict(network.expert, point.state["expert"])
    optimizer.set_state_dict(point.state["optimizer"])
    restore_numpy_random_state(point.state)
    print(f"[{cls}] resuming from {point.path} after {point.done} passes (epochs 0..{point.done - 1})")
