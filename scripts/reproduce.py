#!/usr/bin/env python
"""Full-protocol runs of one method over MVTec AD classes, classes in parallel (one per GPU), resumable.

    scripts/reproduce.sh METHOD [--gpus 0,1,...] [--workers N] [--classes all|textures|objects|a,b] [-- TRAIN OPTIONS]

Each class trains with the method folder's ``configs/default.yaml`` (the paper's protocol), then evaluates; its
logs go to ``LOG_DIR/CLASS_{train,eval}.log``. A class whose results file exists is skipped, so an interrupted run
continues where it stopped (a class stopped mid-training resumes its training with ``--resume``). A failing class is
reported and the others go on; the exit status is 1 when any failed. At the end the table against the paper is
printed (``scripts/make_table.py``).

Workers: one per ``--gpus`` entry (each class runs on its worker's GPU), else ``--workers N`` on the CPU
(``--threads`` split between them). Environment: DATA_DIR (default data/mvtec_anomaly_detection), OUTPUT_DIR
(default output/reproduce/METHOD), LOG_DIR (default logs/reproduce/METHOD), PYTHON.
"""
import argparse
import os
import queue
import subprocess
import sys
import threading

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common.categories import resolve_classes  # noqa: E402
from common.errors import UserError, main_guard  # noqa: E402

FOLDERS = {"rd4ad": "RD4AD-paddle", "kdad": "KDAD-paddle", "mkd": "KDAD-paddle", "orthoad": "OrthoAD-paddle",
           "padim": "OrthoAD-paddle", "efficientad": "EfficientAD-paddle"}
RESULT_NAMES = {"RD4AD-paddle": "RD4AD", "KDAD-paddle": "KDAD", "OrthoAD-paddle": "OrthoAD",
                "EfficientAD-paddle": "EfficientAD"}


def run_class(cls, device, threads, folder, paths, extra, lock):
    """Train (resuming a state left by an interrupted run) and evaluate one class; returns None or the failure."""
    python = os.environ.get("PYTHON", sys.executable)
    common = ["--cls", cls, "--data_dir", paths["data"], "--output_dir", paths["output"], "--device", device]
    if threads:
        common += ["--threads", str(threads)]
    state = os.path.join(paths["output"], cls, "train_state.pdparams")
    steps = (("train", ["--mode", "train", *common, *(["--resume"] if os.path.isfile(state) else []), *extra]),
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("method", help="rd4ad | kdad | orthoad | efficientad")
    parser.add_argument("--gpus", default=None, help="comma-separated GPU ids: one worker per GPU")
    parser.add_argument("--workers", type=int, default=1, help="CPU workers when --gpus is not given")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: cores / workers)")
    parser.add_argument("--classes", default="all", help="all | textures | objects | a comma-separated list")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    folder = FOLDERS.get(args.method.lower())
    if folder is None or not os.path.isfile(os.path.join(REPO, folder, "main.py")):
        raise UserError(f"unknown or missing method '{args.method}' (rd4ad, kdad, orthoad, efficientad)")
    method = RESULT_NAMES[folder] if args.method.lower() != "padim" else "PaDiM"
    paths = {"data": os.path.abspath(os.environ.get("DATA_DIR", os.path.join(REPO, "data", "mvtec_anomaly_detection"))),
             "output": os.path.abspath(os.environ.get("OUTPUT_DIR", os.path.join(REPO, "output", "reproduce",
                                                                                  args.method.lower()))),
             "logs": os.path.abspath(os.environ.get("LOG_DIR", os.path.join(REPO, "logs", "reproduce",
                                                                            args.method.lower())))}
    if not os.path.isdir(paths["data"]):
        raise UserError(f"data folder not found: {paths['data']} (set DATA_DIR to the MVTec AD root)")
    os.makedirs(paths["logs"], exist_ok=True)
    classes = resolve_classes(args.classes, sorted(os.listdir(paths["data"])))
    if args.gpus:
        devices = [f"gpu:{g.strip()}" for g in args.gpus.split(",") if g.strip()]
    else:
        if args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        devices = ["cpu"] * args.workers
    threads = args.threads or (None if args.gpus else max(1, (os.cpu_count() or 1) // len(devices)))
    done = [c for c in classes
            if os.path.isfile(os.path.join(paths["output"], "results", f"{method}_{c}.json"))]
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
