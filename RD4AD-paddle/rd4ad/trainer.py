"""Training, evaluation and threshold calibration of RD4AD for one class.

Files per class (``OUTPUT_DIR/CLASS/``):

- ``rd4ad.pdparams``: the model after the last epoch, ``{'bn', 'decoder', 'meta'}`` (``meta``: backbone, teacher
  weights, image size, ...). There is no best-epoch selection: the official code keeps the last epoch too.
- ``train_state.pdparams``: model, optimiser, finished epochs and the NumPy RNG state (which drives the shuffling),
  written atomically every ``save_interval`` epochs; ``--resume`` continues from it.
- ``thresholds.json``: image and pixel thresholds for ``predict``/``infer``, from held-out good training images.
- ``train_log.jsonl``: one line per epoch (mean loss; test metrics when ``eval_interval`` asks, labelled
  as monitoring only).

Results of ``evaluate_class`` go to ``OUTPUT_DIR/results/RD4AD_CLASS.json``.
"""
import json
import math
import os
import time
import warnings

import numpy as np
import paddle
from tqdm import tqdm

from common import metrics as common_metrics
from common.backbones import load_state_dict_strict
from common.errors import UserError
from common.mvtec import MVTecDataset, test_samples, train_samples
from common.postprocess import gaussian_smooth
from common.results import atomic_save, atomic_write_json, atomic_write_text, write_results
from common.splits import random_split
from common.transforms import Preprocess

from .anomaly_map import AnomalyScorer
from .loss import distillation_loss
from .model import ReverseDistillation

# Paddle warns on every BatchNorm forward in train mode that it tracks running statistics; that is expected here.
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")

METHOD = "RD4AD"
CHECKPOINT = "rd4ad.pdparams"
TRAIN_STATE = "train_state.pdparams"
THRESHOLDS = "thresholds.json"
TRAIN_LOG = "train_log.jsonl"
CHECKPOINT_FORMAT = 1
PROTOCOLS = {
    "image_auroc": "sklearn roc_auc_score of the image scores (max of the sigma-4 smoothed summed cosine map), "
                   "as RD4AD test.py",
    "pixel_auroc": "sklearn roc_auc_score over every test pixel at the network input size, pooled over images; "
                   "masks bilinear-resized and binarised at 0.5, as RD4AD test.py",
    "rd4ad_pro": "RD4AD test.py compute_pro: per anomalous image, 200 thresholds over that image's map, "
                 "FPR < 0.3 rescaled by the largest kept FPR, AUC, averaged over images (the paper's PRO)",
    "au_pro": "official MVTec AD AU-PRO: PRO curve over the whole test set up to FPR 0.3, normalised by 0.3",
}
MONITORING_LABEL = "test-set monitoring only (no model selection; the final model is the last epoch)"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def class_output_dir(output_dir, cls):
    return os.path.join(output_dir, cls)


def preprocess_for(image_size):
    """The official transform: PIL bilinear resize to a square, no crop, ImageNet normalisation; masks resized
    bilinearly and binarised at 0.5."""
    return Preprocess(resize=int(image_size), crop=None, interpolation="bilinear", backend="pil", normalize=True,
                      mask_interpolation="bilinear", mask_threshold=0.5)


def split_for_calibration(samples, fraction, seed):
    """``(train, calibration)``: a seeded hold-out of ``fraction`` of the good training images, or all images for
    training and an empty calibration list when ``fraction`` is 0."""
    if not fraction:
        return list(samples), []
    return random_split(samples, validation_fraction=fraction, seed=seed)


def make_loader(dataset, batch_size, shuffle=False, num_workers=0):
    return paddle.io.DataLoader(dataset, batch_size=int(batch_size), shuffle=shuffle, drop_last=False,
                                num_workers=int(num_workers))


def model_meta(config, epochs_done):
    """What a checkpoint records about the model it holds."""
    keys = ("backbone", "backbone_weights", "image_size", "sigma", "loss", "epochs", "batch_size", "lr", "seed",
            "calibration_fraction")
    meta = {key: config[key] for key in keys}
    meta.update(method=METHOD, format=CHECKPOINT_FORMAT, epochs_done=int(epochs_done))
    return meta


