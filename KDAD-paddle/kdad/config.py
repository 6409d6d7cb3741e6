"""KDAD/MKD's options: the official MVTec settings (Niousha12/Knowledge_Distillation_AD ``configs/config.yaml`` with
``dataset_name: mvtec``, ``lamda: 0.5``, ``num_epochs: 601``) as dataclass defaults.

``configs/default.yaml`` restates these defaults (a test keeps the two equal). The one-class sets have their own
files with the official settings (``configs/cifar10.yaml``, ``mnist.yaml``, ``fashionmnist.yaml``, ``retina.yaml``:
``resize``/``image_size``/``interpolation``/``normalize``, ``lamda: 0.01``, the official epochs), and
``configs/config.yaml`` is the official repository's default file (CIFAR-10, normal class 3).
The official/port key names are accepted as aliases
(``--num_epochs``, ``--learning_rate``, ``--lamda``, ``--localization_method``); ``epochs`` and
``validation_fraction`` are the names every method uses for the same ideas.
"""
import os
from dataclasses import dataclass
from typing import Optional

from common.core.config import EVAL, EXPORT, PREDICT, TRAIN, option
from common.data.options import DataOptions

from .detector import METHODS, SMOOTHGRAD_NOISE
from .loss import FORMS

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")
ALL_COMMANDS = (TRAIN, EVAL, PREDICT, EXPORT)


@dataclass
class Config(DataOptions):
    """KDAD / MKD (multiresolution knowledge distillation)"""

    backbone: str = option("vgg16", "the expert (source) network: VGG16 features, pool2..pool5", model=True,
                           aliases=("arch",), choices=("vgg16",))
    backbone_weights: str = option("imagenet", "expert weights: imagenet (paddle.vision's file) | random | "
                                   "FILE.pdparams (e.g. torchvision's, the official code's, converted with "
                                   "scripts/convert_torch_weights.py --arch vgg16)",
                                   modes=ALL_COMMANDS)
    cloner_config: str = option("B", "cloner widths: B (the smaller network of the MVTec numbers) or A (VGG16 "
                                "widths, equal_network_size: True)", model=True, choices=("A", "B"))
    image_size: int = option(128, "square network input size: the resize target, or the centre crop when --resize "
                             "is set", model=True)
    resize: Optional[int] = option(None, "resize to this square size first, then centre-crop to image_size "
                                   "(official CIFAR-10: 256 -> 224); unset: resize straight to image_size",
                                   model=True)
    interpolation: str = option("bilinear", "PIL resampling filter of the resize: bilinear (torchvision's default) "
                                "or lanczos (PIL ANTIALIAS, the official CIFAR-10 transform)", model=True,
                                choices=("bilinear", "lanczos", "bicubic", "nearest"))
    normalize: bool = option(False, "ImageNet mean/std normalisation after scaling to [0, 1] (official CIFAR-10 "
                             "only; MVTec, MNIST, Fashion-MNIST, Retinal-OCT stay in [0, 1])", model=True)
    epochs: int = option(601, "the official num_epochs: the loop runs epochs 0..epochs (epochs + 1 passes), as the "
                         "official range(num_epochs + 1)", aliases=("num_epochs",))
    batch_size: int = option(64, "training batch size")
    lr: float = option(1e-3, "Adam learning rate (betas 0.9/0.999, eps 1e-8, no weight decay)",
                       aliases=("learning_rate",))
    lamda: float = option(0.5, "weight of the MSE term (code form) in the loss and the score", model=True,
                          aliases=("lambda",))
    loss_form: str = option("code", "code: sum dir + lamda * sum MSE (official code); paper: sum MSE + lamda * "
                            "sum dir (the paper's equation); direction: direction_loss_only", model=True,
                            choices=FORMS)
    localization: str = option("vanilla", "saliency method: vanilla (input gradients, the Paddle port's "
                               "numbers), smoothgrad, gbp (guided backprop, the official config default)",
                               model=True, aliases=("localization_method",), choices=METHODS)
    smoothgrad_noise: str = option("official", "SmoothGrad noise std: official ((0.05 / range) ** 2, the code's "
                                   "bug) or corrected (0.05 * range)", model=True, choices=SMOOTHGRAD_NOISE)
    smoothgrad_samples: int = option(50, "SmoothGrad noisy copies", model=True)
    sigma: float = option(4.0, "Gaussian sigma of the saliency map", model=True)
    seed: int = option(0, "random seed (Python, NumPy, Paddle); the official code sets none")
    train_classes: str = option("normal", "training images: normal (the normal class only, the one-class protocol) "
                                "or all (--dataset retina: every class folder of OCT2017/train, as the official "
                                "ImageFolder reads it)", modes=(TRAIN,), choices=("normal", "all"))
    validation_fraction: float = option(0.0, "share of train/good held out from training to calibrate the "
                                        "thresholds of predict/infer (0: train on every image, as the paper)",
                                        aliases=("calibration_fraction",))
    image_quantile: float = option(0.99, "image threshold = this quantile of the calibration images' scores")
    pixel_quantile: float = option(0.999, "pixel threshold = this quantile of the calibration images' map pixels")
    save_interval: int = option(10, "write the resumable training state every N epochs (and at the end)")
    eval_interval: int = option(0, "evaluate on the test set every N epochs, logged as monitoring only (0: never;"
                                " the official code: 10)")
    eval_batch_size: int = option(16, "batch size of calibration, evaluation and prediction",
                                  modes=(TRAIN, EVAL, PREDICT))
    num_workers: int = option(0, "loader threads", modes=(TRAIN, EVAL, PREDICT))
    print_steps: int = option(50, "log a line every N training steps")

    def __post_init__(self):
        if self.image_size % 32:
            from common.core.errors import UserError

            raise UserError(f"image_size must be a multiple of 32 (five 2x2 max-pools), got {self.image_size}")
        if self.train_classes == "all" and self.dataset != "retina":
            from common.core.errors import UserError

            raise UserError(f"--train_classes all applies to --dataset retina only (the official code's ImageFolder "
                            f"over OCT2017/train), not to {self.dataset}")
        if self.resize is not None and int(self.resize) < int(self.image_size):
            from common.core.errors import UserError

            raise UserError(f"resize ({self.resize}) must be at least image_size ({self.image_size}), the centre "
                            "crop taken from it")

    @property
    def method_name(self):
        return "KDAD"

    @property
    def total_epochs(self):
        """Passes over the data: the official loop is ``for epoch in range(num_epochs + 1)``."""
        return int(self.epochs) + 1
