"""``export_model.py`` of every method folder: a trained class model -> one static graph + ``infer_config.json``
(:func:`common.deploy.export.export_detector`)."""
import argparse
import os

from common.core import config as cfg
from common.core.errors import main_guard
from common.core.runtime import configure, device_line
from common.deploy.export import export_detector
from common.evaluation.thresholds import summary

from .args import add_shared_args, single_class
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
    return parser


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
    formats = ("paddle",) if args.format == "paddle" else ("paddle", "onnx")
    model_file, differences = export_detector(detector, preprocess, info, inference_dir, check=not args.no_check,
                                              formats=formats)
    print(f"exported {model_file}" + (" and inference.onnx" if "onnx" in formats else ""))
    if differences:
        print(f"check: exported vs dygraph on random input, max relative difference {differences['paddle']:.2e}"
              + (f"; ONNX Runtime vs Paddle {differences['onnx']:.2e}" if "onnx" in differences else ""))
    return model_file


def main(method):
    return main_guard(run)(method)
