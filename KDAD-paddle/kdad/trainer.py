"""Training of KDAD/MKD for one class, as the official ``train.py``: Adam over the cloner, the VGG16 expert frozen.

The official loop is ``for epoch in range(num_epochs + 1)``: ``num_epochs: 601`` runs 602 passes (epochs 0..601).
The model kept is the one after the last epoch. The official code evaluates on the test set every 10 epochs and the
earlier Paddle port kept the test-set-best ``best_model`` (a selection on the test set); here ``eval_interval`` only
logs those numbers (``train_log.jsonl``), it never chooses a checkpoint.

Files per class (``OUTPUT_DIR/CLASS/``): ``kdad.pdparams`` (the final model), ``train_state.pdparams`` (cloner,
optimiser, epochs done, NumPy RNG state that drives the shuffling; written atomically every ``save_interval``
epochs, continued by ``--resume``), ``thresholds.json`` (for predict/infer) and ``train_log.jsonl``.
"""
import os
import time
import warnings

import numpy as np
import paddle

from common import distributed
from common.backbones import load_state_dict_strict
from common.config import to_dict
from common.frozen import FrozenForward
from common.loader import Loader
from common.results import atomic_save
from common.thresholds import calibrate, write_thresholds
from common.training import TrainingLog, adam, check_resume, load_state, onednn_convolutions, train_epoch

from . import checkpoint
from .data import dataset, training_split
from .loss import MseDirectionLoss
from .model import trainable_parameters

warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

TRAIN_STATE = "train_state.pdparams"
TRAIN_LOG = "train_log.jsonl"
MONITORING_LABEL = "test-set monitoring only (no model selection; the final model is the last epoch)"
RESUME_MUST_MATCH = ("backbone", "backbone_weights", "cloner_config", "image_size", "batch_size", "lr", "lamda",
                     "loss_form", "seed", "calibration_fraction")


def train(config, cls, data_dir, output_dir, resume=None):
    """Train on the good training images of ``cls``; returns ``{"checkpoint", "final_loss", "seconds"}``.

    ``resume``: None, ``"auto"`` (``OUTPUT_DIR/CLASS/train_state.pdparams``) or a path to a training state.
    """
    with paddle.utils.unique_name.guard():
        return _train(config, cls, data_dir, output_dir, resume)


