"""``infer.py`` of every method folder: Paddle Inference on an exported folder, for an image or a folder of images.

The exported folder is self-describing (``infer_config.json``: method, class, preprocessing, thresholds, whether
oneDNN may run the graph), so this module knows no method. Outputs are those of ``main.py --mode predict``: one
console line per image, pictures and ``predictions.jsonl``; ``--benchmark`` prints the preprocess / inference /
postprocess milliseconds (AutoLog when installed, else a built-in timer with the same fields).

The earlier ports' spellings run as written: ``--model_file``/``--params_file`` (the folder holding them),
``--input_file``/``--img_path``, ``--save_path``, ``--data_dir DIR --cls CLS`` (images of DIR/CLS/test, model in
OUTPUT_DIR/CLS/inference) and ``--stats`` (ignored with a note: the statistics are inside the exported graph).
"""
import argparse
import os

from common.core.errors import UserError, main_guard
from common.core.runtime import device_line, resolve_device, set_threads
from common.data.transforms import Preprocess
from common.deploy.backends import BACKENDS, backend_files, make_runner, map_and_score
from common.deploy.benchmark import BenchmarkTimer
from common.deploy.folder import load_infer_config, verify_files
from common.deploy.predict import predict_images
from common.deploy.quantize import default_backend
from common.evaluation.thresholds import resolve_thresholds

from .args import DEFAULT_OUTPUT_DIR, add_runtime_args, str2bool


def build_parser():
    parser = argparse.ArgumentParser(allow_abbrev=False, description="Paddle Inference on an exported anomaly detector",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_dir", "--model_path", "--model_file", dest="model_dir", default=None,
                        help="exported folder (inference.json|.pdmodel + .pdiparams + infer_config.json) or a file "
                             "in it (default OUTPUT_DIR/CLS/inference)")
    parser.add_argument("--params_file", default=None, help="the .pdiparams file (its folder is the model folder)")
    parser.add_argument("--input", "--img_path", "--input_file", "--image_path", dest="input", default=None,
                        help="an image file or a folder (default DATA_DIR/CLS/test when --data_dir is given)")
    parser.add_argument("--data_dir", "--data_path", "--dataset_root", dest="data_dir", default=None,
                        help="with --cls: infer on the images of DATA_DIR/CLS/test")
    parser.add_argument("--cls", "--category", "--class_name", "--normal_class", dest="cls", default=None,
                        help="the class the exported model must be of (checked), and of --data_dir")
    parser.add_argument("--output_dir", "--save_dir", "--save_path", dest="output_dir", default=None,
                        help="pictures and predictions.jsonl (default MODEL_DIR/../infer)")
    parser.add_argument("--stats", default=None, help="accepted for the earlier OrthoAD port: not needed")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=None,
                        help="image threshold (default: the calibrated one stored at export)")
    parser.add_argument("--pixel_threshold", type=float, default=None,
                        help="pixel threshold of the mask (default: calibrated, else --threshold)")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="paddle (Paddle Inference), onnxruntime or openvino (both need export --format onnx); "
                             "default paddle for float32 exports, openvino for int8/bf16/fp16 ones")
    parser.add_argument("--use_mkldnn", "--enable_mkldnn", dest="use_mkldnn", type=str2bool, default=None,
                        help="oneDNN on CPU (default: on, unless the export says its graph cannot run with it)")
    parser.add_argument("--save_pic", type=str2bool, nargs="?", const=True, default=True, metavar="BOOL",
                        help="write heatmap, mask and contour pictures")
    parser.add_argument("--benchmark", type=str2bool, nargs="?", const=True, default=False,
                        help="print preprocess / inference / postprocess milliseconds")
    return add_runtime_args(parser)


def model_folder(args):
    """The exported folder named by ``--model_dir`` (a folder or a file in it), ``--params_file`` or the class."""
    path = args.model_dir or (os.path.dirname(args.params_file) if args.params_file else None)
    if path is None:
        path = os.path.join(DEFAULT_OUTPUT_DIR, args.cls or "bottle", "inference")
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    if not os.path.isdir(path) and not os.path.isfile(path):
        if os.path.isfile(os.path.join(folder, "infer_config.json")):
            print(f"note: {path} not found; using the model exported in {folder}")
        else:
            raise UserError(f"no exported model at {path}: run export_model.py first")
    return folder


def run(argv=None):
    args = build_parser().parse_args(argv)
    # ONNX Runtime and OpenVINO run on the CPU here: without --device they do not take Paddle's default GPU (without
    # --backend the folder decides: Paddle Inference for float32, a validated CPU backend for INT8, see below)
    device = resolve_device(args.device if args.device or args.backend in (None, "paddle") else "cpu")
    threads = set_threads(args.threads)
    print(device_line(device, threads))
    folder = model_folder(args)
    info = load_infer_config(folder)
    if args.cls and info.get("class") and args.cls != info["class"]:
        raise UserError(f"--cls {args.cls} contradicts the model exported in {folder} (class {info['class']})")
    if args.stats:
        print("note: --stats is not needed: the statistics are inside the exported graph")
    source = args.input
    if source is None and args.data_dir:
        source = os.path.join(args.data_dir, args.cls or info.get("class", ""), "test")
    if source is None:
        raise UserError("infer.py needs --input IMAGE_OR_FOLDER (or --data_dir DIR --cls CLASS)")
    image_threshold, pixel_threshold = resolve_thresholds(info.get("thresholds"), args.threshold,
                                                          args.pixel_threshold, where=f" in {folder}")
    use_mkldnn = info.get("use_mkldnn", True) if args.use_mkldnn is None else args.use_mkldnn
    if use_mkldnn and not info.get("use_mkldnn", True):
        print(f"note: the graph in {folder} cannot run with oneDNN ({info.get('method', 'this method')} exports a "
              "gradient computation); running it without oneDNN")
        use_mkldnn = False
    backend = args.backend or default_backend(info.get("precision", "fp32"), info.get("backends"))
    if backend != "paddle" and not args.device and device != "cpu":
        device = "cpu"
        print(f"note: the {info.get('precision')} folder runs on {backend}, on the CPU")
    verify_files(folder, info.get("files"), backend_files(folder, backend))
    predictor = make_runner(folder, backend, device, args.threads, use_mkldnn)
    preprocess = Preprocess(**info["preprocess"])
    timer = BenchmarkTimer(info.get("method", "model"), args.batch_size, [3, *preprocess.output_shape], predictor) \
        if args.benchmark else None
    out_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(folder)), "infer")
    records = predict_images(source, lambda x: map_and_score(predictor.run(x)), preprocess, image_threshold,
                             pixel_threshold, out_dir, batch_size=args.batch_size, timer=timer,
                             save_pictures=args.save_pic, original_resolution=info.get("original_resolution", False))
    if timer:
        timer.report()
    return records


def main():
    return main_guard(run)()
