"""``main.py``, ``train.py``, ``eval.py`` and ``predict.py`` of every method folder: one parser, one per-class loop,
one summary table. A method folder's entry scripts import their method package and make one call, e.g.
``commands.main(rd4ad, "train")``.

Every method package has the same modules with the same shapes (the "method contract", checked by
``tests/test_method_shape.py``):

- ``config``: ``Config`` (dataclass of :func:`common.core.config.option` fields, the official defaults) with a
  ``method_name`` property (the name in results files, e.g. ``RD4AD``), and ``DEFAULT_CONFIG`` (the YAML that
  restates those defaults; ``--config`` replaces it);
- ``data``: ``preprocess(config) -> Preprocess``, ``training_split(config, data_dir, cls) -> (train, validation)``,
  ``dataset(samples, config)`` and ``test_dataset(config, data_dir, cls)``;
- ``detector``: the layer ``normalised images (N,3,S,S) -> (anomaly map (N,1,S,S), score (N,))`` with the class
  attribute ``original_resolution`` (True when its maps are compared at each image's own size);
- ``trainer``: ``train(config, cls, data_dir, output_dir, resume=None) -> {"checkpoint", "final_loss", "seconds",
  "status"}`` (:func:`common.training.state.summary`);
- ``checkpoint``: ``CHECKPOINT`` (the file name), ``exists(class_dir)``, ``save(path, detector, config, meta) ->
  file`` and ``load(path, backbone_weights=None) -> (detector, config, thresholds)``, ``path`` a class folder or a
  file in it;
- ``evaluate``: ``PROTOCOLS`` and ``test_metrics(detector, config, dataset) -> TestResult``, the method's metric
  step (:func:`common.evaluation.evaluate.evaluate` does the rest and writes ``OUTPUT_DIR/results/METHOD_CLASS.json``);
- ``model`` and ``loss``: the networks and the training objective.

Options a command does not use are not offered by it; options that describe the trained model are accepted on
eval/predict/export when they match it and refused with one line when they contradict it.
"""
import argparse
import dataclasses
import os

import numpy as np

from common.core import config as cfg
from common.core.errors import UserError, main_guard
from common.core.runtime import configure, device_line
from common.data.readers import DEFAULT_FORMAT, check_fold, classes_for, dataset_format, is_group
from common.evaluation.evaluate import evaluate as evaluate_class

from .args import add_shared_args, run_per_class, single_class, str2bool

MODES = ("train", "eval", "predict")
STANDARD_METRICS = ("image_auroc", "pixel_auroc", "au_pro")


# -- parsers -----------------------------------------------------------------------------------------------------
def _model_source_args(parser):
    parser.add_argument("--ckpt", "--checkpoint", "--model_path", dest="ckpt", default=None,
                        help="the trained model: a checkpoint file or its class folder (default OUTPUT_DIR/CLS)")


