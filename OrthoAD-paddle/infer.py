"""Paddle Inference on an exported OrthoAD / PaDiM model: maps, scores, calibrated labels, pictures.

    python infer.py --model_dir output/bottle/inference --input IMAGE_OR_FOLDER [--benchmark True]

Needs only the export folder (inference.json|.pdmodel, inference.pdiparams, infer_config.json).
"""
import argparse
import os

from common.errors import main_guard
from common.inference import BenchmarkTimer, Predictor, add_inference_args, load_infer_config
from common.predict import PREDICTIONS, predict_images
from common.runtime import set_threads
from common.transforms import Preprocess


@main_guard
def main(argv=None):
    parser = add_inference_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    config = load_infer_config(args.model_dir)
    preprocess = Preprocess(**config["preprocess"])
    thresholds = config["thresholds"]
    predictor = Predictor(args.model_dir, device=args.device, threads=args.threads, use_mkldnn=args.use_mkldnn)
    size = preprocess.output_size
    timer = BenchmarkTimer(config["method"], args.batch_size, [args.batch_size, 3, size, size], predictor)

    def run_batch(x):
        outputs = predictor.run(x)
        return next(o for o in outputs if o.ndim == 4), next(o for o in outputs if o.ndim == 1)

    def report(record):
        print(f"{record['image']}: score {record['score']:.4f} -> "
              f"{'ANOMALOUS' if record['is_anomalous'] else 'normal'}")

    predict_images(args.input, run_batch, preprocess, thresholds["image_threshold"], thresholds["pixel_threshold"],
                   args.output_dir, batch_size=args.batch_size, timer=timer, on_record=report)
    if args.benchmark:
        timer.report()
    print(f"predictions in {os.path.join(args.output_dir, PREDICTIONS)}")


if __name__ == "__main__":
    main()
