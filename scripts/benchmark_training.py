#!/usr/bin/env python
"""Training speed of every method in Paddle against a PyTorch statement of the same computation, on the same threads,
in one run: seconds per training step (RD4AD, KDAD, EfficientAD-S/-M) or per fit (OrthoAD) and the ratio.

    python scripts/benchmark_training.py [--methods rd4ad,kdad,efficientad,orthoad] [--threads 2]
        [--sizes rd4ad=16x256,kdad=64x128,efficientad=1x256,orthoad=200x256] [--steps N] [--quick] [--output F.json]

The timed code is each method's own ``benchmark.py`` (no statement is repeated here): the Paddle side is the step
``main.py --mode train`` runs (the trainer's model, loss and optimiser), the PyTorch side the official code's step
stated with the networks of ``tests/``. Each measurement runs in a fresh process with only one framework's thread
pool (two pools in one process slow each other down on a small machine); threads are set as
``common.core.runtime.configure`` does (Paddle) and with ``torch.set_num_threads`` (PyTorch); both keep freed memory for
reuse (``common.core.runtime.keep_freed_memory``). Training steps: warm-up (RD4AD two steps, the others one), then
``--steps`` timed ones, of which the median is reported; OrthoAD's fit is timed once after a warm-up batch through
the backbone. Random weights and random images (speed does not depend on them); data loading is left out on both
sides.

``--sizes`` gives ``METHOD=BATCHxPIXELS`` (OrthoAD: number of fit images x pixels); the defaults are each paper's
setting: RD4AD WRN50 batch 16 at 256 px, KDAD VGG16 + cloner batch 64 at 128 px, EfficientAD-S and -M batch 1 at
256 px (student + autoencoder, no penalty image), OrthoAD WRN50 k = 300 fitted on 200 images of 256 px in batches
of 8 (the size of a class's fit split; bottle has 188). ``--quick`` uses tiny sizes, one timed step and only
EfficientAD-S (a smoke test, about a minute and a half on 2 idle cores). Timing stays out of the test suite."""
import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import common  # noqa: E402,F401 - quiet Paddle start-up in the children
from common.core.errors import UserError, main_guard  # noqa: E402

METHODS = ("rd4ad", "kdad", "efficientad", "orthoad")
FOLDERS = {"rd4ad": "RD4AD-paddle", "kdad": "KDAD-paddle", "efficientad": "EfficientAD-paddle",
           "orthoad": "OrthoAD-paddle"}
PAPER_SIZES = {"rd4ad": (16, 256), "kdad": (64, 128), "efficientad": (1, 256), "orthoad": (200, 256)}
QUICK_SIZES = {"rd4ad": (2, 64), "kdad": (4, 64), "efficientad": (1, 256), "orthoad": (4, 32)}
TIMED_STEPS = {"rd4ad": 3, "kdad": 3, "efficientad": 10}   # EfficientAD's step is short: more of them
ORTHOAD_BACKBONE, ORTHOAD_K, ORTHOAD_FIT_BATCH = "wide_resnet50_2", 300, 8   # orthoad Config defaults


def rows_for(method, quick=False):
    """``(row key, label, what is timed)`` of a method: EfficientAD has one row per model size (only S with
    ``--quick``)."""
    if method == "rd4ad":
        return [("rd4ad", "RD4AD train step", "WRN50 teacher, OCBE + decoder, Adam")]
    if method == "kdad":
        return [("kdad", "KDAD train step", "VGG16 expert + cloner B, Adam")]
    if method == "efficientad":
        return [(f"efficientad:{size}", f"EfficientAD-{size[0].upper()} train step",
                 "student + autoencoder, Adam, no penalty image")
                for size in (("small",) if quick else ("small", "medium"))]
    return [("orthoad", "OrthoAD fit", f"WRN50, k {ORTHOAD_K}, batches of {ORTHOAD_FIT_BATCH}")]


