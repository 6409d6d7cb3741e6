"""Fit time and peak memory vs number of training images, and inference speed (dygraph vs Paddle Inference).

    python benchmark.py [--data_dir PATH --cls bottle] [--backbone_weights imagenet] > benchmark.txt

Every measurement runs in a fresh child process so that its peak resident memory (``ru_maxrss``) is its own. The
fit covers data loading, backbone, projection, streaming statistics and the Cholesky precision factors; the
baseline is the child's resident memory after building the backbone, before the first batch. Inference times
batch-1 calls after one warm-up call. Backbone weights do not change time or memory, so random weights are fine.

``paddle_fit_s`` and ``torch_fit_s`` time the fit alone on images already in memory, against a PyTorch statement of
the official jnhwkim/orthoad fit (``scripts/benchmark_training.py`` calls them).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

SETTINGS = (("wide_resnet50_2", 300), ("resnet18", 100))
IMAGE_COUNTS = (50, 200)
TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb():
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) / 1024.0 for line in handle if line.startswith("VmRSS:"))


def child_fit(args):
    """Fit on the first ``n`` training images; print JSON with seconds and memory; optionally save the model."""
    from common.core.runtime import configure
    from common.data.loader import Loader
    from common.data.readers.mvtec import train_samples
    from orthoad import checkpoint
    from orthoad.config import Config
    from orthoad.data import dataset
    from orthoad.trainer import fit_statistics, projection_for

    configure("cpu", args.threads, 0)
    config = Config(backbone=args.arch, k=args.k, backbone_weights=args.backbone_weights, batch_size=args.batch_size)
    samples = train_samples(args.data_dir, args.cls)[: args.n]
    projection = projection_for(config)
    embedder = checkpoint.build_embedder(config, projection)
    baseline = _rss_mb()
    start = time.time()
    loader = Loader(dataset(samples, config), config.batch_size)
    mean, factor, count = fit_statistics(embedder, loader, config.positions, stats_dtype="auto")
    seconds = time.time() - start
    report = {"arch": args.arch, "k": args.k, "images": count, "fit_seconds": round(seconds, 1),
              "baseline_rss_mb": round(baseline), "peak_rss_mb": round(_peak_mb()),
              "statistics_mb": round((factor.nbytes + mean.nbytes) / 2 ** 20)}
    if args.save:
        detector = checkpoint.build_detector(config, projection, mean, factor)
        checkpoint.save(args.save, detector, config, {"num_fit_images": count})
    print(json.dumps(report))


def paddle_fit_s(arch, k, images, batch_size):
    """Seconds of the fit ``main.py --mode train`` runs (``orthoad.trainer.fit_statistics``: embedding, streaming
    statistics, precision factors) over ``images`` (N, 3, S, S) in batches, timed once after a warm-up batch through
    the embedding; image decoding is left out (the PyTorch side has none either)."""
    import paddle

    from orthoad import checkpoint
    from orthoad.config import Config
    from orthoad.trainer import fit_statistics, projection_for

    config = Config(backbone=arch, k=k, backbone_weights="random", batch_size=batch_size,
                    image_size=int(images.shape[-1]))
    embedder = checkpoint.build_embedder(config, projection_for(config))
    batches = [[paddle.to_tensor(images[i:i + batch_size])] for i in range(0, len(images), batch_size)]
    with paddle.no_grad():
        embedder(batches[0][0]).numpy()
    start = time.perf_counter()
    fit_statistics(embedder, batches, config.positions, config.eps, config.unbiased, config.stats_dtype)
    return time.perf_counter() - start


def torch_fit_s(arch, k, images, batch_size, threads, eps=0.01):
    """Seconds of the official fit stated in PyTorch eager (jnhwkim/orthoad ``train.py``): layer1-3 of the frozen
    ResNet, nearest-upsampled to the layer1 grid and concatenated, ``z = einsum('bchw,cd->bdhw', f, W)`` with W from
    ``nn.init.orthogonal_``; per position the sums of z and z zᵀ in float32; then C = Σzzᵀ/N - μμᵀ + eps·I and
    ``torch.inverse``. Same images and batches as :func:`paddle_fit_s`, timed once after a warm-up batch.

    The inverse is taken one position at a time: batched ``torch.inverse`` of (n, 300, 300) float32 or float64 on 2
    threads (torch 2.13 CPU, MKL 2024.2, this machine) raises "Pivots given to lu_solve must all be greater or
    equal to 1" or returns matrices far from the inverse; one matrix per call is correct (same LU, same flops)."""
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, TESTS_DIR)
    from torch_reference import TorchResNet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    backbone = TorchResNet(arch).eval()

    def embed(x):
        x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
        l1 = backbone.layer1(x)
        l2 = backbone.layer2(l1)
        l3 = backbone.layer3(l2)
        return torch.cat([l1, F.interpolate(l2, scale_factor=2), F.interpolate(l3, scale_factor=4)], dim=1)

    batches = [torch.from_numpy(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    with torch.no_grad():
        channels = embed(batches[0]).shape[1]
        weight = torch.nn.init.orthogonal_(torch.empty(channels, k))
        start = time.perf_counter()
        count, sums, outer = 0, None, None
        for x in batches:
            z = torch.einsum("bchw,cd->bdhw", embed(x), weight).flatten(2).permute(2, 0, 1)   # (positions, B, k)
            if outer is None:
                sums, outer = torch.zeros(z.shape[0], k), torch.zeros(z.shape[0], k, k)
            sums += z.sum(dim=1)
            outer.baddbmm_(z.transpose(1, 2), z)
            count += len(x)
        mean = sums / count
        covariance = outer.div_(count).baddbmm_(mean[:, :, None], mean[:, None, :], alpha=-1)
        covariance.diagonal(dim1=1, dim2=2).add_(eps)
        for matrix in covariance:
            torch.inverse(matrix)
        return time.perf_counter() - start


def child_infer(args):
    """Images/s of the dygraph model and of the exported model under Paddle Inference (batch 1)."""
    import paddle

    from common.core.inference import Predictor
    from common.core.runtime import configure
    from common.data.images import open_image
    from common.data.readers.mvtec import test_samples
    from common.deploy.export import export_detector
    from orthoad import checkpoint
    from orthoad.data import preprocess as make_preprocess

    configure("cpu", args.threads, 0)
    model, config, _ = checkpoint.load(args.save)
    preprocess = make_preprocess(config)
    images = [preprocess.image(open_image(s.path))[None] for s in test_samples(args.data_dir, args.cls)[: args.n]]
    with paddle.no_grad():
        model(paddle.to_tensor(images[0]))
        start = time.time()
        for image in images:
            model(paddle.to_tensor(image))[0].numpy()
        dygraph = len(images) / (time.time() - start)
    inference_dir = os.path.join(args.save, "inference")
    _, differences = export_detector(model, preprocess, {"method": config.method_name}, inference_dir, check=True)
    difference = differences["paddle"]  # relative difference of the exported graph to the dygraph model
    predictor = Predictor(inference_dir, threads=args.threads)
    predictor.run(images[0])
    start = time.time()
    for image in images:
        predictor.run(image)
    inference = len(images) / (time.time() - start)
    print(json.dumps({"arch": config.backbone, "k": config.k, "images": len(images),
                      "dygraph_images_per_s": round(dygraph, 2), "inference_images_per_s": round(inference, 2),
                      "exported_vs_dygraph_max_rel_diff": float(f"{difference:.2e}")}))


def _child(mode, **options):
    argv = [sys.executable, os.path.abspath(__file__), "--child", mode]
    for key, value in options.items():
        argv += [f"--{key}", str(value)]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=os.path.dirname(os.path.abspath(__file__)))
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=None,
                        help="MVTec-layout data (default: 237 synthetic 256 px training images, the grid-sized set)")
    parser.add_argument("--cls", default="bottle")
    parser.add_argument("--backbone_weights", default="random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--n", type=int, default=20, help="(child) number of images")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--save", default="")
    parser.add_argument("--child", choices=("fit", "infer"))
    args = parser.parse_args()
    if args.child == "fit":
        return child_fit(args)
    if args.child == "infer":
        return child_infer(args)
    scratch_data = None
    if args.data_dir is None:
        from common.data.synthetic import make_class

        scratch_data = tempfile.mkdtemp(prefix="orthoad-bench-")
        make_class(scratch_data, args.cls, size=256, n_train=237, n_test_good=20, n_test_defect=3)
        args.data_dir = scratch_data
    common = {"data_dir": args.data_dir, "cls": args.cls, "backbone_weights": args.backbone_weights,
              "threads": args.threads}
    print(f"OrthoAD benchmark: class {args.cls}, 256 px, {args.threads} CPU threads, batch {args.batch_size}, "
          f"backbone weights {args.backbone_weights}")
    with tempfile.TemporaryDirectory() as scratch:
        for arch, k in SETTINGS:
            fits = []
            for n in IMAGE_COUNTS:
                save = os.path.join(scratch, f"{arch}_{k}") if n == IMAGE_COUNTS[0] else ""
                fits.append(_child("fit", arch=arch, k=k, n=n, batch_size=args.batch_size, save=save, **common))
                print("fit   " + json.dumps(fits[-1]), flush=True)
            growth = fits[1]["peak_rss_mb"] / fits[0]["peak_rss_mb"] - 1
            print(f"      {arch} k={k}: peak memory {fits[0]['images']} -> {fits[1]['images']} images: "
                  f"{100 * growth:+.1f} %", flush=True)
            report = _child("infer", arch=arch, k=k, n=20, save=os.path.join(scratch, f"{arch}_{k}"), **common)
            print("infer " + json.dumps(report), flush=True)
    if scratch_data:
        shutil.rmtree(scratch_data, ignore_errors=True)


if __name__ == "__main__":
    main()
