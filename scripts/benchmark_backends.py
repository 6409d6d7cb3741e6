#!/usr/bin/env python
"""Images/s of every method's exported detector under each backend (Paddle Inference with and without oneDNN,
ONNX Runtime, OpenVINO), at batch 1 and 8, on the same threads, in one run; float32 and INT8 side by side.

    python scripts/benchmark_backends.py [--threads 2] [--methods rd4ad,orthoad] [--repeats 5] [--out FILE.json]
        [--precisions fp32,int8] [--data_dir /path/to/mvtec --cls bottle]

INT8 folders are made as ``export_model.py --precision int8`` makes them (calibrated on the normal training images
of ``--data_dir/--cls`` when given, else on random images); beside their times are their accuracy figures against
float32 on held-back normal images (lowest map correlation, largest score delta in float32 score standard
deviations) and the INT8/float32 speed ratio of the same backend. The load average (``/proc/loadavg``) before and
after each method is printed and recorded: other jobs on the machine disturb the times.

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


def runners(folder, threads, precision="fp32"):
    """(name, run function or the reason it is missing) for every backend (of ``precision``)."""
    from common.deploy.backends import make_runner
    from common.deploy.quantize import backends_for

    for name, backend, mkldnn in (("paddle+oneDNN", "paddle", True), ("paddle", "paddle", False),
                                  ("onnxruntime", "onnxruntime", None), ("openvino", "openvino", None)):
        if backend not in backends_for(precision):
            continue
        try:
            yield name, make_runner(folder, backend, "cpu", threads, mkldnn).run
        except UserError as exc:
            yield name, str(exc)


def load_average():
    """The 1, 5 and 15 minute load averages (``uptime``), as a string."""
    try:
        with open("/proc/loadavg", encoding="utf-8") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "n/a"


def reduced_for(precision, preprocess, args):
    """What :func:`common.deploy.export.export_detector` needs for a reduced-precision folder: calibration and
    held-back images (the class's normal training images with ``--data_dir``, else random ones)."""
    from common.deploy.export import Reduced, random_input

    if args.data_dir:
        from common.data.images import list_images, open_image

        paths = list_images(os.path.join(args.data_dir, args.cls, "train", "good"))
        order = np.random.default_rng(0).permutation(len(paths))
        images = np.stack([preprocess.image(open_image(paths[i])) for i in order[:args.calibration_images + 8]])
        images = images.astype(np.float32)
        calibration, holdout = images[:-8], images[-8:]
    else:
        calibration = random_input(preprocess.output_size, preprocess.normalize, batch=args.calibration_images)
        holdout = random_input(preprocess.output_size, preprocess.normalize, batch=8, seed=1)
    return Reduced(precision, calibration, holdout, accept_drop=True, threads=args.threads,
                   source=args.data_dir or "random images")


def accuracy_cell(folder, backend):
    """The accuracy figures of a reduced-precision folder on ``backend`` against float32, for the table ('' for
    float32)."""
    from common.deploy.folder import load_infer_config

    record = load_infer_config(folder).get("accuracy")
    if not record or backend not in record.get("backends", {}):
        return ""
    held = record["backends"][backend].get("held_back_normal")
    if held is None:
        return "outputs not finite"
    return (f"map corr min {held['map_correlation_min']:.4f}, "
            f"score delta max {held['score_delta_max_over_score_std']:.2f} std")


def print_table(rows, batches):
    """The Markdown table: one line per model, precision and backend, with the speed ratio to float32."""
    print("\n| model | precision | backend | " + " | ".join(f"batch {b}" for b in batches)
          + " | vs fp32 (batch " + ", ".join(map(str, batches)) + ") | accuracy vs fp32 |")
    print("|---|---|---|" + "---:|" * (len(batches) + 1) + "---|")
    for label in dict.fromkeys(r["model"] for r in rows):
        for precision, name in dict.fromkeys((r["precision"], r["backend"]) for r in rows if r["model"] == label):
            cells = [r for r in rows if r["model"] == label and r["precision"] == precision and r["backend"] == name]
            values = [("n/a" if r["images_per_s"] is None else f"{r['images_per_s']:.2f}") for r in cells]
            ratios = []
            for r in cells:
                base = next((b for b in rows if b["model"] == label and b["precision"] == "fp32"
                             and b["backend"] == name and b["batch"] == r["batch"]), None)
                ratios.append(f"{r['images_per_s'] / base['images_per_s']:.2f}x" if base and r["images_per_s"]
                              and base["images_per_s"] else "")
            accuracy = next((r.get("accuracy", "") for r in cells), "")
            print(f"| {label} | {precision} | {name} | " + " | ".join(values) + " | " + ", ".join(ratios)
                  + f" | {accuracy} |")


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(BUILDERS))
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (after one warm-up)")
    parser.add_argument("--out", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--precisions", default="fp32,int8", help="fp32, int8 (bf16/fp16 on CPUs that have them)")
    parser.add_argument("--data_dir", default=None, help="calibrate INT8 on the normal training images of "
                                                         "DATA_DIR/CLS (default: random images)")
    parser.add_argument("--cls", default="bottle")
    parser.add_argument("--calibration_images", type=int, default=32)
    args = parser.parse_args(argv)
    from common.core.files import atomic_write_json
    from common.core.runtime import configure
    from common.deploy.export import export_detector
    from common.deploy.quantize import check_precision, instruction_summary

    configure("cpu", args.threads, 0)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads; images/s (higher is "
          f"better), {args.repeats} timed calls after a warm-up")
    precisions = args.precisions.split(",")
    for precision in precisions:
        check_precision(precision)
    print(f"CPU: {instruction_summary()}; load average {load_average()}")
    rows, loads = [], {}
    for method in args.methods.split(","):
        if method not in BUILDERS:
            raise UserError(f"unknown method '{method}'; choose from {', '.join(BUILDERS)}")
        detector, preprocess, label = BUILDERS[method]()
        loads[label] = {"before": load_average()}
        with tempfile.TemporaryDirectory() as root:
            height, width = preprocess.output_shape
            for precision in precisions:
                folder = os.path.join(root, precision)
                reduced = None if precision == "fp32" else reduced_for(precision, preprocess, args)
                export_detector(detector, preprocess, {"method": method}, folder, check=False,
                                formats=("paddle", "onnx"), reduced=reduced)
                for name, run in runners(folder, args.threads, precision):
                    accuracy = accuracy_cell(folder, name)
                    for batch in batches:
                        row = {"model": label, "precision": precision, "backend": name, "batch": batch}
                        if isinstance(run, str):
                            rows.append(dict(row, images_per_s=None, note=run))
                            continue
                        x = np.random.default_rng(0).standard_normal((batch, 3, height, width)).astype(np.float32)
                        rows.append(dict(row, images_per_s=round(images_per_second(run, x, args.repeats), 2),
                                         accuracy=accuracy))
                        print(f"{label:<24} {precision:<5} {name:<14} batch {batch}: "
                              f"{rows[-1]['images_per_s']:8.2f} images/s {accuracy}", flush=True)
        loads[label]["after"] = load_average()
        print(f"{label}: load average {loads[label]['before']} before, {loads[label]['after']} after", flush=True)
    print_table(rows, batches)
    if args.out:
        atomic_write_json(args.out, {"threads": args.threads, "cpu": instruction_summary(), "loads": loads,
                                     "rows": rows})
    return rows


if __name__ == "__main__":
    main()
