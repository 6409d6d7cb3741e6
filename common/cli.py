"""The command-line contract every method folder follows, and the per-class loop.

Every ``main.py`` accepts ``--mode train|eval|predict``, ``--cls CATEGORY|all|textures|objects``,
``--data_dir``, ``--output_dir``, ``--seed``, ``--device`` and ``--threads``, plus the flag spellings of the source
repository it ports (``--category``, ``--class_name``, ``--normal_class``, ``--data_path``, ``--dataset_root``,
``--save_dir``, ``--use_gpu``), which map onto the same destinations.
"""
import argparse
import sys
import time
import traceback

from .errors import UserError


def str2bool(value):
    """argparse type for ``--flag True/False`` spellings used by the Paddle ports."""
    if isinstance(value, bool):
        return value
    lowered = str(value).lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got '{value}'")


class _DeviceFromUseGpu(argparse.Action):
    """``--use_gpu True`` (Paddle ports) sets ``device`` to ``gpu``."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.device = "gpu" if str2bool(values) else "cpu"


def add_common_args(parser, *, cls="bottle", data_dir="../data/mvtec_anomaly_detection", output_dir="output",
                    seed=0, modes=("train", "eval", "predict")):
    """Add the shared options (with the source repos' aliases) and return the parser."""
    if modes:
        parser.add_argument("--mode", choices=modes, default=modes[0], help="what to run")
    parser.add_argument("--cls", "--category", "--class_name", "--normal_class", dest="cls", default=cls,
                        help="MVTec class, a comma-separated list, or all | textures | objects")
    parser.add_argument("--data_dir", "--data_path", "--dataset_root", dest="data_dir", default=data_dir,
                        help="folder holding one sub-folder per class in MVTec AD layout")
    parser.add_argument("--output_dir", "--save_dir", dest="output_dir", default=output_dir,
                        help="checkpoints, results JSON and pictures go here")
    parser.add_argument("--seed", type=int, default=seed, help="random seed")
    parser.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N")
    parser.add_argument("--use_gpu", action=_DeviceFromUseGpu, metavar="BOOL",
                        help="alias of --device gpu / cpu (Paddle ports' spelling)")
    parser.add_argument("--threads", "--cpu_threads", dest="threads", type=int, default=None,
                        help="CPU threads (default: every core, or OMP_NUM_THREADS when set)")
    return parser


def run_per_class(classes, run_one, what="run"):
    """Call ``run_one(cls)`` for each class; a failing class is reported and the loop goes on.

    Returns ``{cls: result}`` for the classes that succeeded. Raises ``UserError`` naming the failed classes at
    the end when any failed (so the exit status is non-zero), after every class was tried.
    """
    results, failures = {}, {}
    for cls in classes:
        start = time.time()
        try:
            results[cls] = run_one(cls)
        except UserError as exc:
            failures[cls] = str(exc)
            print(f"[{cls}] {what} failed: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one class's bug must not stop the loop; traceback kept
            failures[cls] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            print(f"[{cls}] {what} failed: {failures[cls]}", file=sys.stderr)
        else:
            if len(classes) > 1:
                print(f"[{cls}] {what} done in {time.time() - start:.1f} s")
    if failures:
        raise UserError(f"{what} failed for {len(failures)} of {len(classes)} classes: "
                        + "; ".join(f"{c}: {m}" for c, m in failures.items()))
    return results
