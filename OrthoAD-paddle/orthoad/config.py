"""OrthoAD / PaDiM options: the official codes' values as dataclass defaults.

``--method ortho`` (default) follows jnhwkim/orthoad (train.py): WRN50, k 300, seed 1111, the 90 % fit split,
covariance / N, PIL resize 320 -> 256 -> crop 256, masks > 0.5995. ``--method padim`` follows the PaDiM reference
code (xiahaifeng1995, main.py): d 550 (WRN50) / 100 (R18), seed 1024, every training image, covariance / (N-1),
PIL Lanczos resize 256 -> centre crop 224, masks resized with nearest. Options left unset (``None``) take the
chosen method's value; ``--pipeline orthoad`` runs PaDiM on the OrthoAD pipeline (an ablation), and so on.
"""
import os
from dataclasses import dataclass
from typing import Optional

from common.core.config import EVAL, EXPORT, PREDICT, TRAIN, option
from common.core.errors import UserError
from common.data.options import DataOptions

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "default.yaml")
METHODS = ("ortho", "padim", "gaussian")
METHOD_ALIASES = {"sample": "padim"}
METHOD_NAMES = {"ortho": "OrthoAD", "padim": "PaDiM", "gaussian": "OrthoAD-gaussian"}
BACKBONES = ("resnet18", "wide_resnet50_2")
PIPELINES = ("orthoad", "padim", "simple")
# Reduced dimension per (method, backbone): OrthoAD k=300 (WRN50) / 100 (R18); PaDiM d=550 / 100.
DEFAULT_K = {("ortho", "wide_resnet50_2"): 300, ("ortho", "resnet18"): 100,
             ("gaussian", "wide_resnet50_2"): 300, ("gaussian", "resnet18"): 100,
             ("padim", "wide_resnet50_2"): 550, ("padim", "resnet18"): 100}
# The reference codes' own choices where OrthoAD and PaDiM differ.
METHOD_DEFAULTS = {
    "ortho": {"seed": 1111, "train_split": "official", "unbiased": False, "pipeline": "orthoad"},
    "gaussian": {"seed": 1111, "train_split": "official", "unbiased": False, "pipeline": "orthoad"},
    "padim": {"seed": 1024, "train_split": "all", "unbiased": True, "pipeline": "padim"},
}
ALL_COMMANDS = (TRAIN, EVAL, PREDICT, EXPORT)


@dataclass
class Config(DataOptions):
    """OrthoAD / PaDiM (semi-orthogonal embedding, Gaussian per position)"""

    method: str = option("ortho", "ortho (OrthoAD), padim (random channel subset; alias sample) or gaussian",
                         model=True, choices=METHODS + tuple(METHOD_ALIASES))
    backbone: str = option("wide_resnet50_2", "frozen ResNet", model=True, aliases=("arch",), choices=BACKBONES)
    k: Optional[int] = option(None, "reduced dimension (default: 300 WRN50 / 100 R18; padim 550 / 100)",
                              model=True)
    seed: Optional[int] = option(None, "seed of W and of random backbone weights (default: 1111; padim 1024)")
    projection: Optional[str] = option(None, "load W (c x k) from this .npy file instead of drawing it from --seed",
                                       aliases=("load_projection",))
    backbone_weights: str = option("imagenet", "imagenet (paddle.vision's file) | random | FILE.pdparams (e.g. "
                                   "converted torchvision weights; on eval/predict/export: only to point to a moved "
                                   "weight file)", modes=ALL_COMMANDS)
    train_split: Optional[str] = option(None, "official: fit on the 90 %% split (sorted index %% 10 != 0); all: "
                                        "every image (default: official; padim all)", choices=("official", "all"))
    unbiased: Optional[bool] = option(None, "covariance / (N-1) instead of / N (default: False; padim True)")
    eps: float = option(0.01, "added to the covariance diagonal")
    stats_dtype: str = option("auto", "accumulator precision (auto: float64 when it fits in 1 GiB)",
                              choices=("auto", "float32", "float64"))
    pipeline: Optional[str] = option(None, "orthoad: PIL resize 320 -> 256 -> crop 256, masks > 0.5995; padim: "
                                     "Lanczos 256 -> crop 224, masks nearest; simple: resize only (default: the "
                                     "method's own)", model=True, choices=PIPELINES)
    mask_threshold: Optional[float] = option(None, "mask binarisation threshold (default: the pipeline's)")
    image_size: Optional[int] = option(None, "network input size (default: 256; padim pipeline 224)", model=True,
                                       aliases=("resize",))
    sigma: float = option(4.0, "Gaussian smoothing of the map", model=True)
    batch_size: int = option(8, "images per batch when fitting")
    eval_batch_size: int = option(8, "images per batch when calibrating, evaluating and predicting",
                                  modes=(TRAIN, EVAL, PREDICT))
    num_workers: int = option(0, "loader threads", modes=(TRAIN, EVAL, PREDICT))
    image_quantile: float = option(0.99, "image threshold = this quantile of the held-out images' scores")
    pixel_quantile: float = option(0.99, "pixel threshold = this quantile of the held-out images' map pixels")

    def __post_init__(self):
        self.method = METHOD_ALIASES.get(self.method, self.method)
        for name, value in METHOD_DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.k is None:
            self.k = DEFAULT_K[(self.method, self.backbone)]
        if self.image_size is None:
            self.image_size = 224 if self.pipeline == "padim" else 256
        if self.mask_threshold is None:
            self.mask_threshold = 0.5995 if self.pipeline == "orthoad" else 0.5
        if self.image_size % 16:
            raise UserError(f"image_size must be a multiple of 16 (layer3's stride), got {self.image_size}")
        for name in ("batch_size", "eval_batch_size", "k"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eps <= 0:
            raise UserError(f"eps must be positive, got {self.eps}")

    @property
    def method_name(self):
        return METHOD_NAMES[self.method]

    @property
    def grid(self):
        """Side of the layer1 feature grid (stride 4)."""
        return self.image_size // 4
