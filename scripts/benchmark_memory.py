#!/usr/bin/env python
"""Memory of a ``--cls all`` loop: the resident memory of ``main.py --mode train|eval --cls all`` after each class.

    python scripts/benchmark_memory.py [--methods rd4ad,kdad,orthoad,efficientad] [--classes 8] [--size 256]
                                       [--threads 2] [--output FILE.json]

Each method runs its real command line in a child process over ``--classes`` synthetic classes
(``common.synthetic``), first ``--mode train --cls all`` then ``--mode eval --cls all``; the child's resident
memory (``VmRSS`` of ``/proc/PID/status``) is read when the loop prints a class's ``done`` line, and its peak
(``VmHWM``) at the end. A loop that keeps something of every finished class grows linearly; the criterion is the
memory after the last class within 10 % of the memory after the second (the first class also pays for imports,
compiled programs and the heap's first growth). Linux only (``/proc``).

The options per method are small versions of each paper's networks (random weights, few epochs or steps) so that
the whole run takes minutes; ``--paper`` instead trains each method at its paper's setting (network, batch and image
size; random weights, one epoch or a few steps) over three classes and compares the loop's peak with a one-class run's:
what ``--cls all`` needs at the paper's setting is what one class needs.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

FOLDERS = {"rd4ad": "RD4AD-paddle", "kdad": "KDAD-paddle", "orthoad": "OrthoAD-paddle",
           "efficientad": "EfficientAD-paddle"}
# training options per method: each paper's network family, random weights, a short schedule
TRAIN_OPTIONS = {
    "rd4ad": ["--backbone", "resnet18", "--backbone_weights", "random", "--epochs", "2", "--batch_size", "8"],
    "kdad": ["--backbone_weights", "random", "--num_epochs", "1", "--batch_size", "8"],
    "orthoad": ["--backbone", "resnet18", "--backbone_weights", "random"],
    "efficientad": ["--teacher_weights", "random", "--train_steps", "10", "--save_interval", "5",
                    "--print_steps", "5"],
}
# each paper's setting (the official configs' networks, batch and image sizes), random weights, a short schedule
PAPER_OPTIONS = {
    "rd4ad": ["--backbone", "wide_resnet50_2", "--backbone_weights", "random", "--epochs", "1", "--batch_size", "16"],
    "kdad": ["--backbone_weights", "random", "--epochs", "1", "--batch_size", "64"],
    "orthoad": ["--backbone", "wide_resnet50_2", "--backbone_weights", "random"],
    "efficientad": ["--teacher_weights", "random", "--train_steps", "20", "--save_interval", "10",
                    "--print_steps", "10"],
    "efficientad_m": ["--model_size", "medium", "--teacher_weights", "random", "--train_steps", "20",
                      "--save_interval", "10", "--print_steps", "10"],
}
PAPER_IMAGES = 64  # training images per class: one full KDAD batch
DONE_LINE = re.compile(r"^\[(?P<cls>[^\]]+)\] (training|evaluation) done in ")


def memory_of(pid, field="VmRSS"):
    """``field`` of ``/proc/PID/status`` in MiB (None once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def run_loop(method, mode, data_dir, output_dir, threads, options, classes="all"):
    """Run one ``--cls CLASSES`` loop; returns ``{"per_class": [(class, MiB)], "peak": MiB, "seconds": s}``."""
    command = [sys.executable, "-u", "main.py", "--mode", mode, "--cls", classes, "--data_dir", data_dir,
               "--output_dir", output_dir, "--threads", str(threads), *options]
    start = time.time()
    child = subprocess.Popen(command, cwd=os.path.join(REPO, FOLDERS[method.split("_")[0]]), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, PYTHONPATH=REPO))
    per_class, peak, tail = [], None, []
    for line in child.stdout:
        tail = (tail + [line.rstrip()])[-20:]
        match = DONE_LINE.match(line)
        if match:
            per_class.append((match.group("cls"), memory_of(child.pid)))
        peak = memory_of(child.pid, "VmHWM") or peak
    if child.wait():
        raise RuntimeError(f"{method} {mode} failed:\n" + "\n".join(tail))
    return {"per_class": per_class, "peak": peak, "seconds": time.time() - start}


def growth(per_class):
    """Memory after the last class relative to after the second (0.05 = +5 %)."""
    values = [mib for _, mib in per_class]
    return values[-1] / values[1] - 1.0 if len(values) > 2 else None


