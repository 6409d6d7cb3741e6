"""Export a fitted class model as one static graph: image -> (anomaly map, score), for Paddle Inference.

    python export_model.py --category bottle --output_dir output [--save_inference_dir output/bottle/inference]

Backbone, projection W, means and precision factors are parameters of the graph; preprocessing and thresholds
go to ``infer_config.json`` next to it, so infer.py needs nothing else.
"""
import os

import common  # noqa: F401 - before paddle: quiet start-up
import numpy as np
import paddle

from common.errors import UserError, main_guard
from common.inference import Predictor, export_static, save_infer_config
from common.runtime import configure
from orthoad.options import build_parser, parse_args
from orthoad.trainer import load_model, result_method_name


def export(folder, save_dir, backbone_weights=None, check=True):
    """Export the model of ``folder`` to ``save_dir``; returns (model file, max |exported − dygraph| of the map)."""
    model, config, thresholds = load_model(folder, backbone_weights)
    size = config["preprocess"]["crop"] or config["preprocess"]["resize"]
    spec = [paddle.static.InputSpec([None, 3, size, size], "float32", name="x")]
    model_file = export_static(model, spec, os.path.join(save_dir, "inference"))
    save_infer_config(save_dir, {
        "method": result_method_name(config["method"]), "cls": config["cls"], "arch": config["arch"],
        "k": config["k"], "preprocess": config["preprocess"], "thresholds": thresholds})
    difference = None
    if check:
        images = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
        with paddle.no_grad():
            expected = model(paddle.to_tensor(images))[0].numpy()
        exported = _map_output(Predictor(save_dir, threads=None).run(images))
        difference = float(np.abs(exported - expected).max() / max(np.abs(expected).max(), 1e-12))
    return model_file, difference


def _map_output(outputs):
    """The (N, 1, S, S) map among the predictor outputs."""
    return next(o for o in outputs if o.ndim == 4)


@main_guard
def main(argv=None):
    parser = build_parser(__doc__.splitlines()[0])
    parser.add_argument("--save_inference_dir", default=None, help="default OUTPUT_DIR/CLASS/inference")
    parser.add_argument("--skip_check", action="store_true", help="do not compare exported and dygraph maps")
    args = parse_args(parser, argv)
    configure(args.device, args.threads, 0)
    if "," in args.cls or args.cls in ("all", "textures", "objects"):
        raise UserError("export_model.py exports one class: give --category CLASS")
    folder = os.path.join(args.output_dir, args.cls)
    save_dir = args.save_inference_dir or os.path.join(folder, "inference")
    model_file, difference = export(folder, save_dir, args.backbone_weights, check=not args.skip_check)
    print(f"exported {model_file}")
    if difference is not None:
        print(f"exported vs dygraph map: max relative difference {difference:.2e}")
        if difference > 1e-4:
            raise UserError(f"exported map differs from dygraph by {difference:.2e} (> 1e-4)")


if __name__ == "__main__":
    main()