# -- children: one framework, one measurement ------------------------------------------------------------------
def load_method_benchmark(method):
    """A method's ``benchmark.py`` under a name of its own (every folder calls its module ``benchmark``)."""
    folder = os.path.join(REPO, FOLDERS[method])
    sys.path.insert(0, folder)  # its package (rd4ad, kdad, ...) imports from there
    spec = importlib.util.spec_from_file_location(f"{method}_benchmark", os.path.join(folder, "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images(count, size, seed=0):
    """The same random batch in both children (same seed)."""
    return np.random.default_rng(seed).standard_normal((count, 3, size, size), dtype=np.float32)


def rd4ad_seconds(module, side, variant, batch, size, steps, threads):
    args = argparse.Namespace(backbone="wide_resnet50_2", threads=threads, train_steps=steps)
    run = module.paddle_train_step_s if side == "paddle" else module.torch_train_step_s
    return run(args, images(batch, size))


def kdad_seconds(module, side, variant, batch, size, steps, threads):
    args = argparse.Namespace(image_size=size, threads=threads, train_batch_size=batch, train_steps=steps)
    return getattr(module, f"{side}_train_step_s")(args)


def efficientad_seconds(module, side, variant, batch, size, steps, threads):
    x = images(batch, size)
    if side == "paddle":
        return module.paddle_train_step_ms(variant, x, steps) / 1000
    return module.torch_train_step_ms(variant, x, steps, threads) / 1000


def orthoad_seconds(module, side, variant, batch, size, steps, threads):
    x = images(batch, size)
    if side == "paddle":
        return module.paddle_fit_s(ORTHOAD_BACKBONE, ORTHOAD_K, x, ORTHOAD_FIT_BATCH)
    return module.torch_fit_s(ORTHOAD_BACKBONE, ORTHOAD_K, x, ORTHOAD_FIT_BATCH, threads)


MEASURE = {"rd4ad": rd4ad_seconds, "kdad": kdad_seconds, "efficientad": efficientad_seconds,
           "orthoad": orthoad_seconds}


def child(args):
    """Print ``{"seconds", "version"}`` of one measurement as the last line of stdout."""
    method, _, variant = args.child.partition(":")
    if args.side == "paddle":
        import paddle

        from common.core.runtime import configure

        configure("cpu", args.threads, 0)
        version = paddle.__version__
    else:
        import torch

        from common.core.runtime import keep_freed_memory

        keep_freed_memory()  # the same allocator setting as configure() gives the Paddle side
        torch.set_num_threads(args.threads)
        version = torch.__version__
    module = load_method_benchmark(method)
    seconds = MEASURE[method](module, args.side, variant, args.batch, args.size, args.steps, args.threads)
    print(json.dumps({"seconds": seconds, "version": version}))


def measure(key, side, batch, size, steps, threads):
    """Run one child; returns its JSON answer."""
    method = key.partition(":")[0]
    folder = os.path.join(REPO, FOLDERS[method])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [folder, REPO, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, os.path.abspath(__file__), "--child", key, "--side", side, "--batch", str(batch),
               "--size", str(size), "--steps", str(steps), "--threads", str(threads)]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    if result.returncode:
        raise UserError(f"{key} ({side}) failed with exit status {result.returncode}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- parent ----------------------------------------------------------------------------------------------------
def parse_sizes(text, quick):
    sizes = dict(QUICK_SIZES if quick else PAPER_SIZES)
    for item in filter(None, (text or "").split(",")):
        method, _, value = item.partition("=")
        try:
            batch, size = (int(v) for v in value.lower().split("x"))
        except ValueError:
            raise UserError(f"--sizes: expected METHOD=BATCHxPIXELS, got '{item}'") from None
        if method not in sizes:
            raise UserError(f"--sizes: unknown method '{method}' (one of {', '.join(METHODS)})")
        if method == "efficientad" and size != 256:
            raise UserError("--sizes: EfficientAD's networks are built for 256 px inputs")
        sizes[method] = (batch, size)
    return sizes


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def setting_text(method, batch, size):
    if method == "orthoad":
        return f"{batch} images, {size} px"
    return f"batch {batch}, {size} px"


def table(rows):
    lines = ["| benchmark | network | size | Paddle s | PyTorch s | Paddle / PyTorch |",
             "|---|---|---|---:|---:|---:|"]
    for row in rows:
        torch_s = f"{row['torch_s']:.3f}" if row["torch_s"] is not None else "n/a"
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "n/a"
        lines.append(f"| {row['label']} | {row['network']} | {row['setting']} | {row['paddle_s']:.3f} | {torch_s} | "
                     f"{ratio} |")
    return "\n".join(lines)


def run(args):
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UserError(f"--methods: unknown {', '.join(unknown)} (one of {', '.join(METHODS)})")
    sizes = parse_sizes(args.sizes, args.quick)
    has_torch = importlib.util.find_spec("torch") is not None
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
               "python": platform.python_version(), "numpy": np.__version__,
               "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "unset"),
               "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    print(f"machine: {machine['cpu']}, {machine['cores']} cores visible; {args.threads} threads per framework; "
          f"load average at start {machine['load_average_at_start']}", flush=True)
    rows, started = [], time.time()
    for method in methods:
        batch, size = sizes[method]
        steps = 1 if args.quick else (args.steps or TIMED_STEPS.get(method, 1))
        for key, label, network in rows_for(method, args.quick):
            answer = {}
            for side in ("paddle", "torch") if has_torch else ("paddle",):
                child_start = time.time()
                answer[side] = measure(key, side, batch, size, steps, args.threads)
                machine[f"{side}_version"] = answer[side]["version"]
                print(f"  {label} ({setting_text(method, batch, size)}), {side}: {answer[side]['seconds']:.3f} s "
                      f"(process {time.time() - child_start:.0f} s)", flush=True)
            paddle_s = answer["paddle"]["seconds"]
            torch_s = answer["torch"]["seconds"] if "torch" in answer else None
            rows.append({"key": key, "label": label, "network": network, "setting": setting_text(method, batch, size),
                         "batch": batch, "image_size": size, "timed_steps": steps if method != "orthoad" else 1,
                         "paddle_s": paddle_s, "torch_s": torch_s,
                         "ratio": paddle_s / torch_s if torch_s else None})
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    header = (f"Training speed, {machine['cpu']} ({machine['cores']} cores), {args.threads} threads per framework, "
              f"Paddle {machine.get('paddle_version')}, PyTorch {machine.get('torch_version', 'not installed')}; "
              f"load average {machine['load_average_at_start'][0]} at start, {machine['load_average_at_end'][0]} "
              f"at end; {time.time() - started:.0f} s in all. Seconds per training step (OrthoAD: per fit); "
              "Paddle / PyTorch < 1 means Paddle is faster.")
    text = header + "\n\n" + table(rows)
    print("\n" + text)
    if args.output:
        from common.core.files import atomic_write_json

        atomic_write_json(args.output, {"machine": machine, "quick": args.quick, "rows": rows, "report": text})
    return rows


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each framework")
    parser.add_argument("--sizes", default="", help="METHOD=BATCHxPIXELS,... (OrthoAD: IMAGESxPIXELS); default: "
                        + ",".join(f"{m}={b}x{s}" for m, (b, s) in PAPER_SIZES.items()))
    parser.add_argument("--steps", type=int, default=None,
                        help="timed training steps after the warm-up (default: RD4AD 3, KDAD 3, EfficientAD 10)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one timed step (smoke test)")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=("paddle", "torch"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise UserError(f"--threads must be at least 1, got {args.threads}")
    if args.child:
        return child(args)
    return run(args)


if __name__ == "__main__":
    main()