# -- checkpoints ---------------------------------------------------------------------------------------------
def save_checkpoint(path, model, meta):
    """Atomically write ``{'bn', 'decoder', 'meta'}``, plus ``'teacher'`` when the teacher has random weights
    (they cannot be re-created from a file name)."""
    state = dict(model.student_state_dict(), meta=meta)
    if meta["backbone_weights"] in (None, "random"):
        state["teacher"] = model.teacher.state_dict()
    atomic_save(lambda tmp: paddle.save(state, tmp), path)


def read_checkpoint(path):
    """``{'bn', 'decoder', 'meta'}`` from ``path``; missing or foreign files are a ``UserError``."""
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path}: train first (python main.py --mode train ...) or convert an "
                        "official one (python scripts/convert_rd4ad_checkpoint.py)")
    try:
        state = paddle.load(path)
    except Exception as exc:  # noqa: BLE001 - paddle.load raises many types for a foreign or damaged file
        raise UserError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not {"bn", "decoder", "meta"} <= set(state):
        raise UserError(f"{path} is not an RD4AD checkpoint of this project (expected keys bn, decoder, meta)")
    return state


def load_trained_model(path, backbone_weights=None):
    """``(model in eval mode, meta)`` from a checkpoint; ``backbone_weights`` overrides the teacher weights that
    the checkpoint names (needed when the teacher file moved) or carries."""
    state = read_checkpoint(path)
    meta = state["meta"]
    carries_teacher = "teacher" in state and backbone_weights is None
    weights = None if carries_teacher else (backbone_weights or meta.get("backbone_weights", "imagenet"))
    model = ReverseDistillation(meta["backbone"], weights)
    if carries_teacher:
        load_state_dict_strict(model.teacher, state["teacher"])
    model.load_student_state_dict(state)
    model.eval()
    return model, meta


# -- scoring -------------------------------------------------------------------------------------------------
@paddle.no_grad()
def anomaly_maps(scorer, dataset, batch_size, smoothing="scipy"):
    """Smoothed maps (N, S, S) and image scores (N,) for every item of ``dataset``.

    ``smoothing="scipy"`` smooths the Paddle raw maps with SciPy in float64 (the official evaluation);
    ``"paddle"`` uses the scorer's GaussianBlur (what the exported graph does).
    """
    scorer.eval()
    maps = []
    for batch in make_loader(dataset, batch_size):
        images = batch[0]
        if smoothing == "scipy":
            maps.append(gaussian_smooth(scorer.raw_map(images)[:, 0].numpy(), sigma=scorer.sigma))
        else:
            maps.append(scorer(images)[0][:, 0].numpy().astype(np.float64))
    maps = np.concatenate(maps)
    return maps, maps.reshape(len(maps), -1).max(axis=1)


def evaluate_model(scorer, dataset, batch_size):
    """The four metrics (None where undefined) of ``scorer`` on a test ``dataset``, plus notes."""
    maps, scores = anomaly_maps(scorer, dataset, batch_size)
    names = [s.path for s in dataset.samples]
    masks = dataset.masks() if dataset.has_masks else None
    result = common_metrics.evaluate(dataset.labels, scores, masks, maps if masks is not None else None,
                                     protocols=tuple(PROTOCOLS), names=names)
    notes = result.pop("notes")
    return result, notes


def calibrate(scorer, samples, image_size, batch_size, config, held_out):
    """Image and pixel thresholds from the maps of good ``samples`` (GaussianBlur smoothing, as predict/infer)."""
    dataset = MVTecDataset(samples, preprocess_for(image_size))
    maps, scores = anomaly_maps(scorer, dataset, batch_size, smoothing="paddle")
    thresholds = common_metrics.calibrate_thresholds(scores, maps, float(config["image_quantile"]),
                                                     float(config["pixel_quantile"]))
    thresholds["source"] = (f"{len(samples)} held-out good training images (not used for training)" if held_out
                            else f"{len(samples)} good training images, also used for training (not held out: "
                                 "calibration_fraction 0)")
    thresholds["held_out"] = bool(held_out)
    thresholds["calibration_images"] = [s.path for s in samples]
    return thresholds


