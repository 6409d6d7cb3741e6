"""``main.py``: train, evaluate or predict with RD4AD.

    python main.py --mode train --cls bottle --data_dir DATA [--epochs 200 --batch_size 16 --lr 0.005]
    python main.py --mode eval  --cls all    --data_dir DATA
    python main.py --mode predict --cls bottle --input IMAGE_OR_FOLDER
"""
import argparse
import os

import numpy as np
import paddle

from common.categories import GROUPS
from common.cli import add_common_args, run_per_class
from common.errors import UserError
from common.mvtec import classes_for
from common.runtime import configure

from .config import DEFAULT_CONFIG, load_config
from .trainer import (CHECKPOINT, THRESHOLDS, class_output_dir, evaluate_class, load_trained_model,
                      preprocess_for, train_class)

CONFIG_OPTIONS = {
    # option: (type, help)
    "backbone": (str, "teacher: wide_resnet50_2 (paper), wide_resnet101_2 or resnet18 (quick runs)"),
    "backbone_weights": (str, "teacher weights: imagenet | random | FILE.pdparams"),
    "epochs": (int, "training epochs (paper: 200)"),
    "batch_size": (int, "training batch size (paper: 16)"),
    "lr": (float, "Adam learning rate (paper: 0.005; betas 0.5, 0.999)"),
    "image_size": (int, "square input size (paper: 256)"),
    "loss": (str, "flattened (official code, default) or per_pixel (paper Eq. 1-2)"),
    "calibration_fraction": (float, ("fraction of train/good held out for thresholds (default 0.1; 0 = train on "
                                     "all as the paper, thresholds then from training images)")),
    "image_quantile": (float, "image threshold = this quantile of held-out normal scores"),
    "pixel_quantile": (float, "pixel threshold = this quantile of held-out normal map pixels"),
    "sigma": (float, "Gaussian sigma of the anomaly map (paper: 4)"),
    "save_interval": (int, "write the resumable training state every N epochs"),
    "eval_interval": (int, "evaluate on the test set every N epochs, logging only (0 = never)"),
    "eval_batch_size": (int, "batch size for evaluation and calibration"),
    "num_workers": (int, "DataLoader worker processes"),
    "print_steps": (int, "log a line every N steps"),
}


def build_parser():
    parser = argparse.ArgumentParser(description="RD4AD (reverse distillation) in PaddlePaddle",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(parser, cls="bottle", data_dir="../data/mvtec_anomaly_detection", output_dir="output",
                    seed=None, modes=("train", "eval", "predict"))
    parser.add_argument("--config", default=None, help=f"YAML overriding {os.path.relpath(DEFAULT_CONFIG)}")
    for name, (kind, text) in CONFIG_OPTIONS.items():
        parser.add_argument(f"--{name}", type=kind, default=None, help=text + " [default: from the config]")
    parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="STATE",
                        help="continue an interrupted training from OUTPUT/CLASS/train_state.pdparams (or STATE)")
    parser.add_argument("--ckpt", "--checkpoint", dest="ckpt", default=None,
                        help=f"eval/predict: checkpoint file (default OUTPUT/CLASS/{CHECKPOINT})")
    parser.add_argument("--input", "--img_path", dest="input", default=None, help="predict: image file or folder")
    parser.add_argument("--threshold", type=float, default=None,
                        help=f"predict: image threshold (default: from OUTPUT/CLASS/{THRESHOLDS})")
    parser.add_argument("--pixel_threshold", type=float, default=None,
                        help="predict: pixel threshold for the mask (default: calibrated, else --threshold)")
    parser.add_argument("--predict_dir", default=None, help="predict: output folder (default OUTPUT/CLASS/predictions)")
    return parser


def config_from_args(args):
    overrides = {name: getattr(args, name) for name in CONFIG_OPTIONS}
    overrides["seed"] = args.seed
    return load_config(args.config, overrides)


def classes_with_checkpoints(spec, data_dir, output_dir):
    """``--cls`` classes for evaluation; a group (all, textures, objects) keeps the classes that have a checkpoint."""
    classes = classes_for(spec, data_dir)
    if spec in GROUPS:
        classes = [c for c in classes if os.path.isfile(os.path.join(class_output_dir(output_dir, c), CHECKPOINT))]
        if not classes:
            raise UserError(f"no class of '{spec}' has a checkpoint in {output_dir}; train first")
    return classes


def run(args):
    """Dispatch ``args.mode``."""
    if args.mode == "train":
        config = config_from_args(args)
        configure(args.device, args.threads, int(config["seed"]))
        classes = classes_for(args.cls, args.data_dir)
        if args.resume not in (None, "auto") and len(classes) > 1:
            raise UserError("--resume STATE names one class's state; use --resume without a path for several")

        def train_one(cls):
            # every class starts from the same seed, as if run on its own
            configure(args.device, args.threads, int(config["seed"]))
            return train_class(config, cls, args.data_dir, args.output_dir, resume=args.resume)

        return run_per_class(classes, train_one, "training")
    configure(args.device, args.threads, args.seed)
    if args.mode == "eval":
        classes = classes_with_checkpoints(args.cls, args.data_dir, args.output_dir)
        if args.ckpt and len(classes) > 1:
            raise UserError("--ckpt names one checkpoint; give one --cls with it")
        batch_size = args.eval_batch_size or load_config(args.config)["eval_batch_size"]
        results = run_per_class(classes, lambda cls: evaluate_class(
            cls, args.data_dir, args.output_dir, batch_size, args.backbone_weights, args.ckpt), "evaluation")
        if len(results) > 1:
            names = list(next(iter(results.values())))
            means = {n: [r[n] for r in results.values() if r[n] is not None] for n in names}
            print(f"mean over {len(results)} classes: "
                  + ", ".join(f"{n} {np.mean(v):.3f}" if v else f"{n} n/a" for n, v in means.items()))
        return results
    return predict(args)


def predict(args):
    """``--mode predict``: dygraph scoring of a file or folder with the trained model of one class."""
    from .anomaly_map import AnomalyScorer
    from common.predict import predict_images

    from .predict import read_thresholds, resolve_thresholds

    if not args.input:
        raise UserError("--mode predict needs --input IMAGE_OR_FOLDER")
    if "," in args.cls or args.cls in GROUPS:
        raise UserError("--mode predict uses one class's model: give one --cls")
    out_dir = class_output_dir(args.output_dir, args.cls)
    model, meta = load_trained_model(args.ckpt or os.path.join(out_dir, CHECKPOINT), args.backbone_weights)
    image_threshold, pixel_threshold = resolve_thresholds(
        read_thresholds(os.path.join(out_dir, THRESHOLDS)), args.threshold, args.pixel_threshold,
        where=f" in {out_dir}")
    scorer = AnomalyScorer(model, meta["image_size"], sigma=meta["sigma"])
    scorer.eval()

    @paddle.no_grad()
    def run_batch(x):
        maps, scores = scorer(paddle.to_tensor(x))
        return maps.numpy(), scores.numpy()

    return predict_images(args.input, run_batch, preprocess_for(meta["image_size"]), image_threshold,
                          pixel_threshold, args.predict_dir or os.path.join(out_dir, "predictions"),
                          batch_size=args.eval_batch_size or 1)


def main(argv=None, mode=None):
    """Entry point of ``main.py`` (and of ``train.py``/``eval.py``/``predict.py`` with ``mode`` fixed)."""
    parser = build_parser()
    if mode:
        parser.set_defaults(mode=mode)
    return run(parser.parse_args(argv))
