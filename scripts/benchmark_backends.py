#!/usr/bin/env python
"""Images/s of every method's exported detector under each backend (Paddle Inference with and without oneDNN,
ONNX Runtime, OpenVINO), at batch 1 and 8, on the same threads, in one run.

    python scripts/benchmark_backends.py [--threads 2] [--methods rd4ad,orthoad] [--repeats 5] [--out FILE.json]

Detectors are built at their default sizes with random weights (speed does not depend on the weights) and exported
with ``common.deploy.export.export_detector`` (Paddle graph + ONNX copy); every backend then scores the same random batch.
A backend whose package is missing is reported as such. OrthoAD is measured with ResNet-18, k = 100: its WRN50
k = 300 graph carries 1.5 GB of statistics, which ONNX files (protobuf, 2 GB limit) hold only barely. KDAD's graph
is its localisation (score and vanilla-gradient saliency map, the backward pass written with forward operators).
"""
import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import common  # noqa: E402,F401 - quiet Paddle start-up
from common.core.errors import UserError, main_guard  # noqa: E402


def rd4ad_detector():
    sys.path.insert(0, os.path.join(REPO, "RD4AD-paddle"))
    from rd4ad.config import Config
    from rd4ad.data import preprocess
    from rd4ad.detector import RD4ADDetector
    from rd4ad.model import ReverseDistillation

    config = Config(backbone_weights="random")
    model = ReverseDistillation(config.backbone, "random")
    return RD4ADDetector(model, config.image_size, config.sigma), preprocess(config), "RD4AD WRN50 256px"


def orthoad_detector():
    sys.path.insert(0, os.path.join(REPO, "OrthoAD-paddle"))
    from orthoad import checkpoint
    from orthoad.config import Config
    from orthoad.data import preprocess
    from orthoad.detector import OrthoADDetector
    from orthoad.model import MahalanobisScorer
    from orthoad.trainer import projection_for

    config = Config(backbone="resnet18", backbone_weights="random")
    positions = config.positions
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((positions, config.k)).astype(np.float32)
    factor = np.tile(np.eye(config.k, dtype=np.float32), (positions, 1, 1))
    embedder = checkpoint.build_embedder(config, projection_for(config))
    scorer = MahalanobisScorer(mean, factor, config.grid)
    return (OrthoADDetector(embedder, scorer, config.input_shape, config.sigma), preprocess(config),
            "OrthoAD R18 k100 256px")


def efficientad_detector(model_size="small"):
    sys.path.insert(0, os.path.join(REPO, "EfficientAD-paddle"))
    from efficientad.config import Config
    from efficientad.data import preprocess
    from efficientad.detector import build_detector

    config = Config(model_size=model_size, teacher_weights="random")
    return build_detector(model_size), preprocess(config), f"EfficientAD-{model_size[0].upper()} 256px"


def kdad_detector():
    sys.path.insert(0, os.path.join(REPO, "KDAD-paddle"))
    from kdad import checkpoint
    from kdad.config import Config
    from kdad.data import preprocess

    config = Config(backbone_weights="random")
    return (checkpoint.make_detector(checkpoint.build_network(config), config), preprocess(config),
            "KDAD VGG16 128px (vanilla)")


BUILDERS = {"rd4ad": rd4ad_detector, "orthoad": orthoad_detector, "efficientad": efficientad_detector,
            "efficientad_m": lambda: efficientad_detector("medium"), "kdad": kdad_detector}


def images_per_second(run, x, repeats):
    run(x)  # warm-up (graph optimisation, allocation)
    start = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return repeats * len(x) / (time.perf_counter() - start)


def runners(folder, threads):
    """(name, run function or the reason it is missing) for every backend."""
    from common.deploy.backends import make_runner

    for name, backend, mkldnn in (("paddle+oneDNN", "paddle", True), ("paddle", "paddle", False),
                                  ("onnxruntime", "onnxruntime", None), ("openvino", "openvino", None)):
        try:
            yield name, make_runner(folder, backend, "cpu", threads, mkldnn).run
        except UserError as exc:
            yield name, str(exc)


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(BUILDERS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (after one warm-up)")
    parser.add_argument("--out", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    from common.core.files import atomic_write_json
    from common.core.runtime import configure
    from common.deploy.export import export_detector

    configure("cpu", args.threads, 0)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; images/s (higher is "
          f"better), {args.repeats} timed calls after a warm-up")
    rows = []
    for method in args.methods.split(","):
        if method not in BUILDERS:
            raise UserError(f"unknown method '{method}'; choose from {', '.join(BUILDERS)}")
        detector, preprocess, label = BUILDERS[method]()
        with tempfile.TemporaryDirectory() as folder:
            export_detector(detector, preprocess, {"method": method}, folder, check=False, formats=("paddle", "onnx"))
            height, width = preprocess.output_shape
            for name, run in runners(folder, args.threads):
                for batch in batches:
                    if isinstance(run, str):
                        rows.append({"model": label, "backend": name, "batch": batch, "images_per_s": None,
                                     "note": run})
                        continue
                    x = np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)
                    rows.append({"model": label, "backend": name, "batch": batch,
                                 "images_per_s": round(images_per_second(run, x, args.repeats), 2)})
                    print(f"{label:<24} {name:<14} batch {batch}: {rows[-1]['images_per_s']:8.2f} images/s",
                          flush=True)
    print("\n| model | backend | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("|---|---|" + "---:|" * len(batches))
    for label in dict.fromkeys(r["model"] for r in rows):
        for name in dict.fromkeys(r["backend"] for r in rows if r["model"] == label):
            cells = [r for r in rows if r["model"] == label and r["backend"] == name]
            values = [("n/a" if r["images_per_s"] is None else f"{r['images_per_s']:.2f}") for r in cells]
            print(f"| {label} | {name} | " + " | ".join(values) + " |")
    if args.out:
        atomic_write_json(args.out, {"threads": args.threads, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
