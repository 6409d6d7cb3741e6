"""EfficientAD's options: nelson1425/EfficientAD's values (``efficientad.py``, ``pretraining.py``) as defaults.

``configs/default.yaml`` restates these defaults (a test keeps the two equal); ``--config FILE`` and command-line
options override them (``common.core.config``). The reference's short flags are accepted as aliases
(``--subdataset``, ``--train_steps``, ``--imagenet_train_path``, ``--weights``).
"""
import os
from dataclasses import dataclass
from typing import Optional

from common.core.config import EVAL, EXPORT, PREDICT, TRAIN, option
from common.data.options import DataOptions
from common.networks.backbones import RESNET_ARCHS

from .model import IMAGE_SIZE, MODEL_SIZES, OUT_CHANNELS

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")
ALL_COMMANDS = (TRAIN, EVAL, PREDICT, EXPORT)
# teacher_weights values that are not files
RANDOM_TEACHER, DISTILL_TEACHER = "random", "distill"


@dataclass
class Config(DataOptions):
    """EfficientAD (student-teacher + autoencoder, PDN networks)"""

    model_size: str = option("small", "small (PDN-S, EfficientAD-S) or medium (PDN-M, EfficientAD-M)", model=True,
                             choices=MODEL_SIZES)
    out_channels: int = option(OUT_CHANNELS, "teacher and autoencoder output channels (student: twice)", model=True)
    width_divisor: int = option(1, "divide every hidden width of the PDNs and the autoencoder by this (1: the "
                                "paper's networks; larger only for fast tests)", model=True)
    image_size: int = option(IMAGE_SIZE, "network input (the autoencoder's layer sizes are built for 256)",
                             model=True)
    teacher_weights: Optional[str] = option(
        None, "pretrained teacher: FILE.pdparams (from scripts/convert_efficientad_checkpoint.py or "
        "pretrain_teacher.py); random (tests only); distill (distil a teacher from --backbone on the class's own "
        "training images first; not the paper's ImageNet distillation)", aliases=("weights",))
    backbone: str = option("wide_resnet101_2", "feature extractor the teacher is distilled from (pretraining; "
                           "teacher_weights distill)", model=True, aliases=("arch",), choices=RESNET_ARCHS)
    backbone_weights: str = option("imagenet", "weights of --backbone for distillation: imagenet (paddle.vision's "
                                   "file) | random | FILE.pdparams (e.g. converted torchvision weights)")
    train_steps: int = option(70000, "training iterations", aliases=("steps",))
    batch_size: int = option(1, "training batch size (the reference: 1)")
    lr: float = option(1e-4, "Adam learning rate")
    weight_decay: float = option(1e-5, "Adam weight decay (coupled L2, as torch.optim.Adam)")
    lr_step_fraction: float = option(0.95, "StepLR step = int(fraction * train_steps)")
    lr_gamma: float = option(0.1, "StepLR factor")
    hard_quantile: float = option(0.999, "hard-feature loss quantile")
    seed: int = option(42, "random seed (Python, NumPy, Paddle; split, shuffling, augmentation)")
    validation_fraction: float = option(0.1, "share of train/good held out for the map quantiles and thresholds")
    val_list: Optional[str] = option(None, "file naming the validation images, one per line (train/good/012.png "
                                     "or 012.png); replaces the random split")
    penalty_dir: Optional[str] = option(None, "image folder (ImageNet train) for the penalty term; none: off "
                                        "(the reference's default)", aliases=("imagenet_train_path",))
    distill_steps: int = option(60000, "teacher distillation iterations (teacher_weights distill)")
    distill_batch_size: int = option(16, "teacher distillation batch size")
    distill_norm_images: int = option(10000, "images for the distillation target's channel mean and std")
    save_interval: int = option(1000, "write the resumable training state every N steps (and at the end)")
    eval_interval: int = option(0, "evaluate on the test set every N steps, logged as monitoring only (0: never)")
    eval_batch_size: int = option(8, "batch size of statistics, calibration, evaluation and prediction",
                                  modes=(TRAIN, EVAL, PREDICT))
    num_workers: int = option(0, "loader threads", modes=(TRAIN, EVAL, PREDICT))
    image_quantile: float = option(0.99, "image threshold = this quantile of the validation images' scores")
    pixel_quantile: float = option(0.999, "pixel threshold = this quantile of the validation images' map pixels")
    print_steps: int = option(1000, "log a line every N training steps")

    @property
    def method_name(self):
        return "EfficientAD"

    @property
    def model_label(self):
        """``EfficientAD-S`` / ``EfficientAD-M``."""
        return f"EfficientAD-{self.model_size[0].upper()}"
