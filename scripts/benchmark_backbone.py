#!/usr/bin/env python
"""How CPU threads and the runtime change backbone speed: WRN50-2 -> layer3 on a batch of 256 px images.

    python scripts/benchmark_backbone.py [--arch wide_resnet50_2] [--batch 8] [--size 256] [--repeats 3]

Rows: Paddle dygraph with 1 thread (what Paddle does by default: it sets OMP_NUM_THREADS=1 at import) and with
every core (what this repository's entry points do through ``common.core.runtime.configure``); Paddle Inference with
and without oneDNN; PyTorch eager on the same number of threads when torch is installed. Random weights: speed does
not depend on them. Prints the median of ``--repeats`` timed runs after one warm-up.
"""
import argparse
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import common  # noqa: E402,F401 - warning filters before paddle is imported
from common.core.errors import main_guard  # noqa: E402
from common.core.inference import Predictor, export_static  # noqa: E402
from common.core.runtime import set_threads  # noqa: E402
from common.deploy.benchmark import timed  # noqa: E402
from common.networks.backbones import ResNetFeatures  # noqa: E402


def torch_seconds(arch, batch, threads, repeats):
    """Same network in PyTorch eager (torchvision when importable, else the test suite's reference ResNet)."""
    try:
        import torch
    except ImportError:
        return None, "torch not installed"
    torch.set_num_threads(threads)
    try:
        import torchvision

        net = getattr(torchvision.models, arch)()
        source = "torchvision"
    except Exception:  # noqa: BLE001 - torchvision missing or broken beside this torch build
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
        from torch_reference import TorchResNet  # test helper, torch only

        net = TorchResNet(arch)
        source = "reference ResNet from tests/"
    net.eval()
    x = torch.from_numpy(np.random.default_rng(0).random(batch).astype(np.float32))

    def run():
        with torch.no_grad():
            y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
            net.layer3(net.layer2(net.layer1(y)))

    return timed(run, 1, repeats), source


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="wide_resnet50_2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    shape = (args.batch, 3, args.size, args.size)
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    model = ResNetFeatures(args.arch, ("layer1", "layer2", "layer3"), weights=None)
    rows = []
    with paddle.no_grad():
        for threads in sorted({1, cores}):
            set_threads(threads)
            rows.append((f"Paddle dygraph, {threads} thread(s)",
                         timed(lambda: model(paddle.to_tensor(x)), 1, args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        export_static(model, [paddle.static.InputSpec([None, 3, args.size, args.size], "float32", "x")],
                      os.path.join(tmp, "inference"))
        for mkldnn in (True, False):
            predictor = Predictor(tmp, threads=cores, use_mkldnn=mkldnn)
            rows.append((f"Paddle Inference, {cores} threads, oneDNN {'on' if mkldnn else 'off'}",
                         timed(lambda: predictor.run(x), 1, args.repeats)))
    seconds, source = torch_seconds(args.arch, shape, cores, args.repeats)
    rows.append((f"PyTorch eager, {cores} threads ({source})", seconds))

    print(f"{args.arch} -> layer1..3, batch {args.batch} x {args.size}x{args.size}, {cores} cores "
          f"({platform.processor() or platform.machine()}), Paddle {paddle.__version__}, median of {args.repeats}")
    print("| runtime | seconds per batch | images/s |")
    print("|---|---:|---:|")
    for name, secs in rows:
        if secs is None:
            print(f"| {name} | – | – |")
        else:
            print(f"| {name} | {secs:.3f} | {args.batch / secs:.1f} |")


if __name__ == "__main__":
    main()
