"""Build, save and load EfficientAD class models: ``OUTPUT_DIR/CLASS/efficientad.pdparams`` -> (detector, config,
thresholds).

A checkpoint is ``{'detector': state dict, 'config', 'meta'}``. The detector's state dict holds the teacher, the
student, the autoencoder and the statistics buffers (``teacher_mean``, ``teacher_std``, ``q_st_start``,
``q_st_end``, ``q_ae_start``, ``q_ae_end``), so a class model is complete on its own (the reference keeps the
statistics as local variables and cannot be reloaded without recomputing them). Converted PyTorch models
(``scripts/convert_efficientad_checkpoint.py``) are saved in the same form.
"""
import os

from common.core.checkpoint import class_folder, read_checkpoint, save_checkpoint
from common.core.config import config_from_dict
from common.core.errors import UserError
from common.evaluation.thresholds import read_thresholds
from common.networks.backbones import load_state_dict_strict, load_weights_file

from .config import DISTILL_TEACHER, RANDOM_TEACHER, Config
from .detector import EfficientADDetector
from .model import IMAGE_SIZE, Autoencoder, build_pdn

CHECKPOINT = "efficientad.pdparams"
FORMAT = 1
METHOD = "EfficientAD"
HINT = ("train first (python main.py --mode train ...) or convert one "
        "(python scripts/convert_efficientad_checkpoint.py)")
PDN_WIDTHS = {"small": (128, 256), "medium": (256, 512)}
AE_WIDTHS = (32, 64)
CONVERT_HINT = ("convert a PyTorch teacher with python scripts/convert_efficientad_checkpoint.py --teacher "
                "teacher_small.pth --output FILE.pdparams, or distil one with python pretrain_teacher.py")


def _divided(widths, divisor):
    return tuple(max(1, int(w) // int(divisor)) for w in widths)


def check_image_size(config):
    if int(config.image_size) != IMAGE_SIZE:
        raise UserError(f"image_size must be {IMAGE_SIZE}: the EfficientAD autoencoder's layer sizes are those of "
                        f"a {IMAGE_SIZE} px input (got {config.image_size})")


def build_pdn_for(config, out_channels, padding=False):
    """PDN-S/M of ``config`` (widths divided by ``width_divisor``) with ``out_channels`` outputs."""
    return build_pdn(config.model_size, out_channels, padding=padding,
                     hidden_channels=_divided(PDN_WIDTHS[config.model_size], config.width_divisor))


def build_detector_for(config):
    """Teacher (C), student (2C), autoencoder (C) with PyTorch-default init, as ``config`` describes them."""
    check_image_size(config)
    if int(config.out_channels) < 1 or int(config.width_divisor) < 1:
        raise UserError("out_channels and width_divisor must be positive")
    channels = int(config.out_channels)
    return EfficientADDetector(build_pdn_for(config, channels), build_pdn_for(config, 2 * channels),
                               Autoencoder(channels, hidden_channels=_divided(AE_WIDTHS, config.width_divisor)))


def load_teacher_file(teacher, path):
    """Load a teacher state dict (``.pdparams``, reference key names ``0.weight`` ...) into ``teacher``."""
    if path in (None, ""):
        raise UserError(f"EfficientAD needs a pretrained teacher: pass --teacher_weights FILE.pdparams ({CONVERT_HINT})"
                        f"; or --teacher_weights {DISTILL_TEACHER} / {RANDOM_TEACHER}")
    state = load_weights_file(path)
    try:
        load_state_dict_strict(teacher, state)
    except UserError as exc:
        raise UserError(f"{path} is not a teacher of this size ({exc})") from None
    return teacher


def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, CHECKPOINT))


def save(path, detector, config, meta):
    """Atomically write ``detector`` (all weights and statistics), its config and ``meta`` to ``path`` (a class
    folder or the file); returns the file."""
    return save_checkpoint(path, CHECKPOINT, {"detector": detector.state_dict()}, config,
                           dict(meta, method=METHOD, format=FORMAT))


def load(path, backbone_weights=None):
    """``(detector in eval mode, config, thresholds)`` of a class folder or checkpoint file (``backbone_weights``
    is accepted for the shared command line and unused: the checkpoint holds every weight)."""
    record = read_checkpoint(path, CHECKPOINT, METHOD, {"detector", "config"}, HINT)
    config = config_from_dict(Config, record["config"])
    detector = build_detector_for(config)
    load_state_dict_strict(detector, record["detector"])
    detector.eval()
    return detector, config, read_thresholds(class_folder(path))


def pack_object(obj):
    """A picklable Python object as a uint8 array (``paddle.save`` refuses ``bytes`` values in a state)."""
    import pickle

    import numpy as np

    return np.frombuffer(pickle.dumps(obj), dtype=np.uint8).copy()


def unpack_object(array):
    """Inverse of :func:`pack_object` (accepts the array or the Tensor ``paddle.load`` returns)."""
    import pickle

    import numpy as np

    array = array.numpy() if hasattr(array, "numpy") else np.asarray(array)
    return pickle.loads(array.astype(np.uint8).tobytes())
