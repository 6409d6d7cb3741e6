"""Paddle Inference on an exported OrthoAD / PaDiM model: maps, scores, calibrated labels, pictures.

    python infer.py --model_dir output/bottle/inference --input IMAGE_OR_FOLDER [--benchmark True]

Needs only the export folder (inference.json|.pdmodel, inference.pdiparams, infer_config.json).
"""
import os

import numpy as np

from common.errors import main_guard
from common.inference import BenchmarkTimer, Predictor, add_inference_args, batches, load_infer_config
from common.mvtec import image_paths, open_image
from common.runtime import set_threads
from common.transforms import Preprocess
from common.visualize import append_jsonl, save_prediction

@main_guard
def main(argv=None):
    import argparse

    parser = add_inference_args(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    config = load_infer_config(args.model_dir)
    preprocess = Preprocess(**config["preprocess"])
    thresholds = config["thresholds"]
    predictor = Predictor(args.model_dir, device=args.device, threads=args.threads, use_mkldnn=args.use_mkldnn)
    size = preprocess.output_size
    timer = BenchmarkTimer(config["method"], args.batch_size, [args.batch_size, 3, size, size], predictor)
    paths = image_paths(args.input)
    jsonl = os.path.join(args.output_dir, "predictions.jsonl")
    if os.path.exists(jsonl):
        os.remove(jsonl)
    for batch in batches(paths, args.batch_size):
        timer.start()
        pictures = [open_image(p) for p in batch]
        images = np.stack([preprocess.image(p) for p in pictures])
        timer.stamp()
        outputs = predictor.run(images)
        timer.stamp()
        maps = next(o for o in outputs if o.ndim == 4)[:, 0]
        scores = next(o for o in outputs if o.ndim == 1)
        for path, picture, amap, score in zip(batch, pictures, maps, scores):
            name = os.path.splitext(os.path.basename(path))[0]
            record = save_prediction(args.output_dir, name, preprocess.resize_image(picture), amap, score,
                                     thresholds["image_threshold"], thresholds["pixel_threshold"], source=path)
            append_jsonl(jsonl, record)
            print(f"{path}: score {score:.4f} -> {'ANOMALOUS' if record['is_anomalous'] else 'normal'}")
        timer.end(stamp=True)
    if args.benchmark:
        timer.report()
    print(f"predictions in {jsonl}")


if __name__ == "__main__":
    main()
