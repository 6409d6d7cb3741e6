"""Speed of KDAD/MKD on this machine: detection and localisation latency at batch 1, and the training step, for
Paddle (dygraph and exported Paddle Inference graphs) against PyTorch eager of the same computation on the same
number of threads.

    python benchmark.py --threads 2 --output benchmark.json

- detection: expert + cloner forward and the per-image score over pool3..pool5 (official ``detection_test``);
- localisation: the same plus the input gradient of the score, the official ``convert_to_grayscale`` (sum of
  |grad| over channels, 99th-percentile clip) and the sigma-4 Gaussian (vanilla gradients, the default map);
- training step: expert forward without a graph, cloner forward in train mode, ``MseDirectionLoss(0.5)``,
  backward, Adam (official ``train.py``; batch 64 at 128 px).

The localisation graph computes the input gradient with forward operators (``kdad.model.chain_input_gradient``), so
both exported graphs run with and without oneDNN. The training step is the one ``main.py --mode train`` takes: the
frozen expert through ``common.training.frozen.FrozenForward`` (Paddle Inference with oneDNN), the cloner in dygraph.
Weights are random (speed does not depend on them). The PyTorch side is the official code's restatement in ``tests/test_kdad_reference.py``
(torch is never imported by the rest of this folder). Each framework runs in its own process: torch and Paddle
thread pools in one process slow each other down on a small machine.
"""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

from common.deploy.benchmark import timed  # imports no framework

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
LAMDA = 0.5


def inputs(args):
    rng = np.random.default_rng(0)
    x_infer = rng.random((1, 3, args.image_size, args.image_size), dtype=np.float32)
    x_train = rng.random((args.train_batch_size, 3, args.image_size, args.image_size), dtype=np.float32)
    return x_infer, x_train


# -- Paddle ----------------------------------------------------------------------------------------------------
def paddle_benchmarks(args):
    import paddle

    from common.core.inference import Predictor, export_static
    from common.core.runtime import configure
    from kdad.detector import KDADDetector
    from kdad.model import KDADNetwork

    configure("cpu", args.threads, 0)
    x_infer = inputs(args)[0]
    network = KDADNetwork(expert_weights=None)
    network.eval()
    detector = KDADDetector(network, lamda=LAMDA, image_size=args.image_size)
    detector.eval()

    class DetectionOnly(paddle.nn.Layer):
        """The detection path alone: images -> scores (the exported detector computes the map as well)."""

        def __init__(self, detector):
            super().__init__()
            self.detector = detector

        def forward(self, x):
            return self.detector.scores(x)

    results = {}
    images = paddle.to_tensor(x_infer)
    with paddle.no_grad():
        results["paddle_dygraph_detection_ms"] = 1000 * timed(lambda: detector.scores(images).numpy(), args.warmup,
                                                              args.iterations)
    results["paddle_dygraph_localization_ms"] = 1000 * timed(lambda: detector(images)[0].numpy(), args.warmup,
                                                             args.iterations)
    spec = [paddle.static.InputSpec([None, 3, args.image_size, args.image_size], "float32", name="x")]
    with tempfile.TemporaryDirectory() as folder:
        detection_dir, localization_dir = os.path.join(folder, "detection"), os.path.join(folder, "localization")
        export_static(DetectionOnly(detector), spec, os.path.join(detection_dir, "inference"))
        export_static(detector, spec, os.path.join(localization_dir, "inference"))
        for task, folder in (("detection", detection_dir), ("localization", localization_dir)):
            for use_mkldnn, name in ((True, "onednn"), (False, "no_onednn")):
                predictor = Predictor(folder, threads=args.threads, use_mkldnn=use_mkldnn)
                results[f"paddle_inference_{task}_{name}_ms"] = 1000 * timed(lambda: predictor.run(x_infer),
                                                                             args.warmup, args.iterations)

    results["paddle_train_step_s"] = paddle_train_step_s(args)
    results["paddle_version"] = paddle.__version__
    return results


