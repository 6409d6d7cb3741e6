"""Check a dataset before training on it.

    python -m common.check_dataset PATH [--dataset NAME] [--cls NAME|all] [--fold N]

MVTec AD (and your own classes in its layout) get a file-by-file check (:func:`check_class`); every other format is
read through its reader, which refuses a malformed layout in one line, and then every image and mask header is read
(:func:`check_format_class`); for MVTec LOCO also ``defects_config.json`` and every ground-truth channel.

Prints counts and image sizes per class and one line per problem (unreadable file, missing or extra mask,
mask/image size mismatch, empty folder, no defective or no good test images). Exits 1 when the data cannot be
used, 0 otherwise (warnings such as missing masks do not fail: pixel metrics are then reported as not available).
"""
import argparse
import os
import sys
from collections import Counter

from PIL import Image, UnidentifiedImageError

from common.core.errors import UserError, main_guard

from .images import IMAGE_EXTENSIONS, list_images
from .readers import classes_for
from .readers.mvtec import class_dir, find_mask
from .samples import GOOD


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


def check_format_class(dataset, data_dir, cls, fold=None):
    """``(summary, problems)`` of one class of any format: its reader's lists, every image header, every mask
    against its image's size; for MVTec LOCO the defect configuration and every channel."""
    from .dataset import verify_samples
    from .readers import dataset_format, test_samples, train_samples, validation_samples

    problems = []
    train = train_samples(dataset, data_dir, cls, fold)
    validation = validation_samples(dataset, data_dir, cls, fold)
    test = test_samples(dataset, data_dir, cls, fold)
    for what, samples in (("training", train), ("validation", validation), ("test", test)):
        try:
            verify_samples(samples)
        except UserError as exc:
            problems.append(("error", f"{what} images: {exc}"))
    if dataset == "mvtec_loco":
        from .readers import mvtec_loco

        try:
            defects = mvtec_loco.read_defects_config(os.path.join(data_dir, cls))
            for sample in test:
                mvtec_loco.defect_channels(sample, defects)
        except UserError as exc:
            problems.append(("error", str(exc)))
    defective = [s for s in test if s.label == 1]
    if dataset_format(dataset).kind == "industrial" and defective and not all(s.mask_paths for s in defective):
        problems.append(("warning", "some defective test images have no mask: pixel metrics are not defined"))
    if not defective:
        problems.append(("warning", "no defective test images: image AUROC is not defined"))
    summary = {"class": cls, "train": len(train), "validation": len(validation),
               "test_good": len(test) - len(defective), "test_defect": len(defective),
               "masks": sum(bool(s.mask_paths) for s in defective)}
    return summary, problems


@main_guard
def main(argv=None):
    from .readers import FORMATS, check_fold, dataset_format

    parser = argparse.ArgumentParser(allow_abbrev=False, description="Check a dataset before training on it.")
    parser.add_argument("data_dir", help="the dataset's root folder (as --data_dir of the commands)")
    parser.add_argument("--dataset", default="mvtec", choices=tuple(FORMATS), help="dataset format")
    parser.add_argument("--cls", default="all", help="class name, comma list, all (MVTec AD: textures, objects)")
    parser.add_argument("--fold", type=int, default=None, help="fold of a format with folds (kolektor)")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        raise UserError(f"data folder not found: {args.data_dir}")
    check_fold(args.dataset, args.fold)
    n_errors = 0
    for cls in classes_for(args.cls, args.data_dir, dataset_format(args.dataset)):
        if args.dataset not in ("mvtec", "folder"):
            summary, problems = check_format_class(args.dataset, args.data_dir, cls, args.fold)
            print(f"{cls}: train {summary['train']}, validation {summary['validation']}, test good "
                  f"{summary['test_good']}, test defective {summary['test_defect']}, masks {summary['masks']}")
            for level, message in problems:
                print(f"  {level}: {message}")
                n_errors += level == "error"
            continue
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
