#!/usr/bin/env python
"""Full-protocol runs of one method over the classes of a benchmark, classes in parallel (one per GPU), resumable.

    scripts/reproduce.sh METHOD [--dataset NAME] [--fold N] [--gpus 0,1,...] [--workers N]
                         [--classes|--cls all|textures|objects|a,b] [-- TRAIN OPTIONS]

A benchmark is a ``--dataset`` (default MVTec AD; also mvtec_loco, visa, kolektor with ``--fold``, kolektor2, btech,
and the one-class cifar10, mnist, fashionmnist, retina, whose classes are the ten (four) normal classes). Each class
trains with the method folder's ``configs/DATASET.yaml`` when there is one (the one-class sets: e.g. KDAD's
``configs/cifar10.yaml``, the official CIFAR-10 settings), else ``configs/default.yaml`` (the paper's protocol); a
``--config`` among the TRAIN OPTIONS wins. Then it evaluates; its
logs go to ``LOG_DIR/CLASS_{train,eval}.log``. A class whose results file exists is skipped, so an interrupted run
continues where it stopped (every class trains with ``--resume``: one stopped mid-training continues from its last
saved state, bit for bit as if it had not stopped). A failing class is
reported and the others go on; the exit status is 1 when any failed. At the end the table against the paper is
printed (``scripts/make_table.py``).

Workers: one per ``--gpus`` entry (each class runs on its worker's GPU), else ``--workers N`` on the CPU
(``--threads`` split between them). Environment: DATA_DIR (default data/mvtec_anomaly_detection), OUTPUT_DIR
(default output/reproduce/METHOD, or METHOD_DATASET for another dataset), LOG_DIR (likewise under
logs/reproduce), PYTHON.
"""
import argparse
import os
import queue
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.core.errors import UserError, main_guard  # noqa: E402
from common.data.readers import classes_for, dataset_format  # noqa: E402
from common.evaluation.results import results_path  # noqa: E402

FOLDERS = {"rd4ad": "RD4AD-paddle", "kdad": "KDAD-paddle", "mkd": "KDAD-paddle", "orthoad": "OrthoAD-paddle",
           "padim": "OrthoAD-paddle", "efficientad": "EfficientAD-paddle"}
RESULT_NAMES = {"RD4AD-paddle": "RD4AD", "KDAD-paddle": "KDAD", "OrthoAD-paddle": "OrthoAD",
                "EfficientAD-paddle": "EfficientAD"}


def dataset_config(folder, dataset, extra):
    """``["--config", "configs/DATASET.yaml"]`` when the method folder has that file and ``extra`` gives no config."""
    if "--config" in extra or any(str(word).startswith("--config=") for word in extra):
        return []
    name = os.path.join("configs", f"{dataset}.yaml")
    return ["--config", name] if os.path.isfile(os.path.join(folder, name)) else []


def run_class(cls, device, threads, folder, paths, extra, lock):
    """Train (resuming a state left by an interrupted run) and evaluate one class; returns None or the failure."""
    python = os.environ.get("PYTHON", sys.executable)
    common = ["--cls", cls, "--data_dir", paths["data"], "--output_dir", paths["output"], "--device", device,
              "--dataset", paths["dataset"], *(["--fold", str(paths["fold"])] if paths["fold"] is not None else [])]
    if threads:
        common += ["--threads", str(threads)]
    # --resume: a class killed mid-training continues from its last state, one never started begins, one finished
    # (model and thresholds written) is left as it is (common.training.state)
    steps = (("train", ["--mode", "train", *common, "--resume", *dataset_config(folder, paths["dataset"], extra),
                        *extra]),
             ("eval", ["--mode", "eval", *common]))
    for name, args in steps:
        log = os.path.join(paths["logs"], f"{cls}_{name}.log")
        with lock:
            print(f"[{cls}] {name} on {device} (log: {log})", flush=True)
        with open(log, "w", encoding="utf-8") as handle:
            code = subprocess.call([python, "main.py", *args], cwd=folder, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        if code:
            with open(log, encoding="utf-8", errors="replace") as handle:
                last = (handle.read().strip().splitlines() or ["(empty log)"])[-1]
            return f"{name} failed ({last})"
    return None


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("method", help="rd4ad | kdad | orthoad | efficientad")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids: one worker per GPU")
    parser.add_argument("--workers", type=int, default=1, help="CPU workers when --gpus is not given")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: cores / workers)")
    parser.add_argument("--classes", "--cls", dest="classes", default="all",
                        help="all | textures | objects | a comma-separated list (for a "
                             "one-class dataset: class names or indices)")
    parser.add_argument("--dataset", default="mvtec", help="dataset format (mvtec, mvtec_loco, visa, kolektor, "
                                                           "kolektor2, btech, cifar10, mnist, fashionmnist, retina)")
    parser.add_argument("--fold", type=int, default=None, help="fold of a format with folds (kolektor)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    folder = FOLDERS.get(args.method.lower())
    if folder is None or not os.path.isfile(os.path.join(REPO, folder, "main.py")):
        raise UserError(f"unknown or missing method '{args.method}' (rd4ad, kdad, orthoad, efficientad)")
    method = RESULT_NAMES[folder] if args.method.lower() != "padim" else "PaDiM"
    run_name = args.method.lower() + ("" if args.dataset == "mvtec" else f"_{args.dataset}")
    paths = {"data": os.path.abspath(os.environ.get("DATA_DIR", os.path.join(REPO, "data", "mvtec_anomaly_detection"))),
             "output": os.path.abspath(os.environ.get("OUTPUT_DIR", os.path.join(REPO, "output", "reproduce",
                                                                                  run_name))),
             "logs": os.path.abspath(os.environ.get("LOG_DIR", os.path.join(REPO, "logs", "reproduce", run_name)))}
    if not os.path.isdir(paths["data"]):
        raise UserError(f"data folder not found: {paths['data']} (set DATA_DIR to the {args.dataset} root)")
    os.makedirs(paths["logs"], exist_ok=True)
    paths.update(dataset=args.dataset, fold=args.fold)
    classes = classes_for(args.classes, paths["data"], dataset_format(args.dataset))
    if args.gpus:
        devices = [f"gpu:{g.strip()}" for g in args.gpus.split(",") if g.strip()]
    else:
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        devices = ["cpu"] * args.workers
    threads = args.threads or (None if args.gpus else max(1, (os.cpu_count() or 1) // len(devices)))
    done = [c for c in classes
            if os.path.isfile(results_path(os.path.join(paths["output"], "results"), method, c, args.dataset))]
    todo = queue.Queue()
    for cls in classes:
        if cls in done:
            print(f"[{cls}] results exist: skipped")
        else:
            todo.put(cls)
    failures, lock = {}, threading.Lock()

    def worker(device):
        while True:
            try:
                cls = todo.get_nowait()
            except queue.Empty:
                return
            failure = run_class(cls, device, threads, os.path.join(REPO, folder), paths, extra, lock)
            with lock:
                if failure:
                    failures[cls] = failure
                    print(f"[{cls}] FAILED: {failure}", file=sys.stderr, flush=True)
                else:
                    print(f"[{cls}] done", flush=True)

    pool = [threading.Thread(target=worker, args=(device,), daemon=True) for device in devices]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if os.path.isdir(os.path.join(paths["output"], "results")):
        subprocess.call([sys.executable, os.path.join(REPO, "scripts", "make_table.py"),
                         os.path.join(paths["output"], "results"), "--all_classes"])
    if failures:
        print(f"{len(failures)} of {len(classes)} classes failed: {', '.join(sorted(failures))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