def paddle_train_step_s(args):
    """Seconds per training step as ``main.py --mode train`` takes it: the frozen expert through
    ``common.training.frozen.FrozenForward`` (Paddle Inference, oneDNN), the cloner forward/backward in dygraph with its
    convolutions on oneDNN (``common.training.onednn.onednn_convolutions``), the trainer's
    Adam; median of ``args.train_steps`` steps after one warm-up."""
    import paddle

    from common.core.runtime import configure
    from common.training.frozen import FrozenForward
    from common.training.onednn import onednn_convolutions
    from common.training.optimizer import adam
    from kdad.loss import MseDirectionLoss
    from kdad.model import KDADNetwork, trainable_parameters

    configure("cpu", args.threads, 0)
    network = KDADNetwork(expert_weights=None)
    network.train()
    optimizer = adam(trainable_parameters(network.cloner), 1e-3)
    criterion = MseDirectionLoss(LAMDA)
    batch = paddle.to_tensor(inputs(args)[1])
    expert = FrozenForward(network.expert, (3, args.image_size, args.image_size), threads=args.threads)

    def train_step():
        loss = criterion(expert(batch), network.cloner(batch))
        optimizer.clear_grad()
        loss.backward()
        optimizer.step()
        float(loss)

    with onednn_convolutions(network.cloner):
        return timed(train_step, 1, args.train_steps)


