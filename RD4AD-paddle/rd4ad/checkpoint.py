"""Save and load RD4AD class models: ``OUTPUT_DIR/CLASS/rd4ad.pdparams`` -> (detector, config, thresholds).

A checkpoint is ``{'bn', 'decoder', 'config', 'meta'}``: the student's state dicts (module names as the official
code), the :class:`rd4ad.config.Config` it was trained with and ``meta`` (epochs done, where it came from), plus
``'teacher'`` when the teacher has random weights (they cannot be re-created from a file name). The teacher's
ImageNet weights are not copied into every class checkpoint.

Official checkpoints (PyTorch, ``{'bn': state_dict, 'decoder': state_dict}``) convert with
:func:`save_official` (``scripts/convert_rd4ad_checkpoint.py``): module names are the same in both frameworks;
only the BatchNorm statistics are renamed (``running_mean``/``running_var`` -> ``_mean``/``_variance``) and
``num_batches_tracked`` dropped.
"""
import os

import paddle

from common.backbones import load_state_dict_strict, torch_to_paddle_state_dict
from common.config import config_from_dict, to_dict
from common.errors import UserError
from common.results import atomic_save
from common.thresholds import read_thresholds
from common.training import load_state

from .config import Config
from .detector import RD4ADDetector
from .model import ARCHITECTURES, OCBE, Decoder, ReverseDistillation

CHECKPOINT = "rd4ad.pdparams"
FORMAT = 2
# Keys of attention buffers that some early official checkpoints carry; the official test.py drops them too.
DROPPED_KEY_MARKER = "memory"


def checkpoint_path(path):
    """A checkpoint file, or ``CLASS_DIR/rd4ad.pdparams`` for a class folder."""
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, CHECKPOINT))


def save(path, model, config, epochs_done, source="trained with this repository"):
    """Atomically write the checkpoint of ``model`` (see the module docstring)."""
    state = dict(model.student_state_dict(), config=to_dict(config),
                 meta={"method": "RD4AD", "format": FORMAT, "epochs_done": epochs_done, "source": source})
    if config.backbone_weights in (None, "random"):
        state["teacher"] = model.teacher.state_dict()
    atomic_save(lambda tmp: paddle.save(state, tmp), path)
    return path


def read(path):
    """The checkpoint dict at ``path``; missing or foreign files are a ``UserError``."""
    if not os.path.isfile(path):
        raise UserError(f"no trained model at {path}: train first (python main.py --mode train ...) or convert "
                        "an official one (python scripts/convert_rd4ad_checkpoint.py)")
    state = load_state(path)
    if not isinstance(state, dict) or not {"bn", "decoder"} <= set(state) or not ({"config", "meta"} & set(state)):
        raise UserError(f"{path} is not an RD4AD checkpoint of this project (expected keys bn, decoder, config)")
    return state


def load_model(path, backbone_weights=None):
    """``(ReverseDistillation in eval mode, config, meta)``; ``backbone_weights`` replaces the teacher weights the
    checkpoint names (e.g. a moved file) or carries."""
    state = read(checkpoint_path(path))
    config = config_from_dict(Config, state.get("config") or state["meta"])  # format 1 kept the config in meta
    carries_teacher = "teacher" in state and backbone_weights is None
    weights = None if carries_teacher else (backbone_weights or config.backbone_weights)
    model = ReverseDistillation(config.backbone, weights)
    if carries_teacher:
        load_state_dict_strict(model.teacher, state["teacher"])
    model.load_student_state_dict(state)
    model.eval()
    return model, config, state.get("meta", {})


def load(path, backbone_weights=None):
    """``(detector, config, thresholds)`` of a class folder or checkpoint file (thresholds None when absent)."""
    model, config, _ = load_model(path, backbone_weights)
    detector = RD4ADDetector(model, config.image_size, config.sigma)
    detector.eval()
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return detector, config, read_thresholds(folder)


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
    state = dict(student, config=to_dict(config),
                 meta={"method": "RD4AD", "format": FORMAT, "epochs_done": None,
                       "source": f"converted from the official PyTorch checkpoint {os.path.basename(source or '?')}"})
    atomic_save(lambda tmp: paddle.save(state, tmp), out_path)
    return out_path
