"""``export_model.py`` of every method folder: a trained class model -> one static graph + ``infer_config.json``
(:func:`common.deploy.export.export_detector`)."""
import argparse
import os

from common.core import config as cfg
from common.core.errors import UserError, main_guard
from common.core.runtime import configure, device_line
from common.deploy import quantize
from common.deploy.export import Reduced, export_detector
from common.deploy.folder import load_infer_config
from common.evaluation.thresholds import summary

from .args import DEFAULT_DATA_DIR, add_shared_args, single_class
from .commands import load_trained


def build_parser(method):
    config_module = method.config
    parser = argparse.ArgumentParser(allow_abbrev=False, description=f"Export a trained {config_module.Config.__doc__.splitlines()[0]}"
                                                 " to a Paddle Inference graph",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_shared_args(parser, cls=None, data_dir=False, output_aliases=())
    cfg.add_config_args(parser, config_module.Config, cfg.EXPORT)
    parser.add_argument("--ckpt", "--checkpoint", "--model_path", dest="ckpt", default=None,
                        help="the trained model: a checkpoint file or its class folder (default OUTPUT_DIR/CLS)")
    parser.add_argument("--save_inference_dir", "--inference_dir", "--save_dir", dest="inference_dir", default=None,
                        help="where to write the graph (default: the model's class folder/inference)")
    parser.add_argument("--format", choices=("paddle", "onnx", "both"), default="paddle",
                        help="paddle: the Paddle Inference graph; onnx (= both): also inference.onnx for ONNX Runtime "
                             "and OpenVINO (needs paddle2onnx)")
    parser.add_argument("--no_check", "--skip_check", dest="no_check", action="store_true",
                        help="skip the exported vs dygraph comparison")
    reduced = parser.add_argument_group("reduced precision (README: Reduced precision)")
    reduced.add_argument("--precision", choices=quantize.PRECISIONS, default="fp32",
                         help="int8: post-training quantisation of the networks, calibrated on normal training "
                              "images; bf16/fp16: OpenVINO on a CPU that computes in them. Both write "
                              "inference.onnx too and check accuracy against float32")
    reduced.add_argument("--data_dir", "--data_path", "--dataset_root", dest="data_dir", default=None,
                         help="the dataset of the class (calibration images from its training images, accuracy on "
                              "its test set when present; default: the folder the model was trained on, as its "
                              f"thresholds.json records it, else {DEFAULT_DATA_DIR})")
    reduced.add_argument("--calibration_images", type=int, default=64,
                         help="normal training images the INT8 ranges are calibrated on")
    reduced.add_argument("--holdout_images", type=int, default=16,
                         help="other normal training images the outputs are compared on against float32")
    reduced.add_argument("--quantizer", choices=quantize.QUANTIZERS, default=quantize.DEFAULT_QUANTIZER,
                         help="the INT8 toolchain (README: what was measured)")
    reduced.add_argument("--max_image_auroc_drop", type=float, default=quantize.MAX_IMAGE_AUROC_DROP)
    reduced.add_argument("--max_au_pro_drop", type=float, default=quantize.MAX_AU_PRO_DROP)
    reduced.add_argument("--min_map_correlation", type=float, default=quantize.MIN_MAP_CORRELATION,
                         help="enforced when the class has no test set: lowest per-image map correlation with "
                              "float32 on the held-back images")
    reduced.add_argument("--accept_accuracy_drop", action="store_true",
                         help="write the export even when an accuracy bound is broken (the figures are recorded)")
    return parser


def recorded_data_dir(thresholds, cls):
    """The dataset folder the model was trained on, read back from the image paths ``thresholds.json`` records
    (``DATA_DIR/CLS/train/...``), or None."""
    for path in (thresholds or {}).get("calibration_images") or ():
        parts = os.path.abspath(path).split(os.sep)
        if cls in parts[:-1]:
            index = len(parts) - 1 - parts[::-1].index(cls)
            return os.sep.join(parts[:index]) or os.sep
    return None


def reduced_precision(method, args, config, cls, thresholds=None):
    """The :class:`common.deploy.export.Reduced` of ``--precision``: calibration and held-back images drawn (seeded)
    from the class's normal training images, and its test set when the dataset has one."""
    import numpy as np

    quantize.check_precision(args.precision, args.device)
    data_dir = args.data_dir or recorded_data_dir(thresholds, cls) or DEFAULT_DATA_DIR
    if args.calibration_images < 1 or args.holdout_images < 1:
        raise UserError("--calibration_images and --holdout_images must be at least 1")
    train, _ = method.data.training_split(config, data_dir, cls)
    order = np.random.default_rng(0).permutation(len(train))
    wanted = args.calibration_images + args.holdout_images
    if len(train) < 2:
        raise UserError(f"{cls} in {data_dir} has {len(train)} normal training image(s): calibration needs 2 or more")
    if len(train) < wanted:  # few images: the calibration set keeps its share, the held-back set gets the rest
        calibration_count = max(1, len(train) * args.calibration_images // wanted)
        print(f"note: {len(train)} normal training images: {calibration_count} calibrate, "
              f"{len(train) - calibration_count} are held back")
    else:
        calibration_count = args.calibration_images
    holdout_end = min(len(train), calibration_count + args.holdout_images)

    def images(indices):
        dataset = method.data.dataset([train[i] for i in indices], config)
        return np.stack([dataset[i][0] for i in range(len(dataset))]).astype(np.float32)

    test_images = test_dataset = None
    try:
        test_dataset = method.data.test_dataset(config, data_dir, cls)
    except UserError as exc:
        print(f"note: no test set ({exc}); the map correlation bound is enforced")
    if test_dataset is not None:
        test_images = np.stack([test_dataset[i][0] for i in range(len(test_dataset))]).astype(np.float32)
    bounds = {"max_image_auroc_drop": args.max_image_auroc_drop, "max_au_pro_drop": args.max_au_pro_drop,
              "min_map_correlation": args.min_map_correlation}
    return Reduced(args.precision, images(order[:calibration_count]) if args.precision == "int8" else None,
                   images(order[calibration_count:holdout_end]), test_images, test_dataset, bounds,
                   args.accept_accuracy_drop, args.quantizer, args.threads,
                   source=f"{data_dir} {cls} training images")


def run(method, argv=None):
    """Parse and export; returns the model file written."""
    args = build_parser(method).parse_args(argv)
    print(device_line(*configure(args.device, args.threads, 0)))
    if args.cls is None:  # the class of --ckpt's folder (OUTPUT_DIR/CLASS/...), else the default class
        args.cls = os.path.basename(os.path.dirname(os.path.abspath(args.ckpt))) if args.ckpt else "bottle"
    cls = single_class(args.cls, "export_model.py")
    detector, config, thresholds, where = load_trained(method, args, cls)
    model_dir = where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where))
    inference_dir = args.inference_dir or os.path.join(model_dir, "inference")
    if thresholds is None:
        print(f"note: no thresholds.json in {model_dir}; infer.py will need --threshold")
    info = {"method": config.method_name, "class": cls, "thresholds": summary(thresholds),
            "config": cfg.to_dict(config)}
    preprocess = method.data.preprocess(config)
    formats = ("paddle",) if args.format == "paddle" and args.precision == "fp32" else ("paddle", "onnx")
    reduced = None if args.precision == "fp32" else reduced_precision(method, args, config, cls, thresholds)
    model_file, differences = export_detector(detector, preprocess, info, inference_dir, check=not args.no_check,
                                              formats=formats, reduced=reduced)
    print(f"exported {model_file}" + (" and inference.onnx" if "onnx" in formats else "")
          + (f" ({args.precision})" if reduced else ""))
    if reduced:
        print(accuracy_line(load_infer_config(inference_dir)["accuracy"]))
    if differences:
        print(f"check: exported vs dygraph on random input, max relative difference {differences['paddle']:.2e}"
              + (f"; ONNX Runtime vs Paddle {differences['onnx']:.2e}" if "onnx" in differences else ""))
    return model_file


def accuracy_line(record):
    """One console line of a reduced-precision export's accuracy record."""
    if "held_back_normal" not in record:
        return "accuracy vs float32: outputs not finite (recorded in infer_config.json)"
    held = record["held_back_normal"]
    line = (f"accuracy vs float32: map correlation min {held['map_correlation_min']:.4f} on {held['images']} held-back "
            f"normal images, max score delta {held['score_delta_max_over_score_std']:.3f} score std")
    test = record.get("test_set")
    if test:
        line += "; test set " + ", ".join(f"{k} {test['float32'][k]:.4f} -> {test['reduced'][k]:.4f}"
                                           for k in test["float32"] if test["float32"][k] is not None)
    return line


def main(method):
    return main_guard(run)(method)
