"""``export_model.py``: one static graph, normalised images (N, 3, S, S) -> (anomaly map (N, 1, S, S), score (N,)).

Everything is inside the graph: teacher, OCBE, decoder, cosine maps, bilinear upsampling (align_corners=True),
sum, Gaussian smoothing (sigma 4, SciPy's reflect border) and the maximum. Next to ``inference.json`` (Paddle 3)
and ``inference.pdiparams`` the export writes ``infer_config.json``: image size, thresholds and the model
description that ``infer.py`` needs. After saving, the graph is run once through Paddle Inference on random
input and compared with the dygraph layer.
"""
import argparse
import os

import numpy as np
import paddle

from common.cli import add_common_args
from common.inference import Predictor, export_static, save_infer_config
from common.runtime import configure

from .anomaly_map import AnomalyScorer
from .predict import read_thresholds
from .trainer import CHECKPOINT, THRESHOLDS, class_output_dir, load_trained_model

INPUT_NAME = "x"


def export(model, meta, thresholds, inference_dir, check=True):
    """Export ``model`` with its scoring to ``inference_dir``; returns ``(model_file, max_abs_diff or None)``."""
    image_size = int(meta["image_size"])
    scorer = AnomalyScorer(model, image_size, sigma=float(meta["sigma"]))
    scorer.eval()
    spec = [paddle.static.InputSpec([None, 3, image_size, image_size], "float32", name=INPUT_NAME)]
    model_file = export_static(scorer, spec, os.path.join(inference_dir, "inference"))
    stored = {k: v for k, v in (thresholds or {}).items() if k != "calibration_images"}
    save_infer_config(inference_dir,
                      {"method": "RD4AD", "image_size": image_size, "inputs": ["x: normalised images (N,3,S,S)"],
                       "outputs": ["anomaly_map (N,1,S,S)", "score (N,)"], "thresholds": stored, "meta": meta})
    difference = check_export(scorer, inference_dir, image_size) if check else None
    return model_file, difference


def check_export(scorer, inference_dir, image_size, batch=2, seed=0):
    """Max |Paddle Inference - dygraph| over the map and the score on a random normalised batch."""
    x = np.random.default_rng(seed).standard_normal((batch, 3, image_size, image_size)).astype(np.float32)
    with paddle.no_grad():
        maps, scores = (t.numpy() for t in scorer(paddle.to_tensor(x)))
    static_maps, static_scores = Predictor(inference_dir, device="cpu", use_mkldnn=False).run(x)
    return float(max(np.abs(static_maps - maps).max(), np.abs(static_scores - scores).max()))


def build_parser():
    parser = argparse.ArgumentParser(description="Export a trained RD4AD model to a Paddle Inference graph",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_args(parser, cls="bottle", data_dir="../data/mvtec_anomaly_detection", output_dir="output",
                    modes=())
    parser.add_argument("--ckpt", "--checkpoint", dest="ckpt", default=None,
                        help=f"checkpoint (default OUTPUT/CLASS/{CHECKPOINT})")
    parser.add_argument("--backbone_weights", default=None, help="teacher weights, if not those of the checkpoint")
    parser.add_argument("--save_inference_dir", "--inference_dir", dest="inference_dir", default=None,
                        help="where to write the graph (default OUTPUT/CLASS/inference)")
    parser.add_argument("--no_check", action="store_true", help="skip the dygraph vs Paddle Inference check")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    configure(args.device, args.threads, args.seed)
    out_dir = class_output_dir(args.output_dir, args.cls)
    model, meta = load_trained_model(args.ckpt or os.path.join(out_dir, CHECKPOINT), args.backbone_weights)
    inference_dir = args.inference_dir or os.path.join(out_dir, "inference")
    thresholds = read_thresholds(os.path.join(out_dir, THRESHOLDS))
    if thresholds is None:
        print(f"note: no {THRESHOLDS} in {out_dir}; infer.py will need --threshold")
    model_file, difference = export(model, meta, thresholds, inference_dir, check=not args.no_check)
    print(f"exported {model_file}")
    if difference is not None:
        print(f"check: max |Paddle Inference - dygraph| on random input = {difference:.2e}")
    return model_file