def machine():
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(rows):
    lines = ["| method | mode | classes | after 1st MiB | after 2nd MiB | after last MiB | last vs 2nd | peak MiB "
             "| s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        values = [mib for _, mib in row["per_class"]]
        lines.append(f"| {row['method']} | {row['mode']} | {len(values)} | {values[0]:.0f} | {values[1]:.0f} | "
                     f"{values[-1]:.0f} | {100 * growth(row['per_class']):+.1f} % | {row['peak']:.0f} | "
                     f"{row['seconds']:.0f} |")
    return "\n".join(lines)


def paper_setting(work, threads, size, methods):
    """Each method at its paper's setting: the peak of a three-class loop against a one-class run's."""
    from common.data import synthetic

    data = os.path.join(work, "paper_data")
    synthetic.make_dataset(data, [f"class{i}" for i in range(3)], size=size, n_train=PAPER_IMAGES, n_test_good=2,
                           n_test_defect=1)
    # EfficientAD's penalty batch (ImageNet in the paper): any folder of images gives the same memory
    penalty = ["--penalty_dir", os.path.join(data, "class0", "train", "good")]
    rows = []
    for method in methods:
        options = PAPER_OPTIONS[method] + (penalty if method.startswith("efficientad") else [])
        one = run_loop(method, "train", data, os.path.join(work, f"{method}_one"), threads, options, classes="class0")
        three = run_loop(method, "train", data, os.path.join(work, f"{method}_three"), threads, options)
        rows.append({"method": method, "options": options, "one_class_peak": one["peak"],
                     "three_class_peak": three["peak"], "three_class": three["per_class"],
                     "seconds": one["seconds"] + three["seconds"]})
        print(f"{method}: one class peak {one['peak']:.0f} MiB; three classes peak {three['peak']:.0f} MiB, "
              + ", ".join(f"{c} {m:.0f}" for c, m in three["per_class"]) + " MiB after each", flush=True)
    return rows


def paper_table(rows):
    lines = ["| method (paper setting) | one class peak MiB | three classes peak MiB | after each class MiB |",
             "|---|---:|---:|---|"]
    for row in rows:
        lines.append(f"| {row['method']} `{' '.join(row['options'][:6])}` | {row['one_class_peak']:.0f} | "
                     f"{row['three_class_peak']:.0f} | " + ", ".join(f"{m:.0f}" for _, m in row["three_class"])
                     + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=None,
                        help="comma list (default rd4ad,kdad,orthoad,efficientad; --paper adds efficientad_m)")
    parser.add_argument("--classes", type=int, default=8, help="synthetic classes per loop (at least 3)")
    parser.add_argument("--size", type=int, default=256, help="synthetic image size (px)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paper", action="store_true", help="each method at its paper's setting over 3 classes instead")
    parser.add_argument("--output", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if not os.path.isdir("/proc/self"):
        print("error: this benchmark reads /proc (Linux only)", file=sys.stderr)
        return 2
    from common.data import synthetic

    classes = f"3 synthetic classes of {PAPER_IMAGES} training images" if args.paper else \
        f"{args.classes} synthetic classes"
    print(f"machine: {machine()}; threads {args.threads}; {classes} of {args.size} px")
    with tempfile.TemporaryDirectory(prefix="memory-") as work:
        if args.paper:
            methods = (args.methods or ",".join([*FOLDERS, "efficientad_m"])).split(",")
            rows = paper_setting(work, args.threads, args.size, [m.strip() for m in methods if m.strip()])
            print("\n" + paper_table(rows))
            result = {"machine": machine(), "threads": args.threads, "size": args.size, "paper": rows}
        else:
            if args.classes < 3:
                parser.error("--classes must be at least 3")
            data = os.path.join(work, "data")
            synthetic.make_dataset(data, [f"class{i}" for i in range(args.classes)], size=args.size, n_train=16,
                                   n_test_good=4, n_test_defect=2)
            rows = []
            for method in [m.strip() for m in (args.methods or ",".join(FOLDERS)).split(",") if m.strip()]:
                output_dir = os.path.join(work, f"output_{method}")
                for mode, options in (("train", TRAIN_OPTIONS[method]), ("eval", [])):
                    row = dict(method=method, mode=mode,
                               **run_loop(method, mode, data, output_dir, args.threads, options))
                    rows.append(row)
                    print(f"{method} {mode}: " + ", ".join(f"{c} {m:.0f}" for c, m in row["per_class"])
                          + f" MiB; peak {row['peak']:.0f} MiB; {row['seconds']:.0f} s", flush=True)
            print("\n" + table(rows))
            result = {"machine": machine(), "threads": args.threads, "classes": args.classes, "size": args.size,
                      "rows": rows}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
