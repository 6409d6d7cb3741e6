"""RD4AD's options: the official code's values (hq-deng/RD4AD main.py, test.py) as dataclass defaults.

``configs/default.yaml`` restates these defaults (a test keeps the two equal); ``--config FILE`` and command-line
options override them (``common.core.config``).
"""
import os
from dataclasses import dataclass

from common.core.config import EVAL, EXPORT, PREDICT, TRAIN, option
from common.data.options import DataOptions

from .model import BACKBONES

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")
LOSSES = ("flattened", "per_pixel")
ALL_COMMANDS = (TRAIN, EVAL, PREDICT, EXPORT)


@dataclass
class Config(DataOptions):
    """RD4AD (reverse distillation)"""

    backbone: str = option("wide_resnet50_2", "teacher; the OCBE and decoder widths follow it", model=True,
                           aliases=("arch",), choices=BACKBONES)
    backbone_weights: str = option("imagenet", "teacher weights: imagenet (paddle.vision's file) | random | "
                                   "FILE.pdparams (e.g. converted torchvision weights; on eval/predict/export: only to "
                                   "point to a moved weight file)", modes=ALL_COMMANDS)
    image_size: int = option(256, "square input size (PIL bilinear resize, no crop)", model=True)
    normalize: bool = option(True, "ImageNet mean/std normalisation after scaling to [0, 1] (official: MVTec and "
                             "CIFAR-10; the official one-class loader leaves MNIST, Fashion-MNIST and Retinal-OCT "
                             "in [0, 1])", model=True)
    epochs: int = option(200, "training epochs")
    batch_size: int = option(16, "training batch size")
    lr: float = option(0.005, "Adam learning rate")
    beta1: float = option(0.5, "Adam beta1")
    beta2: float = option(0.999, "Adam beta2")
    seed: int = option(111, "random seed (Python, NumPy, Paddle)")
    loss: str = option("flattened", "flattened (official code) or per_pixel (the paper's Eq. 1-2)", choices=LOSSES)
    sigma: float = option(4.0, "Gaussian sigma of the anomaly map", model=True)
    validation_fraction: float = option(0.0, "share of train/good held out from training to calibrate the "
                                        "thresholds of predict/infer (0: train on every image, as the paper)",
                                        aliases=("calibration_fraction",))
    image_quantile: float = option(0.99, "image threshold = this quantile of the calibration images' scores")
    pixel_quantile: float = option(0.999, "pixel threshold = this quantile of the calibration images' map pixels")
    save_interval: int = option(10, "write the resumable training state every N epochs (and at the end)")
    eval_interval: int = option(0, "evaluate on the test set every N epochs, logged as monitoring only (0: never)")
    eval_batch_size: int = option(8, "batch size of calibration, evaluation and prediction",
                                  modes=(TRAIN, EVAL, PREDICT))
    num_workers: int = option(0, "loader threads", modes=(TRAIN, EVAL, PREDICT))
    print_steps: int = option(50, "log a line every N training steps")

    def __post_init__(self):
        if self.image_size % 32:
            from common.core.errors import UserError

            raise UserError(f"image_size must be a multiple of 32 (the teacher's strides), got {self.image_size}")

    @property
    def method_name(self):
        return "RD4AD"
