"""Seeded synthetic data in MVTec AD layout, for tests, the quick start and TIPC lite data.

Texture-like classes (any name in ``categories.TEXTURES`` or containing "texture") get a periodic pattern; other
classes get an object (a ringed disc) on a plain background. Defective test images carry one of three defects
with an exact mask: ``scratch`` (a thick line), ``blob`` (a dark ellipse) and ``patch`` (a square cut from
elsewhere in the image, rotated and tinted). Everything is determined by ``seed`` and the class name.

    python -m common.synthetic --out data/synthetic --classes bottle,carpet --size 64
    python -m common.synthetic --layout mvtec_loco --out data/loco     (also visa, kolektor, kolektor2, btech)
"""
import argparse
import os
import zlib

import cv2
import numpy as np
from PIL import Image

from common.core.errors import UserError, main_guard

from .readers.mvtec import TEXTURES

DEFECT_TYPES = ("blob", "patch", "scratch")


def _is_texture(cls):
    return cls in TEXTURES or "texture" in cls


def _class_rng(cls, seed):
    return np.random.default_rng([seed, zlib.crc32(cls.encode())])


class _ClassStyle:
    """Colours and pattern parameters shared by every image of one class."""

    def __init__(self, cls, seed):
        rng = _class_rng(cls, seed)
        self.texture = _is_texture(cls)
        self.colors = rng.uniform(40, 215, size=(3, 3))
        self.angles = rng.uniform(0, np.pi, size=3)
        self.frequencies = rng.uniform(3, 9, size=3)

    def good_image(self, size, rng):
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
        if self.texture:
            pattern = np.zeros((size, size))
            for angle, freq in zip(self.angles, self.frequencies):
                phase = rng.uniform(0, 2 * np.pi)
                pattern += np.sin(2 * np.pi * freq * (np.cos(angle) * xx + np.sin(angle) * yy) + phase)
            weight = (pattern - pattern.min()) / (np.ptp(pattern) + 1e-9)
            image = self.colors[0] * weight[..., None] + self.colors[1] * (1 - weight[..., None])
        else:
            image = np.ones((size, size, 3)) * self.colors[0]
            center = (size / 2 + rng.uniform(-1, 1) * size / 32, size / 2 + rng.uniform(-1, 1) * size / 32)
            radius = np.hypot(xx * size - center[0], yy * size - center[1])
            image[radius < 0.36 * size] = self.colors[1]
            image[(radius > 0.18 * size) & (radius < 0.24 * size)] = self.colors[2]
        image = image + rng.normal(0, 3, size=image.shape)
        return np.clip(image, 0, 255).astype(np.uint8)


def _defect(image, defect, rng):
    """Return ``(defective image, mask uint8 {0, 255})`` with one defect of the given type."""
    size = image.shape[0]
    out = image.copy()
    mask = np.zeros((size, size), np.uint8)
    lo, hi = int(0.2 * size), int(0.8 * size)
    if defect == "scratch":
        p1 = tuple(int(v) for v in rng.integers(lo, hi, 2))
        p2 = tuple(int(v) for v in rng.integers(lo, hi, 2))
        while np.hypot(p1[0] - p2[0], p1[1] - p2[1]) < size / 5:
            p2 = tuple(int(v) for v in rng.integers(lo, hi, 2))
        thickness = max(1, size // 32)
        cv2.line(mask, p1, p2, 255, thickness)
        color = 255 - np.asarray(image[p1[1], p1[0]], dtype=np.int32)
        out[mask > 0] = np.clip(color, 0, 255)
    elif defect == "blob":
        center = tuple(int(v) for v in rng.integers(lo, hi, 2))
        axes = tuple(int(v) for v in rng.integers(max(2, size // 20), max(3, size // 8), 2))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
        out[mask > 0] = (out[mask > 0] * 0.3).astype(np.uint8)
    elif defect == "patch":
        side = max(3, size // 6)
        y, x = (int(v) for v in rng.integers(lo, hi - side, 2))
        sy, sx = (int(v) for v in rng.integers(0, size - side, 2))
        patch = np.rot90(image[sy:sy + side, sx:sx + side], k=int(rng.integers(1, 4)))
        tint = rng.uniform(-60, 60, size=3)
        out[y:y + side, x:x + side] = np.clip(patch.astype(np.float64) + tint, 0, 255).astype(np.uint8)
        mask[y:y + side, x:x + side] = 255
    else:
        raise UserError(f"unknown defect type '{defect}'; choose from {', '.join(DEFECT_TYPES)}")
    return out, mask


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def make_class(root, cls, size=64, n_train=16, n_test_good=4, n_test_defect=3, defect_types=DEFECT_TYPES,
               seed=0):
    """Write one class in MVTec layout under ``root/cls``; returns the class folder."""
    if size < 16:
        raise UserError(f"synthetic images must be at least 16 px, got {size}")
    style = _ClassStyle(cls, seed)
    rng = _class_rng(cls, seed + 1)
    folder = os.path.join(root, cls)
    for i in range(n_train):
        _save(os.path.join(folder, "train", "good", f"{i:03d}.png"), style.good_image(size, rng))
    for i in range(n_test_good):
        _save(os.path.join(folder, "test", "good", f"{i:03d}.png"), style.good_image(size, rng))
    for defect in defect_types:
        for i in range(n_test_defect):
            image, mask = _defect(style.good_image(size, rng), defect, rng)
            _save(os.path.join(folder, "test", defect, f"{i:03d}.png"), image)
            _save(os.path.join(folder, "ground_truth", defect, f"{i:03d}_mask.png"), mask)
    return folder


def make_dataset(root, classes=("bottle", "carpet"), **kwargs):
    """Write several classes (see :func:`make_class`); returns ``root``."""
    for cls in classes:
        make_class(root, cls, **kwargs)
    return root


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", default="mvtec",
                        choices=("mvtec", "mvtec_loco", "visa", "kolektor", "kolektor2", "btech"),
                        help="dataset layout to write, exactly as its owners publish it")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--classes", default=None, help="comma-separated class names (default: bottle,carpet for "
                                                        "mvtec, the published names of the other layouts)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n_train", type=int, default=16)
    parser.add_argument("--n_test_good", type=int, default=4)
    parser.add_argument("--n_test_defect", type=int, default=3, help="per defect type")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classes = [c.strip() for c in (args.classes or "").split(",") if c.strip()]
    if args.layout != "mvtec":
        from .synthetic_layouts import write_layout

        write_layout(args.layout, args.out, classes, size=args.size, seed=args.seed)
        print(f"wrote synthetic {args.layout} data at {args.size}px to {args.out}")
        return
    classes = classes or ["bottle", "carpet"]
    make_dataset(args.out, classes, size=args.size, n_train=args.n_train, n_test_good=args.n_test_good,
                 n_test_defect=args.n_test_defect, seed=args.seed)
    print(f"wrote {len(classes)} synthetic classes ({', '.join(classes)}) at {args.size}px to {args.out}")


if __name__ == "__main__":
    main()
