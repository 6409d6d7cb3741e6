"""Speed of EfficientAD on this machine: batch-1 inference at 256 px (teacher + student + autoencoder + maps, the
exported graph under Paddle Inference with oneDNN, and Paddle dygraph) against PyTorch eager on the same threads,
for EfficientAD-S and -M; and the time of one training step (teacher, student, autoencoder, hard loss, Adam) as
the trainer takes it (teacher in Paddle Inference, convolutions on oneDNN) against the same step in PyTorch.

    python benchmark.py --threads 2 --iterations 20 --output benchmark.json

Weights are random (speed does not depend on them). The PyTorch networks and step are the reference statements of
``tests/test_efficientad_reference.py`` (nelson1425 ``common.py`` / ``efficientad.py``); torch is never imported by
the rest of this folder. Both training steps run without a penalty image (the default ``penalty_dir``), as the
reference does when it has no ImageNet path; ``paddle_train_step_ms`` and ``torch_train_step_ms`` time them alone
(``scripts/benchmark_training.py`` calls them).
"""
import argparse
import importlib.util
import os
import platform
import sys
import tempfile

import numpy as np

from common.core.errors import main_guard
from common.core.files import atomic_write_json
from common.deploy.benchmark import timed

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.join(os.path.dirname(HERE), "tests")


def paddle_benchmarks(size, args, x):
    import paddle

    from common.core.inference import Predictor, export_static
    from efficientad.detector import build_detector

    paddle.seed(0)
    detector = build_detector(size)
    detector.eval()
    tensor = paddle.to_tensor(x)
    results = {}
    with paddle.no_grad():
        results["paddle_dygraph_infer_ms"] = 1000 * timed(lambda: detector(tensor)[1].numpy(), args.warmup,
                                                          args.iterations)
    with tempfile.TemporaryDirectory() as folder:
        export_static(detector, [paddle.static.InputSpec([None, 3, 256, 256], "float32", name="x")],
                      os.path.join(folder, "inference"))
        predictor = Predictor(folder, threads=args.threads, use_mkldnn=True)
        results["paddle_inference_onednn_ms"] = 1000 * timed(lambda: predictor.run(x), args.warmup,
                                                             args.iterations)
    results["paddle_train_step_ms"] = paddle_train_step_ms(size, x, max(2, args.iterations // 4))
    return results


def paddle_train_step_ms(size, x, steps):
    """Milliseconds per iteration of the trainer's loop (``efficientad.trainer.train_step``: all loss terms,
    backward, the trainer's Adam and StepLR) on the batch ``x`` and its row-flipped copy as the augmented image;
    median of ``steps`` after one warm-up."""
    import paddle

    from common.training.frozen import FrozenForward
    from efficientad.config import Config
    from efficientad.detector import build_detector
    from efficientad.trainer import build_optimizer, train_step

    paddle.seed(0)
    detector = build_detector(size)
    detector.train()
    optimizer, scheduler = build_optimizer(detector, Config(model_size=size))
    teacher = FrozenForward(detector.teacher, tuple(x.shape[1:]))  # as efficientad/trainer.py
    image_st, image_ae = paddle.to_tensor(x), paddle.to_tensor(x[:, :, ::-1].copy())
    return 1000 * timed(lambda: float(train_step(detector, optimizer, scheduler, image_st, image_ae,
                                                 teacher=teacher).total), 1, steps)


def _torch_reference():
    spec = importlib.util.spec_from_file_location("efficientad_reference",
                                                  os.path.join(TESTS_DIR, "test_efficientad_reference.py"))
    sys.path.insert(0, TESTS_DIR)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    return reference


def _torch_networks(reference, size):
    """Teacher, student and autoencoder of ``size`` in eval mode, with random weights."""
    build = reference.torch_pdn_small if size == "small" else reference.torch_pdn_medium
    return build(384).eval(), build(768).eval(), reference.torch_autoencoder(384).eval()


def torch_train_step_ms(size, x, steps, threads):
    """Milliseconds per iteration of the reference loop in PyTorch eager (nelson1425 ``efficientad.py``: Adam over
    student + autoencoder, lr 1e-4, weight decay 1e-5, StepLR) on the same images; median of ``steps`` after one
    warm-up."""
    import torch

    reference = _torch_reference()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    teacher, student, autoencoder = _torch_networks(reference, size)
    mean, std = torch.zeros(1, 384, 1, 1), torch.ones(1, 384, 1, 1)
    student.train()
    autoencoder.train()
    optimizer = torch.optim.Adam(list(student.parameters()) + list(autoencoder.parameters()), lr=1e-4,
                                 weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=66500, gamma=0.1)
    image_st, image_ae = torch.from_numpy(x), torch.from_numpy(x[:, :, ::-1].copy())

    def step():
        loss = reference.torch_train_terms(teacher, student, autoencoder, mean, std, image_st, image_ae, None,
                                           384)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        return float(loss.detach())

    return 1000 * timed(step, 1, steps)


def torch_benchmarks(size, args, x):
    try:
        import torch
    except ImportError:
        return {}
    reference = _torch_reference()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    teacher, student, autoencoder = _torch_networks(reference, size)
    mean, std = torch.zeros(1, 384, 1, 1), torch.ones(1, 384, 1, 1)
    image = torch.from_numpy(x)
    q = (0.0, 0.1, 0.0, 0.1)

    def infer():
        with torch.no_grad():
            combined = reference.torch_predict(image, teacher, student, autoencoder, mean, std, q=q)[0]
            upsampled = torch.nn.functional.interpolate(torch.nn.functional.pad(combined, (4, 4, 4, 4)), (256, 256),
                                                        mode="bilinear")
            return upsampled.amax(dim=(1, 2, 3)).numpy()

    results = {"torch_eager_infer_ms": 1000 * timed(infer, args.warmup, args.iterations)}
    results["torch_train_step_ms"] = torch_train_step_ms(size, x, max(2, args.iterations // 4), args.threads)
    return results


def run(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--output", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    from common.core.runtime import configure

    configure("cpu", args.threads, 0)
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
    rows = {}
    for size in args.sizes.split(","):
        rows[size] = dict(paddle_benchmarks(size, args, x), **torch_benchmarks(size, args, x))
        print(size, {k: round(v, 1) for k, v in rows[size].items()}, flush=True)
    print(f"\nbatch 1, 256 px, {args.threads} threads, {platform.machine()}, median of {args.iterations} runs "
          f"(training step: {max(2, args.iterations // 4)})\n")
    print("| model | exported + oneDNN ms | Paddle dygraph ms | PyTorch eager ms | speed-up vs PyTorch | "
          "train step Paddle ms | train step PyTorch ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for size, r in rows.items():
        torch_ms = r.get("torch_eager_infer_ms")
        print(f"| EfficientAD-{size[0].upper()} | {r['paddle_inference_onednn_ms']:.1f} | "
              f"{r['paddle_dygraph_infer_ms']:.1f} | {torch_ms or float('nan'):.1f} | "
              f"{(torch_ms or float('nan')) / r['paddle_inference_onednn_ms']:.2f}x | "
              f"{r['paddle_train_step_ms']:.0f} | {r.get('torch_train_step_ms', float('nan')):.0f} |")
    if args.output:
        atomic_write_json(args.output, {"threads": args.threads, "rows": rows})
    return rows


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    main_guard(run)()