def build_parser(method, mode, with_mode_flag=False):
    """The parser of ``mode`` (train, eval or predict) for the method ``method``."""
    config_module = method.config
    parser = argparse.ArgumentParser(allow_abbrev=False,
                                     description=f"{config_module.Config.__doc__.splitlines()[0]} -- {mode}",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    if with_mode_flag:
        parser.add_argument("--mode", choices=MODES + ("infer",), default="train",
                            help="what to run (infer: predict on DATA_DIR/CLS/test, the earlier port's spelling)")
    add_shared_args(parser, cls="bottle" if mode == "predict" else "all")
    cfg.add_config_args(parser, config_module.Config, mode)
    if mode == "train":
        parser.add_argument("--config", default=config_module.DEFAULT_CONFIG,
                            help="YAML of options (configs/); options given here override it")
        parser.add_argument("--resume", nargs="?", const="auto", default=None, metavar="STATE",
                            help="continue an interrupted training from its last saved state (or from STATE)")
        parser.add_argument("--eval", action="store_true", help="evaluate each class after training it")
    else:
        _model_source_args(parser)
        parser.add_argument("--config", default=None,
                            help="the YAML the model was trained with, as the official test commands pass it "
                                 "(optional): its model options must agree with the model and its dataset is the "
                                 "one read; everything else comes from the model's saved configuration")
    if mode in ("train", "eval"):
        parser.add_argument("--eval_PRO", action="store_true",
                            help="accepted for the earlier port's commands: every PRO metric is always computed")
    if mode == "eval":
        parser.add_argument("--save_pic", type=str2bool, nargs="?", const=True, default=False, metavar="BOOL",
                            help="also write heatmap pictures of every test image to OUTPUT_DIR/CLS/test_pictures")
        parser.add_argument("--save_maps", choices=("tiff",), default=None,
                            help="also write every test image's anomaly map (float32, at the image's size) to "
                                 "MAPS_DIR/CLS/test/DEFECT/STEM.tiff, the layout MVTec's LOCO evaluator reads")
        parser.add_argument("--maps_dir", default=None, help="folder for --save_maps (default OUTPUT_DIR/anomaly_maps)")
    if mode == "predict":
        parser.add_argument("image", nargs="?", default=None, help="image file or folder (same as --input)")
        parser.add_argument("--input", "--img_path", "--image_path", dest="input", default=None,
                            help="image file or folder to score")
        parser.add_argument("--predict_dir", default=None, help="output folder (default OUTPUT_DIR/CLS/predictions)")
        parser.add_argument("--threshold", type=float, default=None,
                            help="image threshold (default: the calibrated one in thresholds.json)")
        parser.add_argument("--pixel_threshold", type=float, default=None,
                            help="pixel threshold of the mask (default: calibrated, else --threshold)")
        parser.add_argument("--save_pic", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                            help="write heatmap, mask and contour pictures (False: scores only)")
    return parser


def parse(method, mode=None, argv=None):
    """Parse ``argv`` for ``mode``, or for the ``--mode`` it names (main.py)."""
    if mode is None:
        pre = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
        pre.add_argument("--mode", choices=MODES + ("infer",), default="train")
        known, _ = pre.parse_known_args(argv)
        args = build_parser(method, "predict" if known.mode == "infer" else known.mode,
                            with_mode_flag=True).parse_args(argv)
    else:
        args = build_parser(method, "predict" if mode == "infer" else mode).parse_args(argv)
        args.mode = mode
    return args


# -- loading a trained model ---------------------------------------------------------------------------------------
def class_dir(output_dir, cls):
    return os.path.join(output_dir, cls)


def load_trained(method, args, cls):
    """``(detector, config, thresholds, where)`` for ``cls``, with the model-describing options checked against it
    and the runtime options given on the command line applied to its config."""
    config_module, checkpoint = method.config, method.checkpoint
    where = args.ckpt or class_dir(args.output_dir, cls)
    detector, config, thresholds = checkpoint.load(where, backbone_weights=getattr(args, "backbone_weights", None))
    cfg.check_model_flags(config_module.Config, args, config, where)
    if getattr(args, "config", None):
        cfg.check_model_file(config_module.Config, args.config, config, where)
    runtime = {f.name: getattr(args, f.name) for f in dataclasses.fields(config_module.Config)
               if not f.metadata.get("model") and getattr(args, f.name, None) is not None}
    return detector, dataclasses.replace(config, **runtime), thresholds, where


def _saved_options(method, output_dir, ckpt=None):
    """The saved configuration (a dict) of the first trained model in ``output_dir`` (or of ``ckpt``), or {}; read
    from the checkpoint file without building the model."""
    import json

    from common.core.checkpoint import checkpoint_file, class_folder, load_state

    folders = [class_folder(ckpt)] if ckpt else (
        [os.path.join(output_dir, d) for d in sorted(os.listdir(output_dir))] if os.path.isdir(output_dir) else [])
    for folder in folders:
        if not (os.path.isdir(folder) and method.checkpoint.exists(folder)):
            continue
        path = checkpoint_file(folder, method.checkpoint.CHECKPOINT)
        try:
            if path.endswith(".json"):
                with open(path, encoding="utf-8") as handle:
                    record = json.load(handle)
            else:
                record = load_state(path)
        except (OSError, ValueError, UserError):
            continue
        return dict(record.get("config") or {}) if isinstance(record, dict) else {}
    return {}


def recorded_dataset(method, output_dir, ckpt=None):
    """The dataset format the trained models in ``output_dir`` (or ``ckpt``) were trained on (``mvtec`` when none
    says): what ``eval`` reads unless ``--dataset`` is given."""
    return _saved_options(method, output_dir, ckpt).get("dataset") or DEFAULT_FORMAT


def classes_to_evaluate(method, spec, data_dir, output_dir, ckpt=None, dataset=None):
    """``--cls`` classes for evaluation; a group keeps the classes that have a trained model."""
    checkpoint = method.checkpoint
    classes = classes_for(spec, data_dir, dataset_format(dataset))
    if ckpt and len(classes) > 1:
        raise UserError("--ckpt names one model: give one --cls with it")
    if is_group(spec) and not ckpt:
        classes = [c for c in classes if checkpoint.exists(class_dir(output_dir, c))]
        if not classes:
            raise UserError(f"no class of '{spec}' has a trained model in {output_dir}; train first")
    return classes


def _recorded_fold(method, args):
    """The fold the models were trained on, when the format has folds and ``--fold`` was not given."""
    if not dataset_format(args.dataset).folds:
        return None
    return _saved_options(method, args.output_dir, args.ckpt).get("fold")


# -- commands ----------------------------------------------------------------------------------------------------
def train(method, args):
    config_module, trainer = method.config, method.trainer
    config = cfg.build_config(config_module.Config, args.config, args)
    print(device_line(*configure(args.device, args.threads, config.seed)))
    check_fold(config.dataset, config.fold)
    classes = classes_for(args.cls, args.data_dir, dataset_format(config.dataset))
    if args.resume not in (None, "auto") and len(classes) > 1:
        raise UserError("--resume STATE names one class's state; use --resume without a path for several classes")
    print(f"{config.method_name}: {len(classes)} class(es) of {config.dataset} from {args.data_dir} -> "
          f"{args.output_dir}")

    def train_one(cls):
        configure(args.device, args.threads, config.seed)  # every class starts from the seed, as if run alone
        summary = trainer.train(config, cls, args.data_dir, args.output_dir, resume=args.resume)
        if not args.eval:
            return summary
        detector, model_config, thresholds = method.checkpoint.load(
            class_dir(args.output_dir, cls))
        return evaluate_and_report(method, detector, model_config, thresholds, cls, args)

    results = run_per_class(classes, train_one, "training")
    if args.eval:
        print_summary(results, config.method_name)
    return results


def evaluate_and_report(method, detector, config, thresholds, cls, args):
    pictures_dir = os.path.join(class_dir(args.output_dir, cls), "test_pictures") if getattr(
        args, "save_pic", False) else None
    metrics = evaluate_class(method, detector, config, thresholds, cls, args.data_dir, args.output_dir,
                             pictures_dir=pictures_dir, save_maps=getattr(args, "save_maps", None),
                             maps_dir=getattr(args, "maps_dir", None))
    print(f"[{cls}] " + ", ".join(f"{name} {_number(value)}" for name, value in shown(metrics).items()))
    return metrics


def evaluate(method, args):
    print(device_line(*configure(args.device, args.threads, 0)))
    args.dataset = args.dataset or recorded_dataset(method, args.output_dir, args.ckpt)
    _check_config_dataset(method, args)
    check_fold(args.dataset, args.fold if args.fold is not None else _recorded_fold(method, args))
    classes = classes_to_evaluate(method, args.cls, args.data_dir, args.output_dir, args.ckpt, args.dataset)
    names = set()

    def evaluate_one(cls):
        detector, config, thresholds, _ = load_trained(method, args, cls)
        names.add(config.method_name)
        return evaluate_and_report(method, detector, config, thresholds, cls, args)

    results = run_per_class(classes, evaluate_one, "evaluation")
    print_summary(results, "/".join(sorted(names)))
    return results


def _check_config_dataset(method, args):
    """An eval ``--config`` written for another dataset than the one read is a mistake, not a choice."""
    if getattr(args, "config", None):
        from_file, given = cfg.file_options(method.config.Config, args.config)
        if "dataset" in given and from_file.dataset != args.dataset:
            raise UserError(f"{args.config} is for --dataset {from_file.dataset}, but this evaluation reads "
                            f"{args.dataset} (the dataset the model was trained on, or --dataset)")


def predict(method, args):
    import paddle

    from common.deploy.predict import predict_images
    from common.evaluation.thresholds import resolve_thresholds

    print(device_line(*configure(args.device, args.threads, 0)))
    cls = single_class(args.cls, "predict")
    source = args.input or args.image
    if source is None and args.mode == "infer":
        source = os.path.join(args.data_dir, cls, "test")
    if not source:
        raise UserError("predict needs an image or a folder: --input IMAGE_OR_FOLDER")
    detector, config, thresholds, where = load_trained(method, args, cls)
    image_threshold, pixel_threshold = resolve_thresholds(thresholds, args.threshold, args.pixel_threshold,
                                                          where=f" in {where}")
    detector.eval()

    @paddle.no_grad()
    def run_batch(x):
        maps, scores = detector(paddle.to_tensor(x))
        return maps.numpy(), scores.numpy()

    out_dir = args.predict_dir or os.path.join(class_dir(args.output_dir, cls), "predictions")
    return predict_images(source, run_batch, method.data.preprocess(config), image_threshold,
                          pixel_threshold, out_dir, batch_size=config.eval_batch_size, save_pictures=args.save_pic,
                          original_resolution=detector.original_resolution)


COMMANDS = {"train": train, "eval": evaluate, "predict": predict, "infer": predict}


def run(method, mode=None, argv=None):
    """Parse and run one command; returns its result (used in-process by the tests)."""
    args = parse(method, mode, argv)
    return COMMANDS[args.mode](method, args)


def main(method, mode=None):
    """Entry point of the thin scripts: one ``error:`` line and exit 2 for a user mistake."""
    return main_guard(run)(method, mode)


# -- console output ----------------------------------------------------------------------------------------------
def ordered(metrics):
    """Metrics with the standard MVTec ones first (same columns for every method), then the paper's own."""
    first = {name: metrics[name] for name in STANDARD_METRICS if name in metrics}
    return {**first, **{k: v for k, v in metrics.items() if k not in first}}


def shown(metrics):
    """The metrics printed on the console: every one, except the MVTec LOCO AU-sPRO at limits other than 0.05
    (the limit the papers report; all five limits are in the results JSON)."""
    return {k: v for k, v in ordered(metrics).items() if not (k.startswith("au_spro_") and not k.endswith("@0.05"))}


def _number(value):
    return "n/a" if value is None else f"{value:.4f}"


def summary_table(results, title):
    """Plain-text table: one row per class, one column per metric, and the mean row."""
    if not results:
        return ""
    names = list(shown(next(iter(results.values()))))
    widths = [max(8, len(n)) + 2 for n in names]
    lines = [f"{title} results", f"{'class':<14}" + "".join(f"{n:>{w}}" for n, w in zip(names, widths))]
    for cls, metrics in results.items():
        lines.append(f"{cls:<14}" + "".join(f"{_number(metrics.get(n)):>{w}}" for n, w in zip(names, widths)))
    if len(results) > 1:
        means = []
        for name in names:
            values = [m.get(name) for m in results.values()]
            means.append(None if any(v is None for v in values) else float(np.mean(values)))
        lines.append(f"{'mean':<14}" + "".join(f"{_number(v):>{w}}" for v, w in zip(means, widths)))
    return "\n".join(lines)


def print_summary(results, title):
    if results:
        print("\n" + summary_table(results, title))
