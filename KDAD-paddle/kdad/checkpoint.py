"""Save and load KDAD class models: ``OUTPUT_DIR/CLASS/kdad.pdparams`` -> (detector, config, thresholds).

A checkpoint (:func:`common.core.checkpoint.save_checkpoint`) is ``{'cloner', 'config', 'meta'}``: the cloner's state dict (official module names ``features.N.*``,
BatchNorm statistics as ``_mean``/``_variance``), the :class:`kdad.config.Config` it was trained with and ``meta``
(epochs done, source), plus ``'expert'`` when the expert has random weights (they cannot be re-created from a file
name). The expert's ImageNet weights are not copied into every class checkpoint.

Official checkpoints (PyTorch, the cloner's ``state_dict()`` as the official ``train()`` saves it) convert with
:func:`save_official` (``scripts/convert_kdad_checkpoint.py``).
"""
import os

from common.core.checkpoint import class_folder, read_checkpoint, save_checkpoint
from common.core.config import config_from_dict
from common.core.errors import UserError
from common.evaluation.thresholds import read_thresholds
from common.networks.backbones import load_state_dict_strict, torch_to_paddle_state_dict

from .config import Config
from .detector import KDADDetector
from .model import Cloner, KDADNetwork

CHECKPOINT = "kdad.pdparams"
FORMAT = 1
METHOD = "KDAD"
HINT = ("train first (python main.py --mode train ...) or convert an official one "
        "(python scripts/convert_kdad_checkpoint.py)")


def exists(class_dir):
    return os.path.isfile(os.path.join(class_dir, CHECKPOINT))


def _expert_is_random(config):
    return config.backbone_weights in (None, "random")


def network_state(network, config):
    """The cloner's state dict, plus the expert's when its weights are random."""
    state = {"cloner": network.cloner.state_dict()}
    if _expert_is_random(config):
        state["expert"] = network.expert.state_dict()
    return state


def build_network(config, expert_weights=None):
    weights = expert_weights if expert_weights is not None else config.backbone_weights
    return KDADNetwork(expert_weights=None if weights == "random" else weights, cloner_config=config.cloner_config)


def make_detector(network, config):
    detector = KDADDetector(network, lamda=config.lamda, method=config.localization, image_size=config.image_size,
                            sigma=config.sigma, smoothgrad_samples=config.smoothgrad_samples,
                            smoothgrad_noise=config.smoothgrad_noise, loss_form=config.loss_form)
    detector.eval()
    return detector


def save(path, detector, config, meta):
    """Atomically write the checkpoint of ``detector`` to ``path`` (a class folder or the file); returns the file."""
    return save_checkpoint(path, CHECKPOINT, network_state(detector.network, config), config,
                           dict(meta, method=METHOD, format=FORMAT))


def load(path, backbone_weights=None):
    """``(detector in eval mode, config, thresholds)`` of a class folder or checkpoint file (thresholds None when
    absent)."""
    record = read_checkpoint(path, CHECKPOINT, METHOD, {"cloner", "config"}, HINT)
    config = config_from_dict(Config, record["config"])
    carries_expert = "expert" in record and backbone_weights is None
    network = build_network(config, "random" if carries_expert else backbone_weights)
    if carries_expert:
        load_state_dict_strict(network.expert, record["expert"])
    load_state_dict_strict(network.cloner, record["cloner"])
    network.eval()
    return make_detector(network, config), config, read_thresholds(class_folder(path))


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
    meta = {"method": METHOD, "format": FORMAT, "epochs_done": None,
            "source": f"converted from the official PyTorch checkpoint {os.path.basename(source or '?')}"}
    return save_checkpoint(out_path, CHECKPOINT, {"cloner": cloner_state}, config, meta)
