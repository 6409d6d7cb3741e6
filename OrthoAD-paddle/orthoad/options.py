"""Command-line options shared by train.py, eval.py, predict.py and main.py, and the run configuration.

Flag spellings follow the earlier Paddle port (``--data_path --category --method --arch --k --eval --eval_PRO
--load_projection``) as well as this repository's contract (``--cls --data_dir --output_dir --mode``). A YAML file
given with ``--config`` sets defaults; flags on the command line win.
"""
import argparse
import os

import yaml

from common.backbones import RESNET_ARCHS
from common.cli import add_common_args
from common.errors import UserError

from .projection import DEFAULT_SEED, METHODS, METHOD_ALIASES, canonical_method, default_k
from .trainer import FEATURE_STRIDE, make_preprocess

DEFAULT_DATA_DIR = "../data/mvtec_anomaly_detection"


def build_parser(description, modes=None):
    """Parser with the common contract and the OrthoAD/PaDiM options."""
    parser = argparse.ArgumentParser(description=description)
    add_common_args(parser, cls="bottle", data_dir=DEFAULT_DATA_DIR, output_dir="output", seed=None,
                    modes=modes)
    parser.add_argument("--config", help="YAML file of option defaults (see configs/)")
    parser.add_argument("--arch", default="wide_resnet50_2", choices=RESNET_ARCHS[:2], help="backbone")
    parser.add_argument("--method", default="ortho", choices=METHODS + tuple(METHOD_ALIASES),
                        help="ortho (OrthoAD), padim (random channel subset; alias sample), gaussian")
    parser.add_argument("--k", type=int, default=None,
                        help="reduced dimension (default: 300 WRN50 / 100 R18; padim 550 / 100)")
    parser.add_argument("--projection", "--load_projection", dest="projection", default=None,
                        help="load W (c x k) from this .npy file instead of drawing it from --seed")
    parser.add_argument("--backbone_weights", default=None,
                        help="imagenet | random | FILE.pdparams (paddle.vision state dict); default imagenet "
                             "when fitting, the fitted model's weights when evaluating")
    parser.add_argument("--train_split", default="official", choices=("official", "all"),
                        help="official: fit on the 90 %% split (sorted index %% 10 != 0); all: every image")
    parser.add_argument("--unbiased", action="store_true",
                        help="covariance / (N-1) (PaDiM, Paddle port) instead of the official / N")
    parser.add_argument("--eps", type=float, default=0.01, help="added to the covariance diagonal")
    parser.add_argument("--stats_dtype", default="auto", choices=("auto", "float32", "float64"),
                        help="accumulator precision (auto: float64 when it fits in 1 GiB)")
    parser.add_argument("--pipeline", default="official", choices=("official", "simple"),
                        help="official: PIL resize 320 -> 256 -> crop 256, masks > 0.5995; simple: resize 256")
    parser.add_argument("--mask_threshold", type=float, default=None,
                        help="mask binarisation threshold (default 0.5995 official quirk, 0.5 simple)")
    parser.add_argument("--image_size", "--resize", dest="image_size", type=int, default=256,
                        help="network input size")
    parser.add_argument("--sigma", type=float, default=4.0, help="Gaussian smoothing of the map")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--input", "--img_path", "--image_path", dest="input", default=None,
                        help="predict: an image file or a folder of images")
    parser.add_argument("--predict_dir", default=None,
                        help="predict: output folder (default OUTPUT_DIR/CLASS/predictions)")
    parser.add_argument("--eval", action="store_true", help="train.py: evaluate after fitting")
    parser.add_argument("--eval_PRO", action="store_true",
                        help="accepted for compatibility: AU-PRO and the OrthoAD PRO are always computed")
    return parser


def parse_args(parser, argv=None):
    """Parse with ``--config`` YAML defaults applied first."""
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        if not os.path.isfile(pre.config):
            raise UserError(f"config file not found: {pre.config}")
        with open(pre.config, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"unknown option(s) in {pre.config}: {', '.join(unknown)}")
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def run_config(args):
    """The fitting configuration (JSON-able) derived from the parsed arguments."""
    method = canonical_method(args.method)
    if args.image_size % 32:
        raise UserError(f"--image_size must be a multiple of 32, got {args.image_size}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.eps <= 0:
        raise UserError(f"--eps must be positive, got {args.eps}")
    seed = DEFAULT_SEED[method] if args.seed is None else args.seed
    preprocess = make_preprocess(args.pipeline, args.mask_threshold, args.image_size)
    return {
        "method": method,
        "arch": args.arch,
        "k": args.k or default_k(method, args.arch),
        "seed": seed,
        "projection_file": os.path.abspath(args.projection) if args.projection else None,
        "backbone_weights": args.backbone_weights or "imagenet",
        "train_split": args.train_split,
        "unbiased": args.unbiased,
        "eps": args.eps,
        "stats_dtype": args.stats_dtype,
        "pipeline": args.pipeline,
        "preprocess": preprocess.to_dict(),
        "grid": preprocess.output_size // FEATURE_STRIDE,
        "sigma": args.sigma,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "data_dir": args.data_dir,
        "output_dir": args.output_dir,
    }
