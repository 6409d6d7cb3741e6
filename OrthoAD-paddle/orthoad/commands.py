"""The train / eval / predict commands (per class, with a summary table), used by the scripts and main.py."""
import json
import os

import numpy as np
import paddle

from common.cli import run_per_class
from common.errors import UserError
from common.mvtec import classes_for
from common.predict import predict_images
from common.results import atomic_write_json
from common.runtime import configure

from .options import run_config
from .projection import load_projection, make_projection
from .trainer import (CONFIG_FILE, METHOD_NAMES, THRESHOLDS_FILE, evaluate_class, fit_class, load_model,
                      preprocess_from_dict, result_method_name)

SUMMARY_METRICS = ("image_auroc", "pixel_auroc", "au_pro", "orthoad_pro", "orthoad_pixel_roc")
EMBEDDING_CHANNELS = {"resnet18": 448, "wide_resnet50_2": 1792}


def run_projection(config):
    """W of the run: from ``--projection`` or drawn from the seed; saved as OUTPUT_DIR/projection.npy."""
    channels = EMBEDDING_CHANNELS[config["arch"]]
    if config["projection_file"]:
        weight = load_projection(config["projection_file"], channels, config["k"] if config["k"] else None)
    else:
        weight = make_projection(config["method"], channels, config["k"], config["seed"])
    config["k"] = int(weight.shape[1])
    return weight


def train(args):
    """Fit every requested class (and evaluate with ``--eval``); one W for the whole run."""
    config = run_config(args)
    configure(args.device, args.threads, config["seed"])
    classes = classes_for(args.cls, args.data_dir)
    projection = run_projection(config)
    os.makedirs(args.output_dir, exist_ok=True)
    np.save(os.path.join(args.output_dir, "projection.npy"), projection)
    print(f"{result_method_name(config['method'])}: {config['arch']}, k={config['k']}, seed {config['seed']}, "
          f"{len(classes)} class(es), output {args.output_dir}")

    def run_one(cls):
        model = fit_class(cls, config, projection)
        if args.eval:
            folder = os.path.join(args.output_dir, cls)
            metrics = evaluate_class(cls, args.output_dir, args.data_dir, model=model,
                                     config=_read_json(os.path.join(folder, CONFIG_FILE)),
                                     thresholds=_read_json(os.path.join(folder, THRESHOLDS_FILE)))
            print_class_metrics(cls, metrics)
            return metrics
        return None

    results = run_per_class(classes, run_one, "train")
    if args.eval:
        print_summary(results, result_method_name(config["method"]))
    return results


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def evaluate(args):
    """Evaluate the fitted model of every requested class."""
    configure(args.device, args.threads, args.seed or 0)
    classes = classes_for(args.cls, args.data_dir)
    methods = set()

    def run_one(cls):
        folder = os.path.join(args.output_dir, cls)
        model, config, thresholds = load_model(folder, args.backbone_weights)
        methods.add(result_method_name(config["method"]))
        metrics = evaluate_class(cls, args.output_dir, args.data_dir, model=model, config=config,
                                 thresholds=thresholds, batch_size=args.batch_size)
        print_class_metrics(cls, metrics)
        return metrics

    results = run_per_class(classes, run_one, "eval")
    print_summary(results, "/".join(sorted(methods)) or METHOD_NAMES["ortho"])
    return results


def predict(args):
    """Score an image or a folder with the model of one class: pictures + predictions.jsonl."""
    configure(args.device, args.threads, args.seed or 0)
    if not args.input:
        raise UserError("predict needs --input IMAGE_OR_FOLDER")
    if "," in args.cls or args.cls in ("all", "textures", "objects"):
        raise UserError("predict uses the model of one class: give --cls CLASS")
    folder = os.path.join(args.output_dir, args.cls)
    model, config, thresholds = load_model(folder, args.backbone_weights)
    if not thresholds:
        raise UserError(f"no thresholds.json in {folder}; re-run train.py")
    preprocess = preprocess_from_dict(config["preprocess"])
    out_dir = args.predict_dir or os.path.join(folder, "predictions")
    image_threshold = thresholds["image_threshold"]

    @paddle.no_grad()
    def run_batch(x):
        amap, score = model(paddle.to_tensor(x))
        return amap.numpy(), score.numpy()

    def report(record):
        print(f"{record['image']}: score {record['score']:.4f} -> "
              f"{'ANOMALOUS' if record['is_anomalous'] else 'normal'} (threshold {image_threshold:.4f})")

    records = predict_images(args.input, run_batch, preprocess, image_threshold, thresholds["pixel_threshold"],
                             out_dir, batch_size=args.batch_size, on_record=report)
    atomic_write_json(os.path.join(out_dir, "predictions.json"), records)
    print(f"pictures and predictions.json(l) in {out_dir}")
    return records


def print_class_metrics(cls, metrics):
    shown = ", ".join(f"{name} {metrics[name]:.4f}" for name in SUMMARY_METRICS if metrics.get(name) is not None)
    print(f"[{cls}] {shown}")


def print_summary(results, method):
    """Per-class table and mean row of the main metrics."""
    if not results:
        return
    header = f"{'class':<12}" + "".join(f"{name:>19}" for name in SUMMARY_METRICS)
    print(f"\n{method} summary\n{header}")
    for cls, metrics in results.items():
        print(f"{cls:<12}" + "".join(_cell(metrics.get(name)) for name in SUMMARY_METRICS))
    means = [[m.get(name) for m in results.values()] for name in SUMMARY_METRICS]
    print(f"{'mean':<12}" + "".join(_cell(None if None in column else float(np.mean(column)))
                                     for column in means))


def _cell(value):
    return f"{'-':>19}" if value is None else f"{value:>19.4f}"

