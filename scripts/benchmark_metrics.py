"""Time the metrics of ``common.metrics`` against the slow reference versions in ``tests/metric_references.py``.

Prints one table row per (input, function): reference seconds, ours seconds, speed-up, max |difference| and the
peak memory Python allocated during our call (tracemalloc, numpy arrays included) next to the size of the maps.
Inputs: 100 synthetic 256x256 maps, and the MVTec AD bottle test set when present (masks read from
``ground_truth``, maps a blurred noisy version of each mask); for the MVTec LOCO AD figures
(``common.metrics.spro.loco_metrics`` against MVTec's LOCO evaluator restated in ``loco_reference``) a synthetic
object of 100 maps at 400x300 (1-3 defect channels per anomalous image, relative and absolute saturations).

    python scripts/benchmark_metrics.py [--data MVTEC_ROOT] [--repeats 3] [--skip-rd4ad-loop] [--skip-loco]
"""
import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections import namedtuple
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "RD4AD-paddle"))  # RD4AD's own PRO protocol lives in its method folder

import metric_references as references  # noqa: E402
from common import metrics  # noqa: E402
from common.core.errors import main_guard  # noqa: E402
from common.metrics import spro  # noqa: E402
from rd4ad.metric import rd4ad_pro  # noqa: E402


def realistic_maps(masks, seed):
    """Anomaly maps that look like a model's: blurred mask plus blurred noise, float32."""
    rng = np.random.default_rng(seed)
    maps = np.empty(masks.shape, dtype=np.float32)
    for index, mask in enumerate(masks):
        noise = ndimage.gaussian_filter(rng.normal(size=mask.shape), 4) * 4
        maps[index] = ndimage.gaussian_filter(mask.astype(np.float64), 4) + 0.3 * noise
    return maps


def synthetic_masks(count=100, size=256, seed=0):
    """70% of the images get 1-3 elliptic defects, the rest are normal."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((count, size, size), dtype=bool)
    for mask in masks[: int(count * 0.7)]:
        for _ in range(rng.integers(1, 4)):
            center = rng.uniform(20, size - 20, 2)
            radii = rng.uniform(3, 25, 2)
            mask |= ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1
    return masks


def bottle_masks(root):
    """Ground-truth masks of the bottle test set (normal images get an empty mask), or None when absent."""
    test_dir = root / "bottle" / "test"
    if not test_dir.is_dir():
        return None
    masks = []
    for defect_dir in sorted(path for path in test_dir.iterdir() if path.is_dir()):
        for image_path in sorted(defect_dir.glob("*.png")):
            mask_path = root / "bottle" / "ground_truth" / defect_dir.name / f"{image_path.stem}_mask.png"
            with Image.open(image_path) as image:
                shape = image.size[::-1]
            masks.append(np.asarray(Image.open(mask_path)) > 127 if mask_path.exists() else np.zeros(shape, bool))
    return np.stack(masks)


def best_time(function, repeats):
    """Best wall time of ``repeats`` calls, and the last result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_memory(function):
    """Peak bytes allocated (tracemalloc) during one call."""
    tracemalloc.start()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def benchmark(name, masks, maps, repeats, run_rd4ad_loop):
    cases = [
        ("au_pro", lambda: metrics.au_pro(masks, maps), lambda: references.mvtec_au_pro(masks, maps)),
        ("rd4ad_pro", lambda: rd4ad_pro(masks, maps),
         (lambda: references.rd4ad_pro_loop(masks, maps)[0]) if run_rd4ad_loop else None),
        ("pixel_auroc", lambda: metrics.pixel_auroc(masks, maps), None),
    ]
    rows = []
    for function_name, ours, reference in cases:
        ours_seconds, ours_value = best_time(ours, repeats)
        if reference is not None:
            reference_seconds, reference_value = best_time(reference, 1 if function_name == "rd4ad_pro" else repeats)
            speed_up = f"{reference_seconds / ours_seconds:.1f}x"
            difference = f"{abs(ours_value - reference_value):.1e}"
            reference_text = f"{reference_seconds:.3f}"
        else:
            reference_text, speed_up, difference = "-", "-", "-"
        peak = peak_memory(ours) / 2**20
        rows.append((name, function_name, reference_text, f"{ours_seconds:.3f}", speed_up, difference,
                     f"{peak:.0f} MiB ({peak / (maps.nbytes / 2**20):.1f}x maps)", f"{ours_value:.6f}"))
    return rows


LocoChannel = namedtuple("LocoChannel", "mask saturation_threshold relative_saturation defect_name")