def _train(config, cls, data_dir, output_dir, resume):
    start_time = time.time()
    rank, world = distributed.init()
    out_dir = os.path.join(output_dir, cls)
    train_samples, calibration_samples = training_split(config, data_dir, cls)
    train_set = dataset(train_samples, config)
    calibration_set = dataset(calibration_samples or train_samples, config)
    test_set = None
    if config.eval_interval:
        from .data import test_dataset

        test_set = test_dataset(config, data_dir, cls)

    network = checkpoint.build_network(config)
    # official: optim.Adam(model.parameters(), lr=learning_rate) over the cloner only (betas/eps are torch's)
    optimizer = adam(trainable_parameters(network.cloner), config.lr)
    criterion = MseDirectionLoss(config.lamda, config.loss_form)
    total = config.total_epochs
    epochs_done = _resume(network, optimizer, config, out_dir, resume, cls) if resume else 0
    main = rank == 0
    if main:
        print(f"[{cls}] training KDAD (cloner {config.cloner_config}, {config.image_size} px) on "
              f"{len(train_samples)} images, {len(calibration_samples)} held out for thresholds; epochs "
              f"{epochs_done}..{config.num_epochs}" + (f"; {world} processes" if world > 1 else ""))
    log = TrainingLog(os.path.join(out_dir, TRAIN_LOG), "epoch")
    if main:
        os.makedirs(out_dir, exist_ok=True)
        log.trim(epochs_done - 1)  # the log counts epochs from 0, as the official prints
    if world > 1:
        sharded = distributed.ShardedBatches(len(train_set), config.batch_size, rank, world, shuffle=True)
        loader = Loader(train_set, batch_sampler=sharded, num_workers=config.num_workers)
    else:
        loader = Loader(train_set, config.batch_size, shuffle=True, num_workers=config.num_workers)
    parallel = distributed.data_parallel(network.cloner)
    # the frozen expert runs as a Paddle Inference graph with oneDNN (3-4x faster than dygraph on the CPU)
    expert = FrozenForward(network.expert, (3, config.image_size, config.image_size))
    epoch_loss = float("nan")
    for epoch in range(epochs_done, total):  # official epoch numbers 0..num_epochs
        epoch_loss = _train_epoch(network, expert, parallel, criterion, optimizer, loader, config, epoch, cls)
        done = epoch + 1
        if not main:
            continue
        record = {"epoch": epoch, "loss": epoch_loss}
        if done % config.save_interval == 0 or done == total:
            state = _state_for_resume(network, optimizer, done, config)
            atomic_save(lambda tmp, state=state: paddle.save(state, tmp), os.path.join(out_dir, TRAIN_STATE))
        if test_set is not None and epoch % config.eval_interval == 0:
            from .evaluate import test_metrics

            network.eval()
            record["test_metrics"] = {"label": MONITORING_LABEL,
                                      **test_metrics(checkpoint.make_detector(network, config), config,
                                                     test_set)[0]}
            print(f"[{cls}] epoch {epoch} {MONITORING_LABEL}: {record['test_metrics']}")
        log.append(record)
        print(f"[{cls}] epoch [{epoch}/{config.num_epochs}] loss {epoch_loss:.6f}")

    network.eval()
    if not main:
        distributed.barrier()
        return {"checkpoint": os.path.join(out_dir, checkpoint.CHECKPOINT), "final_loss": epoch_loss,
                "seconds": time.time() - start_time}
    path = checkpoint.save(os.path.join(out_dir, checkpoint.CHECKPOINT), network, config, total)
    thresholds = calibrate(checkpoint.make_detector(network, config), calibration_set, config,
                           held_out=bool(calibration_samples))
    write_thresholds(out_dir, thresholds)
    seconds = time.time() - start_time
    print(f"[{cls}] saved {path}; image threshold {thresholds['image_threshold']:.4f} ({thresholds['source']}); "
          f"{seconds:.1f} s")
    distributed.barrier()
    return {"checkpoint": path, "final_loss": epoch_loss, "seconds": seconds}


def _train_epoch(network, expert, parallel, criterion, optimizer, loader, config, epoch, cls):
    """One epoch (expert in eval mode, cloner in train mode: BatchNorm with batch statistics); mean loss.

    The cloner's convolutions run on oneDNN during the epoch (``common.training.onednn_convolutions``)."""
    network.train()  # the expert stays in eval mode (frozen layer)

    def batch_loss(batch):
        x = batch[0]
        return criterion(expert(x), parallel(x))  # the frozen expert needs no graph

    with onednn_convolutions(network.cloner):
        return train_epoch(loader, batch_loss, optimizer, cls, epoch, config.num_epochs, config.lr,
                           config.print_steps, decimals=6)


# -- resumable state -----------------------------------------------------------------------------------------------
def _state_for_resume(network, optimizer, epochs_done, config):
    state = {"cloner": network.cloner.state_dict(), "optimizer": optimizer.state_dict(),
             "epochs_done": int(epochs_done), "numpy_rng": np.random.get_state(), "config": to_dict(config)}
    if config.backbone_weights in (None, "random"):
        state["expert"] = network.expert.state_dict()
    return state


def _resume(network, optimizer, config, out_dir, resume, cls):
    """Load the training state named by ``resume``; returns the number of passes done."""
    path = os.path.join(out_dir, TRAIN_STATE) if resume == "auto" else resume
    state = load_state(path, "training state (--resume)")
    epochs_done = check_resume(state, config, RESUME_MUST_MATCH, path, "epochs_done", config.total_epochs)
    load_state_dict_strict(network.cloner, state["cloner"])
    if "expert" in state:
        load_state_dict_strict(network.expert, state["expert"])
    optimizer.set_state_dict(state["optimizer"])
    np.random.set_state(state["numpy_rng"])
    print(f"[{cls}] resuming from {path} after {epochs_done} passes (epochs 0..{epochs_done - 1})")
    return epochs_done
