"""Seeded synthetic data in the published layouts of MVTec LOCO AD, VisA, KolektorSDD, KolektorSDD2 and BTech.

Each writer puts tiny images (built from :mod:`common.data.synthetic`'s generators) exactly where and as the owners
publish them: file names, extensions, mask encodings and split files. The readers are written from the published
formats, not from these files; the writers let tests and quick starts run every reader end to end.

    python -m common.data.synthetic_layouts --layout visa --out data/visa_synthetic --size 64
"""
import argparse
import csv
import json
import os
import pickle
import shutil

import numpy as np
from PIL import Image

from common.core.errors import UserError, main_guard
from common.data.synthetic import _class_rng, _ClassStyle, _defect

LAYOUTS = ("mvtec_loco", "visa", "kolektor", "kolektor2", "btech")

# MVTec LOCO: (defect name, channel pixel value, saturation threshold, relative) and the generator drawing it.
# Relative thresholds are JSON floats, absolute ones JSON ints, as the evaluator asserts.
LOCO_DEFECTS = {
    "logical_anomalies": (("missing_part", 255, 1.0, True, "blob"), ("extra_part", 254, 30, False, "patch")),
    "structural_anomalies": (("scratch", 253, 0.5, True, "scratch"), ("contamination", 252, 20, False, "blob")),
}


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _defective(style, rng, size, defects):
    """A good image of ``style`` with each defect of ``defects`` drawn in turn; returns (image, [bool masks])."""
    image = style.good_image(size, rng)
    masks = []
    for defect in defects:
        image, mask = _defect(image, defect, rng)
        masks.append(mask > 0)
    return image, masks


def _check_size(size):
    if size < 32:
        raise UserError(f"synthetic images must be at least 32 px, got {size}")


