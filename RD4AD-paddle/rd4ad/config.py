"""Run configuration: ``configs/default.yaml`` (the paper), overlaid by ``--config FILE``, then by command-line
options the user gave."""
import os

import yaml

from common.errors import UserError

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
DEFAULT_CONFIG = os.path.join(CONFIG_DIR, "default.yaml")


def read_yaml(path):
    """A YAML mapping from ``path``; unreadable or non-mapping files are a ``UserError``."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of option: value")
    return data


def load_config(config_file=None, overrides=None):
    """The default config, updated with ``config_file`` (keys must be known) and non-None ``overrides``."""
    config = read_yaml(DEFAULT_CONFIG)
    if config_file:
        extra = read_yaml(config_file)
        unknown = sorted(set(extra) - set(config))
        if unknown:
            raise UserError(f"unknown option(s) in {config_file}: {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(config))}")
        config.update(extra)
    config.update({k: v for k, v in (overrides or {}).items() if v is not None and k in config})
    validate(config)
    return config


def validate(config):
    """Raise ``UserError`` for values that cannot work."""
    from .loss import LOSSES
    from .model import BACKBONES

    from common.backbones import check_arch

    check_arch(config["backbone"], BACKBONES, "RD4AD backbone")
    if config["loss"] not in LOSSES:
        raise UserError(f"--loss must be one of {', '.join(LOSSES)}, got '{config['loss']}'")
    for key in ("epochs", "batch_size", "image_size", "eval_batch_size", "print_steps", "save_interval"):
        if int(config[key]) < 1:
            raise UserError(f"--{key} must be at least 1, got {config[key]}")
    if int(config["image_size"]) % 32:
        raise UserError(f"--image_size must be a multiple of 32 (the OCE works at 1/32), got {config['image_size']}")
    if not 0 <= float(config["calibration_fraction"]) < 1:
        raise UserError(f"--calibration_fraction must be in [0, 1), got {config['calibration_fraction']}")
    if float(config["lr"]) <= 0:
        raise UserError(f"--lr must be positive, got {config['lr']}")