# -- PyTorch ---------------------------------------------------------------------------------------------------
def torch_benchmarks(args):
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, TESTS_DIR)
    import test_kdad_reference as reference

    from common.networks.postprocess import gaussian_kernel1d, reflect_indices
    from torch_reference import TorchVGG16

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x_infer = inputs(args)[0]
    vgg = TorchVGG16().features.eval()
    for param in vgg.parameters():  # frozen expert (official: not in the optimiser)
        param.requires_grad_(False)
    cloner = reference.OfficialCloner().eval()
    results = {}
    images = torch.from_numpy(x_infer)

    def detection():
        with torch.no_grad():
            return reference.official_detection_scores(cloner(images), reference.official_expert(vgg, images),
                                                       LAMDA).numpy()

    results["torch_eager_detection_ms"] = 1000 * timed(detection, args.warmup, args.iterations)

    size = args.image_size
    kernel = torch.from_numpy(gaussian_kernel1d(4.0).astype(np.float32))
    index = torch.from_numpy(reflect_indices(size, (len(kernel) - 1) // 2))

    def blur(maps):  # SciPy's reflect border, separable 33-tap Gaussian (as the exported Paddle graph)
        maps = F.conv2d(maps.index_select(3, index), kernel.view(1, 1, 1, -1))
        return F.conv2d(maps.index_select(2, index), kernel.view(1, 1, -1, 1))

    def localization():  # vanilla gradients: grad of the score, convert_to_grayscale, Gaussian
        x = images.clone().requires_grad_(True)
        scores = reference.official_detection_scores(cloner(x), reference.official_expert(vgg, x), LAMDA)
        (gradients,) = torch.autograd.grad(scores.sum(), [x])
        gray = gradients.abs().sum(1).flatten(1)
        upper = torch.quantile(gray, 0.99, dim=1, keepdim=True)  # = np.percentile(., 99) (linear)
        lower = gray.min(1, keepdim=True).values
        gray = ((gray - lower) / (upper - lower)).clamp(0, 1).view(-1, 1, size, size)
        return blur(gray).numpy(), scores.detach().numpy()

    results["torch_eager_localization_ms"] = 1000 * timed(localization, args.warmup, args.iterations)
    # the official code's own path (per image, NumPy percentile, scipy.ndimage.gaussian_filter)
    results["torch_official_localization_ms"] = 1000 * timed(
        lambda: reference.official_gradients_localization(images, cloner, vgg, LAMDA), args.warmup, args.iterations)

    results["torch_eager_train_step_s"] = torch_train_step_s(args)
    results["torch_version"] = torch.__version__
    return results


def torch_train_step_s(args):
    """Seconds per step of the official ``train.py`` in PyTorch eager (expert under ``no_grad``, cloner in train
    mode, ``MseDirectionLoss``, Adam 1e-3); median of ``args.train_steps`` steps after one warm-up."""
    import torch

    sys.path.insert(0, TESTS_DIR)
    import test_kdad_reference as reference

    from torch_reference import TorchVGG16

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vgg = TorchVGG16().features.eval()
    for param in vgg.parameters():
        param.requires_grad_(False)
    cloner = reference.OfficialCloner().train()
    optimizer = torch.optim.Adam(cloner.parameters(), lr=1e-3)
    batch = torch.from_numpy(inputs(args)[1])

    def train_step():
        with torch.no_grad():
            expert_taps = reference.official_expert(vgg, batch)
        loss = reference.official_mse_direction_loss(cloner(batch), expert_taps, LAMDA)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return timed(train_step, 1, args.train_steps)


# -- driver ----------------------------------------------------------------------------------------------------
def run_side(side, argv):
    """One framework's numbers from a fresh process (``--side``), as a dict."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "side.json")
        env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--side", side,
                                 "--side_output", out], cwd=HERE, env=env)
        if result.returncode:
            raise SystemExit(f"error: the {side} benchmark failed (exit status {result.returncode})")
        with open(out, encoding="utf-8") as handle:
            return json.load(handle)


def ratio(torch_value, paddle_value):
    return torch_value / paddle_value if torch_value and paddle_value else float("nan")


def report(r, args):
    t = r.get
    lines = [f"KDAD benchmark: VGG16 expert + cloner B, {args.image_size}x{args.image_size}, {args.threads} threads, "
             f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores visible), "
             f"Paddle {t('paddle_version')}, torch {t('torch_version', 'not installed')}; median of "
             f"{args.iterations} runs (training: {args.train_steps} steps)",
             "batch 1, ms per image                  detection   localisation (vanilla gradients)",
             f"  Paddle Inference, oneDNN             {t('paddle_inference_detection_onednn_ms'):9.1f}   "
             f"{t('paddle_inference_localization_onednn_ms'):9.1f}",
             f"  Paddle Inference, no oneDNN          {t('paddle_inference_detection_no_onednn_ms'):9.1f}   "
             f"{t('paddle_inference_localization_no_onednn_ms'):9.1f}",
             f"  Paddle dygraph                       {t('paddle_dygraph_detection_ms'):9.1f}   "
             f"{t('paddle_dygraph_localization_ms'):9.1f}"]
    if "torch_eager_detection_ms" in r:
        lines += [f"  PyTorch eager                        {t('torch_eager_detection_ms'):9.1f}   "
                  f"{t('torch_eager_localization_ms'):9.1f}",
                  f"  PyTorch, official per-image code     {'':9s}   {t('torch_official_localization_ms'):9.1f}",
                  f"  speed-up, best exported vs PyTorch   "
                  f"{ratio(t('torch_eager_detection_ms'), min(t('paddle_inference_detection_onednn_ms'), t('paddle_inference_detection_no_onednn_ms'))):8.2f}x   "
                  f"{ratio(t('torch_eager_localization_ms'), min(t('paddle_inference_localization_onednn_ms'), t('paddle_inference_localization_no_onednn_ms'))):8.2f}x"]
    lines.append(f"training step (batch {args.train_batch_size}, expert forward + cloner forward/backward + Adam), "
                 "s/step:")
    lines.append(f"  Paddle (oneDNN convolutions)         {t('paddle_train_step_s'):9.2f}")
    if "torch_eager_train_step_s" in r:
        lines.append(f"  PyTorch eager                        {t('torch_eager_train_step_s'):9.2f}   "
                     f"(Paddle speed-up {ratio(t('torch_eager_train_step_s'), t('paddle_train_step_s')):.2f}x)")
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--threads", "--cpu_threads", dest="threads", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=20, help="timed batch-1 runs (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--train_steps", type=int, default=3, help="timed training steps (after 1 warm-up)")
    parser.add_argument("--skip_torch", action="store_true", help="do not time PyTorch even if installed")
    parser.add_argument("--output", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--side", choices=("paddle", "torch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side_output", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.side:  # a child process: one framework only
        sys.path.insert(0, REPO_ROOT)
        from common.core.runtime import keep_freed_memory

        keep_freed_memory()  # both sides (the Paddle side gets it from configure as well)
        results = paddle_benchmarks(args) if args.side == "paddle" else torch_benchmarks(args)
        with open(args.side_output, "w", encoding="utf-8") as handle:
            json.dump(results, handle)
        return results
    parent_argv = [a for a in argv if a not in ("--skip_torch",)]
    if args.output:
        index = parent_argv.index("--output")
        del parent_argv[index:index + 2]
    results = run_side("paddle", parent_argv)
    if not args.skip_torch and importlib.util.find_spec("torch") is not None:
        results.update(run_side("torch", parent_argv))
    text = report(results, args)
    print(text)
    if args.output:
        sys.path.insert(0, REPO_ROOT)
        from common.core.files import atomic_write_json

        atomic_write_json(args.output, {"config": {k: v for k, v in vars(args).items() if not k.startswith("side")},
                                        "results": results, "report": text})
    return results


if __name__ == "__main__":
    main()
