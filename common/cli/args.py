"""The options every command shares, and the per-class loop.

Every command accepts ``--cls CATEGORY|all|textures|objects`` (and the source repositories' spellings
``--category``, ``--class_name``, ``--normal_class``), ``--data_dir`` (``--data_path``, ``--dataset_root``),
``--output_dir``, ``--device`` (``--use_gpu True/False``) and ``--threads`` (``--cpu_threads``).
"""
import argparse
import sys
import time
import traceback

from common.core.errors import UserError
from common.core.runtime import GPU_IF_AVAILABLE, release_memory

DEFAULT_DATA_DIR = "mvtec"  # where the earlier ports' READMEs unpack MVTec AD: METHOD-paddle/mvtec/
DEFAULT_OUTPUT_DIR = "output"


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
    """``--use_gpu True`` (Paddle ports) selects the GPU when this Paddle build has one, else the CPU with a note."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.device = GPU_IF_AVAILABLE if str2bool(values) else "cpu"


def add_runtime_args(parser):
    """``--device``, ``--use_gpu`` and ``--threads``."""
    parser.add_argument("--device", default=None,
                        help="cpu, gpu or gpu:N (default: Paddle's, the GPU when this Paddle build has CUDA and sees "
                             "one, else the CPU)")
    parser.add_argument("--use_gpu", action=_DeviceFromUseGpu, metavar="BOOL",
                        help="True: the GPU when this Paddle build has one, else the CPU (Paddle ports' spelling)")
    parser.add_argument("--threads", "--cpu_threads", dest="threads", type=int, default=None,
                        help="CPU threads (default: every core, or OMP_NUM_THREADS when set)")
    return parser


def add_shared_args(parser, cls="all", data_dir=True, output_aliases=("--save_dir",)):
    """The shared contract: class, data and output folders, device and threads."""
    parser.add_argument("--cls", "--category", "--class_name", "--normal_class", dest="cls", default=cls,
                        help="MVTec class, a comma-separated list, or all | textures | objects"
                             + ("" if cls else " (default: the class folder of --ckpt, else bottle)"))
    if data_dir:
        parser.add_argument("--data_dir", "--data_path", "--dataset_root", dest="data_dir", default=DEFAULT_DATA_DIR,
                            help="folder holding one sub-folder per class in MVTec AD layout")
    parser.add_argument("--output_dir", *output_aliases, dest="output_dir", default=DEFAULT_OUTPUT_DIR,
                        help="checkpoints, results JSON and pictures go here")
    return add_runtime_args(parser)


def single_class(spec, what):
    """``spec`` when it names one class; a group or a list is a ``UserError``."""
    from common.data.readers import is_group

    if "," in str(spec) or is_group(spec):
        raise UserError(f"{what} uses the model of one class: give --cls CLASS (got '{spec}')")
    return spec


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
        except OSError as exc:  # e.g. an output folder that cannot be written: the user's to fix
            failures[cls] = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            print(f"[{cls}] {what} failed: {failures[cls]}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - one class's bug must not stop the loop; traceback kept
            failures[cls] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            print(f"[{cls}] {what} failed: {failures[cls]}", file=sys.stderr)
        finally:
            release_memory()  # nothing of this class is needed any more: the next one starts from the same heap
        if cls in results and len(classes) > 1:
            print(f"[{cls}] {what} done in {time.time() - start:.1f} s")
    if failures:
        raise UserError(f"{what} failed for {len(failures)} of {len(classes)} classes: "
                        + "; ".join(f"{c}: {m}" for c, m in failures.items()))
    return results