# -- MVTec LOCO AD ------------------------------------------------------------------------------------------------
def write_mvtec_loco(root, classes=("breakfast_box", "pushpins"), size=64, seed=0, n_train=6, n_validation=2,
                     n_test_good=2, n_test_defect=2):
    """Write MVTec LOCO objects under ``root``; returns ``root``.

    Images are ``size`` wide and 3/4 as high (LOCO images are not square). Each logical anomaly has two channel
    PNGs (values 255 and 254), each structural one one or two (253, then 252); ``defects_config.json`` mixes
    relative (float) and absolute (int) saturation thresholds.
    """
    _check_size(size)
    top, height = size // 8, size - size // 4  # defects are drawn in the middle 60 %, so cropping keeps them whole
    config = [{"defect_name": name, "pixel_value": value, "saturation_threshold": threshold,
               "relative_saturation": relative}
              for entries in LOCO_DEFECTS.values() for name, value, threshold, relative, _ in entries]
    for cls in classes:
        style, rng = _ClassStyle(cls, seed), _class_rng(cls, seed + 1)
        folder = os.path.join(root, cls)
        for split, count in (("train", n_train), ("validation", n_validation), ("test", n_test_good)):
            for i in range(count):
                image = style.good_image(size, rng)[top:top + height]
                _save(os.path.join(folder, split, "good", f"{i:03d}.png"), image)
        for subset, entries in LOCO_DEFECTS.items():
            for i in range(n_test_defect):
                # logical images get both defects, structural ones one then two
                used = entries if subset == "logical_anomalies" or i % 2 else entries[:1]
                image, masks = _defective(style, rng, size, [entry[4] for entry in used])
                _save(os.path.join(folder, "test", subset, f"{i:03d}.png"), image[top:top + height])
                for channel, (entry, mask) in enumerate(zip(used, masks)):
                    values = (mask[top:top + height] * entry[1]).astype(np.uint8)
                    _save(os.path.join(folder, "ground_truth", subset, f"{i:03d}", f"{channel:03d}.png"), values)
        with open(os.path.join(folder, "defects_config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=4)  # 1.0 stays a JSON float, 30 a JSON int
    return root


# -- VisA -----------------------------------------------------------------------------------------------------------
def write_visa(root, classes=("candle", "pcb1"), size=64, seed=0, n_train=6, n_test_good=2, n_test_defect=2):
    """Write VisA objects in the raw release layout and ``split_csv/1cls.csv`` under ``root``; returns ``root``.

    Masks hold defect class ids (1, and 2 for a second defect), not 255, as the raw masks do. Rows of the CSV are
    in no particular order (the official file is not sorted) and end in CRLF, like the official file.
    """
    _check_size(size)
    rows = []
    for cls in classes:
        style, rng = _ClassStyle(cls, seed), _class_rng(cls, seed + 1)
        base = os.path.join(root, cls, "Data")
        normal = []
        for i in range(n_train + n_test_good):
            relative = f"{cls}/Data/Images/Normal/{i:04d}.JPG"
            _save(os.path.join(root, *relative.split("/")), style.good_image(size, rng))
            normal.append(relative)
        order = rng.permutation(len(normal))
        rows += [[cls, "train", "normal", normal[j], ""] for j in order if j < n_train]
        rows += [[cls, "test", "normal", normal[j], ""] for j in order if j >= n_train]
        for i in range(n_test_defect):
            defects = ("blob", "patch") if i % 2 else ("blob",)
            image, masks = _defective(style, rng, size, defects)
            ids = np.zeros((size, size), np.uint8)
            for class_id, mask in enumerate(masks, start=1):
                ids[mask] = class_id
            _save(os.path.join(base, "Images", "Anomaly", f"{i:03d}.JPG"), image)
            _save(os.path.join(base, "Masks", "Anomaly", f"{i:03d}.png"), ids)
            rows.append([cls, "test", "anomaly", f"{cls}/Data/Images/Anomaly/{i:03d}.JPG",
                         f"{cls}/Data/Masks/Anomaly/{i:03d}.png"])
    os.makedirs(os.path.join(root, "split_csv"), exist_ok=True)
    with open(os.path.join(root, "split_csv", "1cls.csv"), "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


# -- KolektorSDD and KolektorSDD2 -----------------------------------------------------------------------------------
def _strip(style, rng, height, width, defect):
    """A ``height`` x ``width`` image (RGB) and bool mask: a square drawn at ``height`` px, squeezed to ``width``."""
    image, masks = _defective(style, rng, height, [defect] if defect else [])
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    if not masks:
        return image, np.zeros((height, width), bool)
    mask = np.asarray(Image.fromarray(masks[0]).resize((width, height), Image.NEAREST))
    if not mask.any():
        raise RuntimeError("a synthetic defect vanished when squeezed")  # cannot happen with 'patch'
    return image, mask


def write_kolektor(root, size=64, seed=0, n_folders=6, n_parts=8, n_folds=3):
    """Write KolektorSDD under ``root`` and its fold file at ``ROOT-training-splits/split.pyb``; returns ``root``.

    ``n_folders`` kos folders (kos01, ...) of ``n_parts`` parts (the last folder one fewer, as kos21 in the real
    set); ``PartN.jpg`` grayscale JPEG ``size // 2`` wide and ``size``, ``size + 8`` or ``size + 16`` high,
    ``PartN_label.bmp`` 0/255. Part ``(k % n_parts)`` of the k-th folder is defective. Folders go to folds in turn
    (kos01 to fold 0, kos02 to fold 1, ...): ``test_split[f]`` is fold f, ``train_split[f]`` the others.
    """
    _check_size(size)
    style, rng = _ClassStyle("kolektor", seed), _class_rng("kolektor", seed + 1)
    folders = [f"kos{k + 1:02d}" for k in range(n_folders)]
    for k, folder in enumerate(folders):
        parts = n_parts - 1 if k == n_folders - 1 else n_parts
        for part in range(parts):
            height = size + 8 * ((k + part) % 3)
            image, mask = _strip(style, rng, height, size // 2, "patch" if part == k % n_parts else None)
            _save(os.path.join(root, folder, f"Part{part}.jpg"), np.asarray(Image.fromarray(image).convert("L")))
            _save(os.path.join(root, folder, f"Part{part}_label.bmp"), (mask * 255).astype(np.uint8))
    test_split = [folders[f::n_folds] for f in range(n_folds)]
    train_split = [[name for name in folders if name not in test] for test in test_split]
    splits = os.path.normpath(root) + "-training-splits"
    os.makedirs(splits, exist_ok=True)
    with open(os.path.join(splits, "split.pyb"), "wb") as handle:
        pickle.dump([train_split, test_split, folders], handle, protocol=2)
    return root


def write_kolektor2(root, size=64, seed=0, n_train=6, n_test=4, n_defect_train=2, n_defect_test=2):
    """Write KolektorSDD2 under ``root`` (``train/`` and ``test/`` with ``ID.png`` + ``ID_GT.png``); returns ``root``.

    RGB images ``size // 2`` wide and ``size`` high, masks 0/255; the first ``n_defect_*`` images of each split are
    defective. The train folder also holds the official duplicate pair ``ID (copy).png`` / ``ID_GT (copy).png``.
    """
    _check_size(size)
    style, rng = _ClassStyle("kolektor2", seed), _class_rng("kolektor2", seed + 1)
    for split, count, defective, first in (("train", n_train, n_defect_train, 10000),
                                           ("test", n_test, n_defect_test, 20000)):
        for i in range(count):
            image, mask = _strip(style, rng, size, size // 2, "patch" if i < defective else None)
            _save(os.path.join(root, split, f"{first + i}.png"), image)
            _save(os.path.join(root, split, f"{first + i}_GT.png"), (mask * 255).astype(np.uint8))
    folder, copied = os.path.join(root, "train"), 10000
    shutil.copyfile(os.path.join(folder, f"{copied}.png"), os.path.join(folder, f"{copied} (copy).png"))
    shutil.copyfile(os.path.join(folder, f"{copied}_GT.png"), os.path.join(folder, f"{copied}_GT (copy).png"))
    return root


# -- BTech ----------------------------------------------------------------------------------------------------------
# image and mask extensions per product: masks of 03 are BMP in the raw release; which products store their
# images as BMP is not documented, so 01 and 03 use BMP and 02 PNG here
BTECH_EXTENSIONS = {"01": (".bmp", ".png"), "02": (".png", ".png"), "03": (".bmp", ".bmp")}


def write_btech(root, classes=("01", "02", "03"), size=64, seed=0, n_train=4, n_test_good=2, n_test_defect=2):
    """Write BTech products under ``root`` (train/ok, test/ok, test/ko, ground_truth/ko 0/255); returns ``root``."""
    _check_size(size)
    for cls in classes:
        style, rng = _ClassStyle(f"btech_{cls}", seed), _class_rng(f"btech_{cls}", seed + 1)
        image_ext, mask_ext = BTECH_EXTENSIONS.get(cls, (".png", ".png"))
        folder = os.path.join(root, cls)
        for split, count in (("train", n_train), ("test", n_test_good)):
            for i in range(count):
                _save(os.path.join(folder, split, "ok", f"{i:04d}{image_ext}"), style.good_image(size, rng))
        for i in range(n_test_defect):
            image, masks = _defective(style, rng, size, ["blob" if i % 2 else "scratch"])
            _save(os.path.join(folder, "test", "ko", f"{i:04d}{image_ext}"), image)
            _save(os.path.join(folder, "ground_truth", "ko", f"{i:04d}{mask_ext}"), (masks[0] * 255).astype(np.uint8))
    return root


WRITERS = {"mvtec_loco": write_mvtec_loco, "visa": write_visa, "kolektor": write_kolektor,
           "kolektor2": write_kolektor2, "btech": write_btech}
SINGLE_CLASS = ("kolektor", "kolektor2")


def write_layout(layout, root, classes=None, size=64, seed=0):
    """Write ``layout`` (one of :data:`LAYOUTS`) under ``root`` with each writer's default counts."""
    if layout not in WRITERS:
        raise UserError(f"unknown layout '{layout}'; choose from {', '.join(LAYOUTS)}")
    kwargs = {"size": size, "seed": seed}
    if classes:
        if layout in SINGLE_CLASS:
            raise UserError(f"the {layout} layout has one class; --classes does not apply")
        kwargs["classes"] = tuple(classes)
    return WRITERS[layout](root, **kwargs)


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", required=True, choices=LAYOUTS)
    parser.add_argument("--out", required=True, help="output folder (KolektorSDD also writes OUT-training-splits/)")
    parser.add_argument("--classes", default="", help="comma-separated class names (default: the writer's)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    write_layout(args.layout, args.out, classes, size=args.size, seed=args.seed)
    print(f"wrote synthetic {args.layout} data at {args.size}px to {args.out}")


if __name__ == "__main__":
    main()
