"""``infer.py``: run an exported RD4AD graph with Paddle Inference on an image or a folder.

Writes the same outputs as ``main.py --mode predict`` (score, label, heatmap, mask, JSON lines); ``--benchmark``
prints preprocess / inference / postprocess milliseconds (AutoLog when installed, else a built-in timer).
"""
import argparse
import os

from common.inference import BenchmarkTimer, Predictor, add_inference_args, load_infer_config

from common.predict import predict_images

from .predict import resolve_thresholds
from .trainer import preprocess_for


def build_parser():
    parser = argparse.ArgumentParser(description="RD4AD inference with Paddle Inference",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_inference_args(parser)
    parser.add_argument("--threshold", type=float, default=None,
                        help="image threshold (default: the calibrated one stored at export)")
    parser.add_argument("--pixel_threshold", type=float, default=None,
                        help="pixel threshold for the mask (default: calibrated, else --threshold)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    info = load_infer_config(args.model_dir)
    image_threshold, pixel_threshold = resolve_thresholds(info.get("thresholds"), args.threshold,
                                                          args.pixel_threshold, where=f" in {args.model_dir}")
    predictor = Predictor(args.model_dir, device=args.device, threads=args.threads, use_mkldnn=args.use_mkldnn)
    image_size = int(info["image_size"])
    timer = None
    if args.benchmark:
        timer = BenchmarkTimer("RD4AD", args.batch_size, [3, image_size, image_size], predictor)
    records = predict_images(args.input, predictor.run, preprocess_for(image_size), image_threshold, pixel_threshold,
                             args.output_dir, batch_size=args.batch_size, timer=timer)
    if timer:
        timer.report()
    print(f"{len(records)} image(s) -> {os.path.join(args.output_dir, 'predictions.jsonl')}")
    return records
