"""Save and load RD4AD class models: ``OUTPUT_DIR/CLASS/rd4ad.pdparams`` -> (detector, config, thresholds).

A checkpoint (:func:`common.core.checkpoint.save_checkpoint`) is ``{'bn', 'decoder', 'config', 'meta'}``: the student's state dicts (module names as the official
code), the :class:`rd4ad.config.Config` it was trained with and ``meta`` (epochs done, where it came from), plus
``'teacher'`` when the teacher has random weights (they cannot be re-created from a file name). The teacher's
ImageNet weights are not copied into every class checkpoint.

Official checkpoints (PyTorch, ``{'bn': state_dict, 'decoder': state_dict}``) convert with
:func:`save_official` (``scripts/convert_rd4ad_checkpoint.py``): module names are the same in both frameworks;
only the BatchNorm statistics are renamed (``running_mean``/``running_var`` -> ``_mean``/``_variance``) and
``num_batches_tracked`` dropped.
"""
import os

from common.core.checkpoint import class_folder, read_checkpoint, save_checkpoint
from common.core.config import config_from_dict
from common.core.errors import UserError
from common.evaluation.thresholds import read_thresholds
from common.networks.backbones import load_state_dict_strict, torch_to_paddle_state_dict

from .config import Config
from .detector import RD4ADDetector
from .model import ARCHITECTURES, OCBE, Decoder, ReverseDistillation

CHECKPOINT = "rd4ad.pdparams"
FORMAT = 2
METHOD = "RD4AD"
HINT = ("train first (python main.py --mode train ...) or convert an official one "
        "(python scripts/convert_rd4ad_checkpoint.py)")
# Keys of attention buffers that some early official checkpoints carry; the official test.py drops them too.
DROPPED_KEY_MARKER = "memory"


def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, CHECKPOINT))


def model_state(model, config):
    """The student's state dicts (``bn``, ``decoder``), plus the teacher's when its weights are random."""
    state = dict(model.student_state_dict())
    if config.backbone_weights in (None, "random"):
        state["teacher"] = model.teacher.state_dict()
    return state


def make_detector(model, config):
    detector = RD4ADDetector(model, config.image_size, config.sigma)
    detector.eval()
    return detector


def save(path, detector, config, meta):
    """Atomically write the checkpoint of ``detector`` to ``path`` (a class folder or the file); returns the file."""
    return save_checkpoint(path, CHECKPOINT, model_state(detector.model, config), config,
                           dict(meta, method=METHOD, format=FORMAT))


def load(path, backbone_weights=None):
    """``(detector in eval mode, config, thresholds)`` of a class folder or checkpoint file (thresholds None when
    absent); ``backbone_weights`` replaces the teacher weights the checkpoint names (e.g. a moved file) or carries."""
    record = read_checkpoint(path, CHECKPOINT, METHOD, {"bn", "decoder"}, HINT)
    if not {"config", "meta"} & set(record):
        raise UserError(f"{path} is not an RD4AD checkpoint of this project (expected keys bn, decoder, config)")
    config = config_from_dict(Config, record.get("config") or record["meta"])  # format 1 kept the config in meta
    carries_teacher = "teacher" in record and backbone_weights is None
    model = ReverseDistillation(config.backbone, None if carries_teacher else (backbone_weights or
                                                                                config.backbone_weights))
    if carries_teacher:
        load_state_dict_strict(model.teacher, record["teacher"])
    model.load_student_state_dict(record)
    model.eval()
    return make_detector(model, config), config, read_thresholds(class_folder(path))


# -- official PyTorch checkpoints ----------------------------------------------------------------------------------
def convert_student(official):
    """``{'bn': ..., 'decoder': ...}`` with torch names -> the same with Paddle names (NumPy arrays)."""
    if not isinstance(official, dict) or not {"bn", "decoder"} <= set(official):
        found = ", ".join(sorted(map(str, official))[:6]) if isinstance(official, dict) else type(official).__name__
        raise UserError(f"not an official RD4AD checkpoint: expected keys 'bn' and 'decoder', found {found}")
    bn = {k: v for k, v in official["bn"].items() if DROPPED_KEY_MARKER not in k}
    return {"bn": torch_to_paddle_state_dict(bn), "decoder": torch_to_paddle_state_dict(official["decoder"])}


def save_official(official, out_path, backbone="wide_resnet50_2", backbone_weights="imagenet", source="",
                  image_size=256):
    """Convert ``official`` (NumPy state dicts), check it loads into this architecture, save it atomically."""
    student = convert_student(official)
    arch = ARCHITECTURES[backbone]
    load_state_dict_strict(OCBE(arch), student["bn"])
    load_state_dict_strict(Decoder(arch), student["decoder"])
    config = Config(backbone=backbone, backbone_weights=backbone_weights, image_size=int(image_size))
    meta = {"method": METHOD, "format": FORMAT, "epochs_done": None,
            "source": f"converted from the official PyTorch checkpoint {os.path.basename(source or '?')}"}
    return save_checkpoint(out_path, CHECKPOINT, student, config, meta)
