"""``export_model.py`` of every method folder: a trained class model -> one static graph + ``infer_config.json``.

The graph is the method's detector layer, ``normalised images (N,3,S,S) -> (anomaly map (N,1,S,S), score (N,))``,
with everything inside (networks, statistics as buffers, map post-processing). ``infer_config.json`` beside it makes
the folder self-describing: preprocessing, thresholds, the method's configuration and how to run it, so ``infer.py``
needs nothing else. After saving, the graph is run once through Paddle Inference on random input and compared with
the dygraph layer; a relative difference above ``tolerance`` is an error.
"""
import argparse
import os

import numpy as np

from . import config as cfg
from .cli import add_shared_args, single_class
from .commands import load_trained, method_module
from .errors import UserError, main_guard
from .inference import Predictor, export_static, save_infer_config
from .runtime import configure
from .thresholds import summary

INPUT_NAME = "x"
EXPORT_TOLERANCE = 1e-4


def export_detector(detector, preprocess, info, inference_dir, check=True, tolerance=EXPORT_TOLERANCE,
                    formats=("paddle",)):
    """Save ``detector`` and ``info`` (method, class, thresholds, config) to ``inference_dir``.

    Returns ``(model_file, {"paddle": relative difference to dygraph, "onnx": to Paddle} or None)``.
    ``detector.use_mkldnn`` (default True) is recorded, so a graph whose ops cannot run under oneDNN is run without
    it by ``infer.py``. ``"onnx"`` in ``formats`` adds ``inference.onnx`` (paddle2onnx), checked with ONNX Runtime
    against the Paddle graph. The sha256 of every file is recorded for ``infer.py`` to verify.
    """
    import paddle

    from .backends import ONNX_FILE, OnnxRuntimeRunner, export_onnx, file_digests
    from .inference import find_model_files

    size = preprocess.output_size
    spec = [paddle.static.InputSpec([None, 3, size, size], "float32", name=INPUT_NAME)]
    model_file = export_static(detector, spec, os.path.join(inference_dir, "inference"))
    if "onnx" in formats:
        export_onnx(*find_model_files(inference_dir), inference_dir)
    elif os.path.exists(os.path.join(inference_dir, ONNX_FILE)):
        os.remove(os.path.join(inference_dir, ONNX_FILE))  # a stale copy of an earlier export
    use_mkldnn = bool(getattr(detector, "use_mkldnn", True))
    original_resolution = bool(getattr(detector, "original_resolution", False))
    files = [os.path.basename(p) for p in find_model_files(inference_dir)] + [ONNX_FILE]
    save_infer_config(inference_dir, dict(info, preprocess=preprocess.to_dict(), use_mkldnn=use_mkldnn,
                                          original_resolution=original_resolution,
                                          inputs=[f"{INPUT_NAME}: preprocessed images (N,3,{size},{size})"],
                                          outputs=["anomaly_map (N,1,S,S)", "score (N,)"],
                                          files=file_digests(inference_dir, files)))
    if not check:
        return model_file, None
    x = random_input(size, preprocess.normalize)
    detector.eval()
    expected = [t.numpy() for t in detector(paddle.to_tensor(x))]
    paddle_outputs = Predictor(inference_dir, device="cpu", use_mkldnn=use_mkldnn).run(x)
    differences = {"paddle": relative_difference(paddle_outputs, expected)}
    if "onnx" in formats:
        differences["onnx"] = relative_difference(OnnxRuntimeRunner(inference_dir).run(x), paddle_outputs)
    for name, difference in differences.items():
        if difference > tolerance:
            against = "the dygraph model" if name == "paddle" else "the Paddle graph"
            raise UserError(f"the exported {name} graph in {inference_dir} differs from {against} by "
                            f"{difference:.2e} (relative, > {tolerance:g})")
    return model_file, differences


def random_input(size, normalized=True, batch=2, seed=0):
    """A random batch in the range the detector sees: normalised images, or [0, 1] ones."""
    rng = np.random.default_rng(seed)
    shape = (batch, 3, size, size)
    return (rng.standard_normal(shape) if normalized else rng.random(shape)).astype(np.float32)


def relative_difference(outputs, reference):
    """Max relative |outputs - reference| over the map and the score (each relative to its own scale)."""
    return float(max(np.abs(np.asarray(o) - r).max() / max(np.abs(r).max(), 1e-12)
                     for o, r in zip(outputs, reference)))


def build_parser(package):
    config_module = method_module(package, "config")
    parser = argparse.ArgumentParser(description=f"Export a trained {config_module.Config.__doc__.splitlines()[0]}"
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


def run(package, argv=None):
    """Parse and export; returns the model file written."""
    args = build_parser(package).parse_args(argv)
    configure(args.device, args.threads, 0)
    if args.cls is None:  # the class of --ckpt's folder (OUTPUT_DIR/CLASS/...), else the default class
        args.cls = os.path.basename(os.path.dirname(os.path.abspath(args.ckpt))) if args.ckpt else "bottle"
    cls = single_class(args.cls, "export_model.py")
    detector, config, thresholds, where = load_trained(package, args, cls)
    model_dir = where if os.path.isdir(where) else os.path.dirname(os.path.abspath(where))
    inference_dir = args.inference_dir or os.path.join(model_dir, "inference")
    if thresholds is None:
        print(f"note: no thresholds.json in {model_dir}; infer.py will need --threshold")
    info = {"method": config.method_name, "class": cls, "thresholds": summary(thresholds),
            "config": cfg.to_dict(config)}
    preprocess = method_module(package, "data").preprocess(config)
    formats = ("paddle",) if args.format == "paddle" else ("paddle", "onnx")
    model_file, differences = export_detector(detector, preprocess, info, inference_dir, check=not args.no_check,
                                              formats=formats)
    print(f"exported {model_file}" + (" and inference.onnx" if "onnx" in formats else ""))
    if differences:
        print(f"check: exported vs dygraph on random input, max relative difference {differences['paddle']:.2e}"
              + (f"; ONNX Runtime vs Paddle {differences['onnx']:.2e}" if "onnx" in differences else ""))
    return model_file


def main(package):
    return main_guard(run)(package)
