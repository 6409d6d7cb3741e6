"""Save and load KDAD class models: ``OUTPUT_DIR/CLASS/kdad.pdparams`` -> (detector, config, thresholds).

A checkpoint is ``{'cloner', 'config', 'meta'}``: the cloner's state dict (official module names ``features.N.*``,
BatchNorm statistics as ``_mean``/``_variance``), the :class:`kdad.config.Config` it was trained with and ``meta``
(epochs done, source), plus ``'expert'`` when the expert has random weights (they cannot be re-created from a file
name). The expert's ImageNet weights are not copied into every class checkpoint.

Official checkpoints (PyTorch, the cloner's ``state_dict()`` as the official ``train()`` saves it) convert with
:func:`save_official` (``scripts/convert_kdad_checkpoint.py``).
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
from .detector import KDADDetector
from .model import Cloner, KDADNetwork

CHECKPOINT = "kdad.pdparams"
FORMAT = 1


def checkpoint_path(path):
    return os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path


def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, CHECKPOINT))


def _expert_is_random(config):
    return config.backbone_weights in (None, "random")


def save(path, network, config, epochs_done, source="trained with this repository"):
    """Atomically write the checkpoint of ``network`` (see the module docstring)."""
    state = {"cloner": network.cloner.state_dict(), "config": to_dict(config),
             "meta": {"method": "KDAD", "format": FORMAT, "epochs_done": epochs_done, "source": source}}
    if _expert_is_random(config):
        state["expert"] = network.expert.state_dict()
    atomic_save(lambda tmp: paddle.save(state, tmp), path)
    return path


def read(path):
    if not os.path.isfile(path):
        raise UserError(f"no trained model at {path}: train first (python main.py --mode train ...) or convert an "
                        "official one (python scripts/convert_kdad_checkpoint.py)")
    state = load_state(path)
    if not isinstance(state, dict) or not {"cloner", "config"} <= set(state):
        raise UserError(f"{path} is not a KDAD checkpoint of this project (expected keys cloner, config)")
    return state


def build_network(config, expert_weights=None):
    weights = expert_weights if expert_weights is not None else config.backbone_weights
    return KDADNetwork(expert_weights=None if weights == "random" else weights, cloner_config=config.cloner_config)


def load_model(path, backbone_weights=None):
    """``(KDADNetwork in eval mode, config, meta)``."""
    state = read(checkpoint_path(path))
    config = config_from_dict(Config, state["config"])
    carries_expert = "expert" in state and backbone_weights is None
    network = build_network(config, "random" if carries_expert else backbone_weights)
    if carries_expert:
        load_state_dict_strict(network.expert, state["expert"])
    load_state_dict_strict(network.cloner, state["cloner"])
    network.eval()
    return network, config, state.get("meta", {})


def make_detector(network, config):
    detector = KDADDetector(network, lamda=config.lamda, method=config.localization, image_size=config.image_size,
                            sigma=config.sigma, smoothgrad_samples=config.smoothgrad_samples,
                            smoothgrad_noise=config.smoothgrad_noise, loss_form=config.loss_form)
    detector.eval()
    return detector


def load(path, backbone_weights=None):
    """``(detector, config, thresholds)`` of a class folder or checkpoint file (thresholds None when absent)."""
    network, config, _ = load_model(path, backbone_weights)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    return make_detector(network, config), config, read_thresholds(folder)


# -- official PyTorch checkpoints ----------------------------------------------------------------------------------
def convert_cloner(official):
    """The official cloner state dict (torch names, NumPy values) -> Paddle names (BN statistics renamed)."""
    if not isinstance(official, dict) or not any(str(k).startswith("features.") for k in official):
        found = ", ".join(sorted(map(str, official))[:6]) if isinstance(official, dict) else type(official).__name__
        raise UserError(f"not an official KDAD cloner state dict (keys features.N.*), found {found}")
    return torch_to_paddle_state_dict(official)


def save_official(official, out_path, backbone_weights="imagenet", source="", cloner_config="B", image_size=128):
    """Convert ``official`` (NumPy state dict), check it loads into the cloner, save it atomically."""
    cloner_state = convert_cloner(official)
    try:
        load_state_dict_strict(Cloner(config=cloner_config), cloner_state)
    except (ValueError, KeyError) as exc:
        raise UserError(f"the checkpoint does not fit cloner config {cloner_config}: {exc}") from None
    config = Config(backbone_weights=backbone_weights, cloner_config=cloner_config, image_size=int(image_size))
    state = {"cloner": cloner_state, "config": to_dict(config),
             "meta": {"method": "KDAD", "format": FORMAT, "epochs_done": None,
                      "source": f"converted from the official PyTorch checkpoint {os.path.basename(source or '?')}"}}
    atomic_save(lambda tmp: paddle.save(state, tmp), out_path)
    return out_path