# -- training ------------------------------------------------------------------------------------------------
def _state_for_resume(model, optimizer, epochs_done, config, calibration):
    state = dict(model.student_state_dict(), optimizer=optimizer.state_dict(), epochs_done=int(epochs_done),
                 numpy_rng=np.random.get_state(), config=dict(config),
                 calibration_images=[s.path for s in calibration])
    if config["backbone_weights"] in (None, "random"):
        state["teacher"] = model.teacher.state_dict()
    return state


RESUME_MUST_MATCH = ("backbone", "backbone_weights", "image_size", "batch_size", "lr", "beta1", "beta2", "loss",
                     "seed", "calibration_fraction")


def _load_resume_state(path, config):
    if not os.path.isfile(path):
        raise UserError(f"--resume: no training state at {path}")
    state = paddle.load(path)
    saved = state.get("config", {})
    changed = [f"{k} {saved.get(k)!r} -> {config[k]!r}" for k in RESUME_MUST_MATCH if saved.get(k) != config[k]]
    if changed:
        raise UserError(f"--resume: {path} was trained with other options ({'; '.join(changed)})")
    if state["epochs_done"] > int(config["epochs"]):
        raise UserError(f"--resume: {path} already has {state['epochs_done']} epochs, more than --epochs "
                        f"{config['epochs']}")
    return state


def train_class(config, cls, data_dir, output_dir, resume=None):
    """Train RD4AD on the good training images of ``cls``; returns a summary dict.

    ``resume``: None, ``"auto"`` (``OUTPUT_DIR/CLASS/train_state.pdparams``) or a path to a training state.
    Parameter names are generated inside a fresh ``unique_name`` scope so that optimiser states saved by one
    process load in another.
    """
    with paddle.utils.unique_name.guard():
        return _train_class(config, cls, data_dir, output_dir, resume)


def _train_class(config, cls, data_dir, output_dir, resume):
    start_time = time.time()
    out_dir = class_output_dir(output_dir, cls)
    image_size = int(config["image_size"])
    preprocess = preprocess_for(image_size)
    train, calibration = split_for_calibration(train_samples(data_dir, cls), float(config["calibration_fraction"]),
                                               int(config["seed"]))
    train_set = MVTecDataset(train, preprocess)
    test_set = MVTecDataset(test_samples(data_dir, cls), preprocess) if int(config["eval_interval"]) else None

    model = ReverseDistillation(config["backbone"], config["backbone_weights"])
    optimizer = paddle.optimizer.Adam(learning_rate=float(config["lr"]), beta1=float(config["beta1"]),
                                      beta2=float(config["beta2"]), epsilon=1e-8,
                                      parameters=model.trainable_parameters())
    first_epoch = 0
    if resume:
        state_path = os.path.join(out_dir, TRAIN_STATE) if resume == "auto" else resume
        state = _load_resume_state(state_path, config)
        model.load_student_state_dict(state)
        if "teacher" in state:
            load_state_dict_strict(model.teacher, state["teacher"])
        optimizer.set_state_dict(state["optimizer"])
        np.random.set_state(state["numpy_rng"])
        first_epoch = int(state["epochs_done"])
        print(f"[{cls}] resuming from {state_path} after epoch {first_epoch}")

    epochs = int(config["epochs"])
    print(f"[{cls}] training RD4AD ({config['backbone']}, {image_size} px) on {len(train)} images, "
          f"{len(calibration)} held out for thresholds; epochs {first_epoch + 1}..{epochs}")
    log_path = os.path.join(out_dir, TRAIN_LOG)
    os.makedirs(out_dir, exist_ok=True)
    _trim_log(log_path, first_epoch)
    loader = make_loader(train_set, config["batch_size"], shuffle=True, num_workers=config["num_workers"])
    scorer = AnomalyScorer(model, image_size, sigma=float(config["sigma"]))
    epoch_loss = float("nan")
    for epoch in range(first_epoch + 1, epochs + 1):
        epoch_loss = _train_epoch(model, optimizer, loader, config, epoch, cls)
        record = {"epoch": epoch, "loss": epoch_loss}
        if epoch % int(config["save_interval"]) == 0 or epoch == epochs:
            state = _state_for_resume(model, optimizer, epoch, config, calibration)
            atomic_save(lambda tmp, state=state: paddle.save(state, tmp), os.path.join(out_dir, TRAIN_STATE))
        if test_set is not None and epoch % int(config["eval_interval"]) == 0:
            result, _ = evaluate_model(scorer, test_set, config["eval_batch_size"])
            record["test_metrics"] = {"label": MONITORING_LABEL, **result}
            print(f"[{cls}] epoch {epoch} {MONITORING_LABEL}: " + ", ".join(
                f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in result.items()))
        _append_log(log_path, record)
        print(f"[{cls}] epoch [{epoch}/{epochs}] loss {epoch_loss:.4f}")

    model.eval()
    save_checkpoint(os.path.join(out_dir, CHECKPOINT), model, model_meta(config, epochs))
    thresholds = calibrate(scorer, calibration or train, image_size, config["eval_batch_size"], config,
                           held_out=bool(calibration))
    atomic_write_json(os.path.join(out_dir, THRESHOLDS), thresholds)
    seconds = time.time() - start_time
    print(f"[{cls}] saved {os.path.join(out_dir, CHECKPOINT)}; image threshold "
          f"{thresholds['image_threshold']:.4f} ({thresholds['source']}); {seconds:.1f} s")
    return {"checkpoint": os.path.join(out_dir, CHECKPOINT), "final_loss": epoch_loss, "seconds": seconds}


