"""Official RD4AD checkpoints (PyTorch, ``{'bn': state_dict, 'decoder': state_dict}``) -> this project's format.

Works on NumPy state dicts, so it needs no torch; ``scripts/convert_rd4ad_checkpoint.py`` reads the ``.pth`` files
with torch and calls :func:`convert_official_checkpoint`. Module names are the same in both frameworks; only the
BatchNorm statistics are renamed (``running_mean``/``running_var`` -> ``_mean``/``_variance``) and
``num_batches_tracked`` dropped. Conv, ConvTranspose and BatchNorm weights keep their layout.
"""
import os

from common.backbones import load_state_dict_strict, torch_to_paddle_state_dict
from common.errors import UserError

from .model import ARCHITECTURES, OCBE, Decoder

# Keys of attention buffers that some early official checkpoints carry; the official test.py drops them too.
DROPPED_KEY_MARKER = "memory"


def convert_student(official):
    """``{'bn': ..., 'decoder': ...}`` with torch names -> the same with Paddle names (NumPy arrays)."""
    if not isinstance(official, dict) or not {"bn", "decoder"} <= set(official):
        found = ", ".join(sorted(map(str, official))[:6]) if isinstance(official, dict) else type(official).__name__
        raise UserError(f"not an official RD4AD checkpoint: expected keys 'bn' and 'decoder', found {found}")
    bn = {k: v for k, v in official["bn"].items() if DROPPED_KEY_MARKER not in k}
    return {"bn": torch_to_paddle_state_dict(bn), "decoder": torch_to_paddle_state_dict(official["decoder"])}


def check_student(student, backbone):
    """Load the converted state into a fresh OCBE and decoder of ``backbone``; mismatches raise ``UserError``."""
    arch = ARCHITECTURES[backbone]
    load_state_dict_strict(OCBE(arch), student["bn"])
    load_state_dict_strict(Decoder(arch), student["decoder"])


def official_meta(backbone, backbone_weights, source, image_size=256):
    """The checkpoint ``meta`` of a converted model (the official training recipe)."""
    return {"method": "RD4AD", "format": 1, "backbone": backbone, "backbone_weights": backbone_weights,
            "image_size": int(image_size), "sigma": 4.0, "loss": "flattened", "epochs": 200, "epochs_done": None,
            "batch_size": 16, "lr": 0.005, "seed": 111, "calibration_fraction": 0.0,
            "source": f"converted from the official PyTorch checkpoint {os.path.basename(source)}"}


def convert_official_checkpoint(official, out_path, backbone="wide_resnet50_2", backbone_weights="imagenet",
                                source="", image_size=256):
    """Convert and check ``official`` (NumPy state dicts) and save it at ``out_path`` atomically."""
    import paddle

    from common.results import atomic_save

    student = convert_student(official)
    check_student(student, backbone)
    state = dict(student, meta=official_meta(backbone, backbone_weights, source or "(unnamed)", image_size))
    atomic_save(lambda tmp: paddle.save(state, tmp), out_path)
    return out_path
