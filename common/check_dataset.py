"""Check an MVTec-layout dataset before training on it.

    python -m common.check_dataset PATH [--cls NAME|all]

Prints counts and image sizes per class and one line per problem (unreadable file, missing or extra mask,
mask/image size mismatch, empty folder, no defective or no good test images). Exits 1 when the data cannot be
used, 0 otherwise (warnings such as missing masks do not fail: pixel metrics are then reported as not available).
"""
import argparse
import os
import sys
from collections import Counter

from PIL import Image, UnidentifiedImageError

from .errors import UserError, main_guard
from .mvtec import GOOD, IMAGE_EXTENSIONS, class_dir, classes_for, find_mask, list_images


def _image_size(path, problems):
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            return image.size, image.mode
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        problems.append(("error", f"unreadable image {path}: {exc}"))
        return None, None


def check_class(data_dir, cls):
    """Return ``(summary dict, problems list of (level, message))`` for one class folder."""
    root = class_dir(data_dir, cls)
    problems, sizes, modes = [], Counter(), Counter()
    counts = {"train": 0, "test_good": 0, "test_defect": 0, "masks": 0}

    train_root = os.path.join(root, "train")
    train_folder = os.path.join(train_root, GOOD) if os.path.isdir(os.path.join(train_root, GOOD)) else train_root
    if not os.path.isdir(train_root):
        problems.append(("error", f"missing training folder {train_root}"))
    else:
        for path in list_images(train_folder):
            size, mode = _image_size(path, problems)
            if size:
                counts["train"] += 1
                sizes[size] += 1
                modes[mode] += 1
        if counts["train"] == 0:
            problems.append(("error", f"no readable training images in {train_folder}"))

    test_root = os.path.join(root, "test")
    mask_root = os.path.join(root, "ground_truth")
    has_mask_dir = os.path.isdir(mask_root)
    if not os.path.isdir(test_root):
        problems.append(("warning", f"no test folder {test_root}: evaluation is not possible"))
        defects = []
    else:
        defects = sorted(d for d in os.listdir(test_root) if os.path.isdir(os.path.join(test_root, d)))
    used_masks = set()
    for defect in defects:
        for path in list_images(os.path.join(test_root, defect)):
            size, mode = _image_size(path, problems)
            if not size:
                continue
            sizes[size] += 1
            modes[mode] += 1
            if defect == GOOD:
                counts["test_good"] += 1
                continue
            counts["test_defect"] += 1
            if not has_mask_dir:
                continue
            mask_path = find_mask(mask_root, defect, path)
            if mask_path is None:
                problems.append(("error", f"missing mask for {path}"))
                continue
            used_masks.add(os.path.abspath(mask_path))
            mask_size, _ = _image_size(mask_path, problems)
            if mask_size and mask_size != size:
                problems.append(("error", f"mask/image size mismatch: {mask_path} is {mask_size[0]}x{mask_size[1]},"
                                          f" image is {size[0]}x{size[1]}"))
            elif mask_size:
                counts["masks"] += 1
    if has_mask_dir:
        for folder, _, files in os.walk(mask_root):
            for name in sorted(files):
                path = os.path.abspath(os.path.join(folder, name))
                if name.lower().endswith(IMAGE_EXTENSIONS) and path not in used_masks:
                    problems.append(("warning", f"extra mask without a test image: {path}"))
    elif counts["test_defect"]:
        problems.append(("warning", f"no ground_truth folder in {root}: pixel metrics will be reported as not "
                                    "available"))
    if defects and counts["test_defect"] == 0:
        problems.append(("warning", "no defective test images: image AUROC is not defined"))
    if defects and counts["test_good"] == 0:
        problems.append(("warning", "no good test images: image AUROC is not defined"))
    summary = {"class": cls, **counts,
               "sizes": ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common()),
               "modes": ", ".join(f"{m} ({n})" for m, n in modes.most_common())}
    return summary, problems


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description="Check an MVTec-layout dataset.")
    parser.add_argument("data_dir", help="folder with one sub-folder per class")
    parser.add_argument("--cls", default="all", help="class name, comma list, all, textures or objects")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        raise UserError(f"data folder not found: {args.data_dir}")
    n_errors = 0
    for cls in classes_for(args.cls, args.data_dir):
        summary, problems = check_class(args.data_dir, cls)
        print(f"{cls}: train {summary['train']}, test good {summary['test_good']}, test defective "
              f"{summary['test_defect']}, masks {summary['masks']}; sizes {summary['sizes'] or '-'}; "
              f"modes {summary['modes'] or '-'}")
        for level, message in problems:
            print(f"  {level}: {message}")
            n_errors += level == "error"
    if n_errors:
        print(f"{n_errors} error(s): the data cannot be used as it is", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
