"""OrthoAD / PaDiM options: the official codes' values as dataclass defaults.

``--method ortho`` (default) follows jnhwkim/orthoad (train.py): WRN50, k 300, seed 1111, the 90 % fit split,
covariance / N, PIL resize 320 -> 256 -> crop 256, masks > 0.5995. ``--method padim`` follows the PaDiM reference
code (xiahaifeng1995, main.py): d 550 (WRN50) / 100 (R18), seed 1024, every training image, covariance / (N-1),
PIL Lanczos resize 256 -> centre crop 224, masks resized with nearest. Options left unset (``None``) take the
chosen method's value; ``--pipeline orthoad`` runs PaDiM on the OrthoAD pipeline (an ablation), and so on.

``--dataset kolektor`` / ``kolektor2`` take the official ``KolektorSDD`` / ``KolektorSDD2`` classes of
jnhwkim/orthoad (dataset.py) as their defaults: the ``kolektor`` pipeline (a plain resize to ``--scale`` = H x W,
``half`` = 704 x 256, masks kept where the resized mask is 255) and every defect-free training image fitted
(``train_split all``; the official code holds nothing out for Kolektor), images labelled by their resized masks
(``resized_labels``). The official run_kolektor.sh adds
``--model resnet18 --k 100``: configs/kolektor.yaml and kolektor2.yaml.
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
PIPELINES = ("orthoad", "padim", "simple", "kolektor")
# The official KolektorSDD(2) --scale names (dataset.py: height x width); any "HxW" is accepted too.
SCALES = {"half": (704, 256), "704x256": (704, 256), "1408x512": (1408, 512)}
KOLEKTOR_DATASETS = ("kolektor", "kolektor2")
# The official dataset.py stores the bilinearly resized float mask in an integer tensor (truncation), then takes
# > 0: a pixel is a defect only where the resized 8-bit mask is 255, i.e. value / 255 > 254.5 / 255.
KOLEKTOR_MASK_THRESHOLD = 254.5 / 255
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
                                     "Lanczos 256 -> crop 224, masks nearest; simple: resize only; kolektor: the "
                                     "official KolektorSDD resize to --scale, masks where 255 (default: kolektor for "
                                     "--dataset kolektor/kolektor2, else the method's own)", model=True,
                                     choices=PIPELINES)
    resized_labels: Optional[bool] = option(None, "kolektor pipeline: label the images, and pick the defect-free "
                                            "training ones, by the mask resized to --scale as the official code "
                                            "does (a defect with no 255 pixel left counts as defect-free); false: "
                                            "by the mask file (default: true for the kolektor pipeline)")
    scale: Optional[str] = option(None, "input height x width of the kolektor pipeline (given alone, it selects that "
                                  "pipeline): half (= 704x256, the official default), 1408x512 or any HxW "
                                  "(multiples of 16); saved as HxW", model=True)
    mask_threshold: Optional[float] = option(None, "mask binarisation threshold (default: the pipeline's)")
    image_size: Optional[int] = option(None, "network input size (default: 256; padim pipeline 224; the kolektor "
                                       "pipeline uses --scale)", model=True,
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
        if self.dataset in KOLEKTOR_DATASETS:
            # the official KolektorSDD / KolektorSDD2 dataset classes, whatever the method (--approx)
            if self.pipeline is None:
                self.pipeline = "kolektor"
            if self.train_split is None:
                self.train_split = "all"
        if self.scale is not None and self.pipeline is None:
            self.pipeline = "kolektor"  # --scale is that pipeline's input size
        if self.scale is not None and self.pipeline != "kolektor":
            raise UserError(f"--scale {self.scale} is the kolektor pipeline's input size; --pipeline is "
                            f"{self.pipeline} (use --image_size)")
        if self.pipeline == "kolektor":
            # one spelling per size (half -> 704x256), so that a model's --scale compares equal to the same size
            self.scale = "x".join(map(str, parse_scale("half" if self.scale is None else self.scale)))
        if self.resized_labels is None:
            self.resized_labels = self.pipeline == "kolektor"
        elif self.resized_labels and self.pipeline != "kolektor":
            raise UserError("--resized_labels applies to the kolektor pipeline only")
        for name, value in METHOD_DEFAULTS[self.method].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.k is None:
            self.k = DEFAULT_K[(self.method, self.backbone)]
        if self.pipeline == "kolektor":
            if self.image_size is not None:
                raise UserError(f"--image_size {self.image_size} does not apply to the kolektor pipeline (input "
                                "--scale HxW, default half = 704x256); use --scale, or --pipeline orthoad|simple "
                                "for a square input")
        elif self.image_size is None:
            self.image_size = 224 if self.pipeline == "padim" else 256
        if self.mask_threshold is None:
            self.mask_threshold = {"orthoad": 0.5995, "kolektor": KOLEKTOR_MASK_THRESHOLD}.get(self.pipeline, 0.5)
        for side in self.input_shape:
            if side % 16 or side < 16:
                raise UserError(f"the input size must be a multiple of 16 (layer3's stride), got "
                                f"{'x'.join(map(str, self.input_shape))}")
        for name in ("batch_size", "eval_batch_size", "k"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.eps <= 0:
            raise UserError(f"eps must be positive, got {self.eps}")

    @property
    def method_name(self):
        return METHOD_NAMES[self.method]

    @property
    def input_shape(self):
        """(height, width) of the network input: ``--scale`` for the kolektor pipeline, else the square
        ``image_size``."""
        if self.pipeline == "kolektor":
            return parse_scale(self.scale)
        return int(self.image_size), int(self.image_size)

    @property
    def grid(self):
        """(height, width) of the layer1 feature grid (stride 4)."""
        height, width = self.input_shape
        return height // 4, width // 4

    @property
    def positions(self):
        """Number of feature-grid positions (one Gaussian each)."""
        return self.grid[0] * self.grid[1]


def parse_scale(scale):
    """``half`` / ``1408x512`` / any ``HxW`` -> (height, width)."""
    if scale in SCALES:
        return SCALES[scale]
    try:
        height, width = (int(v) for v in str(scale).lower().split("x"))
    except ValueError:
        raise UserError(f"--scale must be half, 1408x512 or HEIGHTxWIDTH, got '{scale}'") from None
    if height < 1 or width < 1:
        raise UserError(f"--scale must be positive, got '{scale}'")
    return height, width
