"""Speed of RD4AD on this machine: training step time and inference images/s, Paddle dygraph vs Paddle Inference,
and PyTorch eager on the same architecture when torch is installed.

    python benchmark.py --threads 2 --image_size 256 --train_batch_size 16 --output benchmark.json

Weights are random (speed does not depend on them). Inference is the whole scoring path: teacher, OCBE, decoder,
cosine maps, upsampling, sum, Gaussian smoothing and the maximum. A training step is forward, loss, backward and an
Adam step. The PyTorch model is the reference of the official architecture in ``tests/test_rd4ad_reference.py``
(teacher frozen, as here); torch is never imported by the rest of this folder. ``paddle_train_step_s`` and
``torch_train_step_s`` time the training step alone (``scripts/benchmark_training.py`` calls them).
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


TRAIN_WARMUP = 2  # the first steps grow the process's heap to its peak (common.core.runtime.keep_freed_memory)


# -- Paddle ----------------------------------------------------------------------------------------------------
def paddle_benchmarks(args, x_train, x_infer):
    import paddle

    from common.core.inference import Predictor, export_static
    from common.core.runtime import configure
    from rd4ad.detector import RD4ADDetector
    from rd4ad.model import ReverseDistillation

    configure("cpu", args.threads, 0)
    results = {"paddle_train_step_s": paddle_train_step_s(args, x_train)}
    model = ReverseDistillation(args.backbone, "random")
    scorer = RD4ADDetector(model, args.image_size)
    scorer.eval()
    images = paddle.to_tensor(x_infer)

    def dygraph_infer():
        with paddle.no_grad():
            amap, score = scorer(images)
            score.numpy()

    results["paddle_dygraph_infer_images_per_s"] = len(x_infer) / timed(dygraph_infer, 2, args.infer_iters)

    with tempfile.TemporaryDirectory() as folder:
        spec = [paddle.static.InputSpec([None, 3, args.image_size, args.image_size], "float32", name="x")]
        export_static(scorer, spec, os.path.join(folder, "inference"))
        predictor = Predictor(folder, device="cpu", threads=args.threads, use_mkldnn=True)
        seconds = timed(lambda: predictor.run(x_infer), 2, args.infer_iters)
        results["paddle_inference_onednn_images_per_s"] = len(x_infer) / seconds
        run_without_onednn = plain_cpu_predictor(folder, args.threads)
        seconds = timed(lambda: run_without_onednn(x_infer), 2, args.infer_iters)
        results["paddle_inference_no_onednn_images_per_s"] = len(x_infer) / seconds
    return results


def paddle_train_step_s(args, x_train):
    """Seconds per training step of ``main.py --mode train`` (forward, loss, backward, the trainer's Adam) on the
    batch ``x_train``; median of ``args.train_steps`` steps after ``TRAIN_WARMUP``."""
    import paddle

    from common.training.frozen import FrozenForward
    from common.training.onednn import onednn_convolutions
    from common.training.optimizer import adam
    from rd4ad.config import Config
    from rd4ad.model import ReverseDistillation
    from rd4ad.trainer import StudentLoss

    config = Config(backbone=args.backbone, backbone_weights="random")
    model = ReverseDistillation(config.backbone, config.backbone_weights)
    optimizer = adam(model.trainable_parameters(), config.lr, config.beta1, config.beta2)  # as rd4ad/trainer.py
    batch = paddle.to_tensor(x_train)
    model.train()
    # as rd4ad/trainer.py: the frozen teacher in Paddle Inference with oneDNN, the student's convolutions on oneDNN
    teacher = FrozenForward(model.teacher, tuple(x_train.shape[1:]), threads=args.threads)
    step_loss = StudentLoss(model, config.loss)

    def train_step():
        loss = step_loss(*teacher(batch))
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        float(loss)

    with onednn_convolutions(step_loss):
        seconds = timed(train_step, TRAIN_WARMUP, args.train_steps)
    optimizer.clear_grad()
    return seconds


def plain_cpu_predictor(folder, threads):
    """A Paddle Inference run function with oneDNN explicitly disabled (Paddle 3 enables it by default)."""
    from paddle import inference

    from common.core.inference import find_model_files

    config = inference.Config(*find_model_files(folder))
    config.disable_gpu()
    config.disable_mkldnn()
    config.set_cpu_math_library_num_threads(threads)
    config.switch_ir_optim(True)
    config.disable_glog_info()
    predictor = inference.create_predictor(config)
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handles = [predictor.get_output_handle(name) for name in predictor.get_output_names()]

    def run(x):
        input_handle.copy_from_cpu(x)
        predictor.run()
        return [handle.copy_to_cpu() for handle in output_handles]

    return run


# -- PyTorch ---------------------------------------------------------------------------------------------------
def torch_benchmarks(args, x_train, x_infer):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, TESTS_DIR)
    import test_rd4ad_reference as reference

    from common.networks.postprocess import gaussian_kernel1d, reflect_indices

    torch.set_num_threads(args.threads)
    results = {"torch_eager_train_step_s": torch_train_step_s(args, x_train)}
    teacher, ocbe, decoder = reference.build_torch_reference(args.backbone, seed=0)

    kernel = torch.from_numpy(gaussian_kernel1d(4.0).astype(np.float32))
    radius = (len(kernel) - 1) // 2
    index = torch.from_numpy(reflect_indices(args.image_size, radius))

    def blur(maps):  # SciPy's reflect border, separable 33-tap Gaussian (as the exported Paddle graph)
        maps = F.conv2d(maps.index_select(3, index), kernel.view(1, 1, 1, -1))
        return F.conv2d(maps.index_select(2, index), kernel.view(1, 1, -1, 1))

    ocbe.eval()
    decoder.eval()
    images = torch.from_numpy(x_infer)

    def infer():
        with torch.no_grad():
            features = teacher(images)
            amap = blur(reference.torch_summed_map(features, decoder(ocbe(features)), args.image_size)[:, None])
            amap.flatten(1).max(1).values.numpy()

    results["torch_eager_infer_images_per_s"] = len(x_infer) / timed(infer, 2, args.infer_iters)
    results["torch_version"] = torch.__version__
    return results


def torch_train_step_s(args, x_train):
    """Seconds per training step of the official ``main.py`` in PyTorch eager (teacher frozen; Adam over OCBE and
    decoder, lr 0.005, betas (0.5, 0.999)) on the same batch; median of ``args.train_steps`` steps after
    ``TRAIN_WARMUP``."""
    import torch

    sys.path.insert(0, TESTS_DIR)
    import test_rd4ad_reference as reference

    torch.set_num_threads(args.threads)
    teacher, ocbe, decoder = reference.build_torch_reference(args.backbone, seed=0)
    for param in teacher.parameters():
        param.requires_grad_(False)
    optimizer = torch.optim.Adam(list(decoder.parameters()) + list(ocbe.parameters()), lr=0.005,
                                 betas=(0.5, 0.999))
    batch = torch.from_numpy(x_train)
    ocbe.train()
    decoder.train()

    def train_step():
        features = teacher(batch)
        loss = reference.torch_flattened_loss(features, decoder(ocbe(features)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return timed(train_step, TRAIN_WARMUP, args.train_steps)


def report(results, args):
    lines = [f"RD4AD benchmark: {args.backbone}, {args.image_size}x{args.image_size}, {args.threads} threads, "
             f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores visible)",
             f"training step (batch {args.train_batch_size}, forward + loss + backward + Adam), s/step:",
             f"  Paddle              {results['paddle_train_step_s']:.2f}  (oneDNN convolutions)"]
    if "torch_eager_train_step_s" in results:
        lines.append(f"  PyTorch eager       {results['torch_eager_train_step_s']:.2f}")
    lines.append(f"inference (batch {args.infer_batch_size}, map + score), images/s:")
    lines.append(f"  Paddle dygraph      {results['paddle_dygraph_infer_images_per_s']:.2f}")
    lines.append(f"  Paddle Inference    {results['paddle_inference_onednn_images_per_s']:.2f}  (oneDNN)")
    lines.append(f"  Paddle Inference    {results['paddle_inference_no_onednn_images_per_s']:.2f}  (no oneDNN)")
    if "torch_eager_infer_images_per_s" in results:
        lines.append(f"  PyTorch eager       {results['torch_eager_infer_images_per_s']:.2f}  "
                     f"(torch {results['torch_version']})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--threads", "--cpu_threads", dest="threads", type=int, default=2)
    parser.add_argument("--train_batch_size", type=int, default=16)
    parser.add_argument("--train_steps", type=int, default=2, help="timed training steps (after 2 warm-ups)")
    parser.add_argument("--infer_batch_size", type=int, default=1)
    parser.add_argument("--infer_iters", type=int, default=10, help="timed inference batches (after 2 warm-ups)")
    parser.add_argument("--skip_torch", action="store_true", help="do not time PyTorch even if installed")
    parser.add_argument("--output", default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x_train = rng.standard_normal((args.train_batch_size, 3, args.image_size, args.image_size)).astype(np.float32)
    x_infer = rng.standard_normal((args.infer_batch_size, 3, args.image_size, args.image_size)).astype(np.float32)
    results = paddle_benchmarks(args, x_train, x_infer)
    if not args.skip_torch and importlib.util.find_spec("torch") is not None:
        results.update(torch_benchmarks(args, x_train, x_infer))
    text = report(results, args)
    print(text)
    if args.output:
        atomic_write_json(args.output, {"config": vars(args), "results": results, "report": text})
    return results


if __name__ == "__main__":
    main_guard(main)()