def synthetic_loco(count=100, height=300, width=400, seed=0):
    """A LOCO-like object: a third good images, a third logical, a third structural, 1-3 elliptic channels per
    anomalous image with relative (logical) or absolute (structural) saturation, maps as :func:`realistic_maps`."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    channels, types = [], []
    for index in range(count):
        kind = ("good", "logical_anomalies", "structural_anomalies")[index % 3]
        image_channels = []
        for _ in range(0 if kind == "good" else rng.integers(1, 4)):
            center, radii = rng.uniform(30, min(height, width) - 30, 2), rng.uniform(4, 30, 2)
            mask = ((rows - center[0]) / radii[0]) ** 2 + ((cols - center[1]) / radii[1]) ** 2 <= 1
            if kind == "logical_anomalies":
                image_channels.append(LocoChannel(mask, float(rng.choice([0.5, 1.0])), True, "logical"))
            else:
                image_channels.append(LocoChannel(mask, int(rng.integers(50, 500)), False, "structural"))
        channels.append(image_channels)
        types.append(kind)
    union = np.stack([np.any([c.mask for c in image], axis=0) if image else np.zeros((height, width), bool)
                      for image in channels])
    maps = realistic_maps(union, seed)
    # louder noise than the MVTec AD maps: a curve well below 1, so the refinement takes its full course
    noise = np.stack([ndimage.gaussian_filter(rng.normal(size=(height, width)), 6) * 6 for _ in range(count)])
    return (maps + noise).astype(np.float32), channels, types


def loco_figures(result):
    return [v for by_limit in result["au_spro"].values() for v in by_limit.values()] + [
        result["image_auroc"][k] for k in ("logical_anomalies", "structural_anomalies", "mean", "all")]


def benchmark_loco(repeats):
    maps, channels, types = synthetic_loco()
    plain = [[(c.mask, c.saturation_threshold, c.relative_saturation) for c in image] for image in channels]
    ours_seconds, ours = best_time(lambda: spro.loco_metrics(list(maps), channels, types), repeats)
    reference_seconds, reference = best_time(lambda: references.loco_reference(list(maps), plain, types), 1)
    difference = max(abs(a - b) for a, b in zip(loco_figures(ours), loco_figures(reference)))
    peak = peak_memory(lambda: spro.loco_metrics(list(maps), channels, types)) / 2**20
    return [("LOCO synthetic 100x300x400", "loco_metrics (AU-sPRO x15, image AUROC x4)", f"{reference_seconds:.3f}",
             f"{ours_seconds:.3f}", f"{reference_seconds / ours_seconds:.1f}x", f"{difference:.1e}",
             f"{peak:.0f} MiB ({peak / (maps.nbytes / 2**20):.1f}x maps)",
             f"{ours['au_spro']['mean'][0.05]:.6f} (mean@0.05)")]


@main_guard
def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="MVTec AD root holding bottle/ (e.g. a 256 px copy); without it "
                                                     "only the synthetic maps are timed")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per function; the best is reported")
    parser.add_argument("--skip-rd4ad-loop", action="store_true", help="do not time RD4AD's slow loop")
    parser.add_argument("--skip-loco", action="store_true", help="do not time the MVTec LOCO figures")
    parser.add_argument("--only-loco", action="store_true", help="time only the MVTec LOCO figures")
    args = parser.parse_args()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}, numpy {np.__version__}")
    inputs = [("synthetic 100x256x256", synthetic_masks())]
    bottle = bottle_masks(Path(args.data)) if args.data else None
    if bottle is None:
        print(f"note: no bottle test set{f' under {args.data}' if args.data else ' (--data)'}; skipped")
    else:
        inputs.append((f"bottle {len(bottle)}x{bottle.shape[1]}x{bottle.shape[2]}", bottle))

    header = ("input", "function", "reference s", "ours s", "speed-up", "max |diff|", "peak memory (ours)", "value")
    rows = []
    for index, (name, masks) in enumerate([] if args.only_loco else inputs):
        rows += benchmark(name, masks, realistic_maps(masks, seed=index), args.repeats, not args.skip_rd4ad_loop)
    if not args.skip_loco:
        rows += benchmark_loco(args.repeats)
    widths = [max(len(str(row[column])) for row in rows + [header]) for column in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    print("reference: au_pro = official MVTec algorithm (one argsort of all pixels); rd4ad_pro = RD4AD's "
          "per-threshold loop; pixel_auroc has no separate reference (it is sklearn's roc_auc_score); loco_metrics = "
          "MVTec's LOCO evaluator (one boolean map per threshold and image).")


if __name__ == "__main__":
    main()