def _train_epoch(model, optimizer, loader, config, epoch, cls):
    """One epoch: teacher eval, OCBE and decoder train mode; returns the mean loss."""
    model.train()
    losses = []
    steps = len(loader)
    bar = tqdm(loader, total=steps, desc=f"[{cls}] epoch {epoch}/{config['epochs']}", leave=False,
               dynamic_ncols=True, disable=None)  # disable=None: no bar when stderr is not a terminal
    for step, batch in enumerate(bar, start=1):
        teacher_features, student_features = model(batch[0])
        loss = distillation_loss(teacher_features, student_features, config["loss"])
        value = float(loss)
        if not math.isfinite(value):
            bar.close()
            raise TrainingDiverged(
                f"training stopped: loss is {value} at epoch {epoch}, step {step} (lr {config['lr']}); "
                "lower --lr, check the input images, or --resume from the last saved state")
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
        if step % int(config["print_steps"]) == 0:
            bar.write(f"[{cls}] epoch {epoch} step {step}/{steps} loss {value:.4f}")
    bar.close()
    return float(np.mean(losses))


def _trim_log(path, last_epoch):
    """Keep the log lines of epochs up to ``last_epoch`` (0: start a new log), e.g. after resuming an older state."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        kept = [line for line in handle if line.strip() and json.loads(line)["epoch"] <= last_epoch]
    atomic_write_text(path, "".join(kept))


def _append_log(path, record):
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


# -- evaluation ----------------------------------------------------------------------------------------------
def evaluate_class(cls, data_dir, output_dir, batch_size=8, backbone_weights=None, checkpoint=None):
    """Evaluate the checkpoint of ``cls`` on its test set, write the results JSON and return the metrics."""
    start_time = time.time()
    out_dir = class_output_dir(output_dir, cls)
    model, meta = load_trained_model(checkpoint or os.path.join(out_dir, CHECKPOINT), backbone_weights)
    image_size = int(meta["image_size"])
    test_set = MVTecDataset(test_samples(data_dir, cls), preprocess_for(image_size))
    scorer = AnomalyScorer(model, image_size, sigma=float(meta["sigma"]))
    result, notes = evaluate_model(scorer, test_set, batch_size)
    thresholds_path = os.path.join(out_dir, THRESHOLDS)
    threshold = None
    if os.path.isfile(thresholds_path):
        with open(thresholds_path, encoding="utf-8") as handle:
            threshold = {k: v for k, v in json.load(handle).items() if k != "calibration_images"}
    config = {k: meta.get(k) for k in ("backbone", "backbone_weights", "image_size", "epochs", "epochs_done",
                                       "batch_size", "lr", "seed", "loss", "sigma", "calibration_fraction")}
    config["source"] = meta.get("source", "trained with this repository")
    path = write_results(os.path.join(output_dir, "results"), METHOD, cls, result, PROTOCOLS, config,
                         seconds=time.time() - start_time, threshold=threshold,
                         notes=[f"{k}: {v}" for k, v in notes.items()])
    print(f"[{cls}] " + ", ".join(f"{k} {'n/a' if v is None else f'{v:.3f}'}" for k, v in result.items())
          + f"  -> {path}")
    return result
