"""Fit time and peak memory vs number of training images, and inference speed (dygraph vs Paddle Inference).

    python benchmark.py --data_dir PATH --cls bottle [--backbone_weights imagenet] > benchmark.txt

Every measurement runs in a fresh child process so that its peak resident memory (``ru_maxrss``) is its own. The
fit covers data loading, backbone, projection, streaming statistics and the Cholesky precision factors; the
baseline is the child's resident memory after building the backbone, before the first batch. Inference times
batch-1 calls after one warm-up call. Backbone weights do not change time or memory, so random weights are fine.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


SETTINGS = (("wide_resnet50_2", 300), ("resnet18", 100))
IMAGE_COUNTS = (50, 200)


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rss_mb():
    with open("/proc/self/status", encoding="ascii") as handle:
        return next(int(line.split()[1]) / 1024.0 for line in handle if line.startswith("VmRSS:"))


def child_fit(args):
    """Fit on the first ``n`` training images; print JSON with seconds and memory; optionally save the model."""
    from common.mvtec import MVTecDataset, train_samples
    from common.runtime import configure
    from orthoad.projection import make_projection
    from orthoad.storage import save_array
    from orthoad.trainer import _loader, build_embedder, fit_statistics, make_preprocess

    configure("cpu", args.threads, 0)
    preprocess = make_preprocess("official")
    samples = train_samples(args.data_dir, args.cls)[: args.n]
    channels = {"resnet18": 448, "wide_resnet50_2": 1792}[args.arch]
    projection = make_projection("ortho", channels, args.k, 1111)
    embedder = build_embedder(args.arch, projection, 256, args.backbone_weights, 1111)
    baseline = _rss_mb()
    start = time.time()
    loader = _loader(MVTecDataset(samples, preprocess), args.batch_size)
    mean, factor, count = fit_statistics(embedder, loader, 64 * 64, stats_dtype="auto")
    seconds = time.time() - start
    report = {"arch": args.arch, "k": args.k, "images": count, "fit_seconds": round(seconds, 1),
              "baseline_rss_mb": round(baseline), "peak_rss_mb": round(_peak_mb()),
              "statistics_mb": round((factor.nbytes + mean.nbytes) / 2 ** 20)}
    if args.save:
        config = {"cls": args.cls, "method": "ortho", "arch": args.arch, "k": args.k, "seed": 1111,
                  "backbone_weights": args.backbone_weights, "preprocess": preprocess.to_dict(), "grid": 64,
                  "sigma": 4.0, "batch_size": 1}
        os.makedirs(args.save, exist_ok=True)
        save_array(os.path.join(args.save, "projection.npy"), projection)
        save_array(os.path.join(args.save, "mean.npy"), mean)
        save_array(os.path.join(args.save, "precision_factor.npy"), factor)
        with open(os.path.join(args.save, "model.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle)
    print(json.dumps(report))


def child_infer(args):
    """Images/s of the dygraph model and of the exported model under Paddle Inference (batch 1)."""
    import paddle

    from common.inference import Predictor
    from common.mvtec import open_image, test_samples
    from common.runtime import configure
    from orthoad.trainer import load_model, preprocess_from_dict

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from export_model import export

    configure("cpu", args.threads, 0)
    model, config, _ = load_model(args.save)
    preprocess = preprocess_from_dict(config["preprocess"])
    images = [preprocess.image(open_image(s.path))[None] for s in test_samples(args.data_dir, args.cls)[: args.n]]
    with paddle.no_grad():
        model(paddle.to_tensor(images[0]))
        start = time.time()
        for image in images:
            model(paddle.to_tensor(image))[0].numpy()
        dygraph = len(images) / (time.time() - start)
    _, difference = export(args.save, os.path.join(args.save, "inference"), check=True)
    predictor = Predictor(os.path.join(args.save, "inference"), threads=args.threads)
    predictor.run(images[0])
    start = time.time()
    for image in images:
        predictor.run(image)
    inference = len(images) / (time.time() - start)
    print(json.dumps({"arch": config["arch"], "k": config["k"], "images": len(images),
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
    parser.add_argument("--data_dir", default="/work/shared/data/mvtec_ad_256")
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



if __name__ == "__main__":
    main()
